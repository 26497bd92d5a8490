"""`RDPOTrainer`: TRL's DPOTrainer plus RDPO's rationale term, trained on `workbench export
--trl rdpo` (prompt, chosen, rejected, rationale, rationale_prompt; docs/methods.md §5.3).

loss = TRL's sigmoid DPO loss on the pair + mean of -log σ(γ · log π(r | x_rat)), where x_rat
is `rationale_prompt` rendered as one user turn with the model's chat template and r is the
`rationale` as the assistant's reply (role markers are the trainer's to add, §5.2). For a
standard-layout (string) prompt, x_rat and r are plain text with EOS after r. Everything else
(reference model, PEFT, precomputed reference log-probs, metrics) is TRL's; only the `sigmoid`
loss type is RDPO.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset
from trl import DPOTrainer
from trl.data_utils import _tokenize, common_prefix_length, is_conversational
from trl.trainer.utils import pad

from workbench.trainers.losses import rationale_loss, sequence_logps

RATIONALE_KEYS = ("rationale_input_ids", "rationale_attention_mask", "rationale_completion_mask")


@dataclass
class RationaleCollator:
    """TRL's preference batch plus the rationale sequences x_rat + r (r marked for the loss)."""

    base: Any
    pad_token_id: int
    max_length: int | None = None

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.base(examples)
        ids = [e["rationale_prompt_ids"] + e["rationale_ids"] for e in examples]
        marks = [[0] * len(e["rationale_prompt_ids"]) + [1] * len(e["rationale_ids"])
                 for e in examples]
        if self.max_length is not None:
            ids, marks = [x[: self.max_length] for x in ids], [m[: self.max_length] for m in marks]
        batch["rationale_input_ids"] = pad([torch.tensor(x) for x in ids], self.pad_token_id)
        batch["rationale_attention_mask"] = pad([torch.ones(len(x), dtype=torch.long) for x in ids])
        batch["rationale_completion_mask"] = pad([torch.tensor(m, dtype=torch.long) for m in marks])
        return batch


class RDPOTrainer(DPOTrainer):
    """DPOTrainer with RDPO's rationale term (γ = `rationale_gamma`, reference 0.1; set
    `beta=0.1` in the DPOConfig for the reference's β)."""

    def __init__(self, *args: Any, rationale_gamma: float = 0.1, **kwargs: Any) -> None:
        self.rationale_gamma = rationale_gamma
        super().__init__(*args, **kwargs)
        if list(self.loss_types) != ["sigmoid"]:
            raise ValueError(f"RDPO adds its rationale term to the sigmoid DPO loss; "
                             f"loss_type is {self.loss_types}")
        self.data_collator = RationaleCollator(self.data_collator, self._tokenizer.pad_token_id,
                                               self.args.max_length)

    def _prepare_dataset(self, dataset: Dataset, processing_class: Any, args: Any,
                         dataset_name: str) -> Dataset:
        """TRL's tokenization, then x_rat and r tokenized the same way as prompt and reply."""
        missing = {"rationale", "rationale_prompt"} - set(dataset.column_names or [])
        if missing:
            raise ValueError(f"RDPOTrainer needs the columns of `workbench export --trl rdpo`; "
                             f"{dataset_name} lacks {sorted(missing)}")
        dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        if "rationale_ids" in dataset.column_names:
            return dataset
        eos = self._tokenizer.eos_token

        def tokenize(example: dict[str, Any]) -> dict[str, list[int]]:
            if is_conversational(example):
                context = [{"role": "user", "content": example["rationale_prompt"]}]
                head = _tokenize(processing_class, context, add_generation_prompt=True)
                full = _tokenize(processing_class, context + [
                    {"role": "assistant", "content": example["rationale"]}])
            else:
                head = _tokenize(processing_class, example["rationale_prompt"])
                full = _tokenize(processing_class,
                                 example["rationale_prompt"] + example["rationale"] + eos)
            head_ids, full_ids = head["input_ids"], full["input_ids"]
            n = common_prefix_length(head_ids, full_ids)
            return {"rationale_prompt_ids": full_ids[:n], "rationale_ids": full_ids[n:]}

        return dataset.map(tokenize, desc=f"Tokenizing {dataset_name} rationales")

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        self._signature_columns = [*self._signature_columns, "rationale_prompt_ids",
                                   "rationale_ids"]

    def compute_ref_log_probs(self, model: Any, inputs: dict[str, Any]) -> Any:
        return super().compute_ref_log_probs(model, _without_rationale(inputs))

    def _compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
        result = super()._compute_loss(model, _without_rationale(inputs), return_outputs)
        logps = sequence_logps(model, inputs["rationale_input_ids"],
                               inputs["rationale_attention_mask"],
                               inputs["rationale_completion_mask"])
        term = rationale_loss(logps, self.rationale_gamma).mean()
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["logps/rationale"].append(
            self.accelerator.gather(logps.detach()).mean().item())
        self._metrics[mode]["rationale_loss"].append(self.accelerator.gather(term.detach()).item())
        if return_outputs:
            loss, outputs = result
            return loss + term, outputs
        return result + term


def _without_rationale(inputs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in inputs.items() if k not in RATIONALE_KEYS}
