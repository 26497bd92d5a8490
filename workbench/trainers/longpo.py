"""`LongPOTrainer`: TRL's DPOTrainer trained on `workbench export --trl longpo` records
(docs/methods.md §6.2, §6.3), one per long context.

What it computes, per record (`longpo_messages` builds the conversations):
- the policy reads one multi-turn long conversation per side (turn 1 = long document +
  question, later turns the question alone, that side's own answers as history); its
  log-probability sums every assistant turn;
- the reference reads one single-turn short conversation per turn (short chunk + question),
  its log-probabilities summed over the turns, computed once before training with the initial
  model (TRL's `precompute_ref_log_probs`, so no second model stays in memory);
- loss = NLL of the chosen long conversation's assistant tokens + λ · -log σ(β·Δ), with
  β = `beta` of the config (reference 0.01) and λ = `dpo_lambda` (reference 0.01), through TRL's
  `sft` and `sigmoid` losses (the NLL is the mean over the batch's chosen assistant tokens).

Simplified, compared with the reference's trainer: the assistant tokens are found by
rendering each conversation prefix with the chat template (a template that renders a prefix
differently is refused); sequences longer than `max_length` are cut at the end (the reference
truncates at 131,072 tokens) and a record with no answer token left is dropped; no padding is
counted in the NLL; full fine-tuning only (PEFT's reference switch is not wired).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset
from trl import DPOConfig, DPOTrainer
from trl.data_utils import _tokenize
from trl.trainer.utils import pad

from workbench.io.layouts_longpo import RECORD_FIELDS, longpo_messages
from workbench.trainers.losses import sequence_logps

SIDES = ("chosen", "rejected")
TOKENIZED = tuple(f"{p}{side}_{k}" for p in ("", "ref_") for side in SIDES
                  for k in ("input_ids", "completion_mask"))


def assistant_tokens(processing_class: Any, messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """A conversation's token ids and a 0/1 mask of its assistant replies, found by rendering
    each prefix; refused if a prefix does not render as a prefix of the whole."""
    ids = _tokenize(processing_class, messages)["input_ids"]
    mask = [0] * len(ids)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_tokenize(processing_class, messages[:i], add_generation_prompt=True)["input_ids"])
        upto = _tokenize(processing_class, messages[: i + 1])["input_ids"]
        if ids[: len(upto)] != upto or start > len(upto):
            raise ValueError("the chat template renders a conversation prefix differently from "
                             "the whole conversation; LongPOTrainer cannot find the replies")
        mask[start: len(upto)] = [1] * (len(upto) - start)
    return ids, mask


@dataclass
class LongPOCollator:
    """Policy batch: chosen long conversations, then rejected ones (TRL's input_ids,
    attention_mask, completion_mask). Before the reference log-probs exist, also every short
    conversation, flattened, with `short_owner` naming its row in the policy batch."""

    pad_token_id: int
    max_length: int | None = None

    def _padded(self, ids: list[list[int]], marks: list[list[int]], prefix: str) -> dict[str, Any]:
        if self.max_length is not None:
            ids, marks = [x[: self.max_length] for x in ids], [m[: self.max_length] for m in marks]
        return {f"{prefix}input_ids": pad([torch.tensor(x) for x in ids], self.pad_token_id),
                f"{prefix}attention_mask": pad([torch.ones(len(x), dtype=torch.long) for x in ids]),
                f"{prefix}completion_mask": pad([torch.tensor(m, dtype=torch.long) for m in marks])}

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        def column(key: str) -> list[Any]:
            return [e[f"chosen_{key}"] for e in examples] + [e[f"rejected_{key}"] for e in examples]

        batch = self._padded(column("input_ids"), column("completion_mask"), "")
        if "ref_chosen_logps" in examples[0]:
            for side in SIDES:
                batch[f"ref_{side}_logps"] = torch.tensor([e[f"ref_{side}_logps"] for e in examples])
            return batch
        ids, marks, owner = [], [], []
        for s, side in enumerate(SIDES):
            for j, e in enumerate(examples):
                ids += e[f"ref_{side}_input_ids"]
                marks += e[f"ref_{side}_completion_mask"]
                owner += [s * len(examples) + j] * len(e[f"ref_{side}_input_ids"])
        batch.update(self._padded(ids, marks, "short_"))
        batch["short_owner"] = torch.tensor(owner)
        return batch


class LongPOTrainer(DPOTrainer):
    """DPOTrainer on LongPO records: see the module docstring for the loss and what is
    simplified. `dpo_lambda` weighs the DPO term against the NLL (reference 0.01); set
    `beta=0.01` in the DPOConfig for the reference's β."""

    def __init__(self, model: Any, args: DPOConfig, *rest: Any, dpo_lambda: float = 0.01,
                 **kwargs: Any) -> None:
        if kwargs.get("peft_config") is not None:
            raise ValueError("LongPOTrainer supports full fine-tuning only")
        args.loss_type, args.loss_weights = ["sigmoid", "sft"], [dpo_lambda, 1.0]
        args.precompute_ref_log_probs = True  # the short-context reference, once, up front
        self.dpo_lambda = dpo_lambda
        super().__init__(model, *rest, args=args, **kwargs)
        self.data_collator = LongPOCollator(self._tokenizer.pad_token_id, args.max_length)

    def _precompute_ref_logps(self, dataset: Dataset, name: str, batch_size: int) -> Dataset:
        self.data_collator = LongPOCollator(self._tokenizer.pad_token_id, self.args.max_length)
        return super()._precompute_ref_logps(dataset, name, batch_size)

    def _prepare_dataset(self, dataset: Dataset, processing_class: Any, args: Any,
                         dataset_name: str) -> Dataset:
        """Records -> token ids and reply masks of both long conversations and every short one;
        a record whose first reply starts past `max_length` is dropped."""
        columns = set(dataset.column_names or [])
        if "chosen_input_ids" in columns:
            return dataset
        missing = set(RECORD_FIELDS) - columns
        if missing:
            raise ValueError(f"LongPOTrainer needs the records of `workbench export --trl longpo`; "
                             f"{dataset_name} lacks {sorted(missing)}")

        def tokenize(record: dict[str, Any]) -> dict[str, Any]:
            messages = longpo_messages(record)
            out: dict[str, Any] = {}
            for side in SIDES:
                out[f"{side}_input_ids"], out[f"{side}_completion_mask"] = assistant_tokens(
                    processing_class, messages[side])
                shorts = [assistant_tokens(processing_class, m) for m in messages[f"ref_{side}"]]
                out[f"ref_{side}_input_ids"] = [ids for ids, _ in shorts]
                out[f"ref_{side}_completion_mask"] = [mask for _, mask in shorts]
            return out

        dataset = dataset.map(tokenize, desc=f"Tokenizing {dataset_name} LongPO records")
        if args.max_length is not None:
            limit = args.max_length
            dataset = dataset.filter(lambda r: 1 in r["chosen_completion_mask"][:limit]
                                     and 1 in r["rejected_completion_mask"][:limit])
        return dataset

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            self._signature_columns = [*TOKENIZED, "ref_chosen_logps", "ref_rejected_logps"]

    def compute_ref_log_probs(self, model: Any, inputs: dict[str, Any]) -> Any:
        """Reference log-probs of each side: its short conversations' replies, summed."""
        with torch.no_grad(), self.accelerator.autocast():
            logps = sequence_logps(model, inputs["short_input_ids"],
                                   inputs["short_attention_mask"],
                                   inputs["short_completion_mask"])
        rows = inputs["input_ids"].size(0)
        summed = torch.zeros(rows, dtype=logps.dtype, device=logps.device)
        summed.index_add_(0, inputs["short_owner"].to(logps.device), logps)
        return summed.chunk(2, dim=0)
