"""Backend `reward`: a sequence-classification reward model (ArmoRM, FsfairX, any local path).

A conversation (ending with the assistant's reply) is rendered with the reward model's own
chat template and scored in one forward pass; the score is `output.score` where a model
defines one (ArmoRM), else the first logit. The rendered text is tokenized without added
special tokens and a BOS is prepended only when the tokenizer adds one and the text lacks it,
which is what Magpie's "remove the BOS string, let the pipeline re-add it" intends without
deleting ChatML's `<|im_start|>` markers (SmolLM2's BOS) from every turn.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar

from workbench.models.backends import BACKENDS
from workbench.models.base import CallFailed, CapabilityError, Message
from workbench.models.fingerprint import tokenizer_digest
from workbench.models.transformers_backend import (
    PromptEncoder,
    _chunks,
    _pick_device,
    _pick_dtype,
    describe_weights,
)


class RewardBackend:
    backend: ClassVar[str] = "reward"
    capabilities: ClassVar[frozenset[str]] = BACKENDS["reward"].capabilities  # the table's

    def __init__(self, model: str, device: str = "auto", dtype: str = "float32",
                 batch_size: int = 4, max_length: int = 4096,
                 trust_remote_code: bool = False) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.model_name = model
        self.device = _pick_device(device)
        self.dtype = _pick_dtype(dtype, self.device)
        self.batch_size = batch_size
        self.max_length = max_length
        t0 = time.perf_counter()
        self.tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            model, dtype=self.dtype, trust_remote_code=trust_remote_code)
        self.model.to(self.device).eval()
        if self.model.config.pad_token_id is None:  # batching needs to find the last token
            pad = self.tokenizer.pad_token_id
            self.model.config.pad_token_id = pad if pad is not None else self.tokenizer.eos_token_id
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.encoder = PromptEncoder(self.tokenizer)
        self.load_seconds = time.perf_counter() - t0
        self._fingerprint = {"backend": self.backend, "model": model,
                             "weights": describe_weights(model, self.model.config),
                             "tokenizer": tokenizer_digest(self.tokenizer),
                             "dtype": str(self.dtype).removeprefix("torch."),
                             "device": str(self.device).split(":")[0], "max_length": max_length}

    def fingerprint(self) -> dict[str, Any]:
        return dict(self._fingerprint)

    def render(self, conversation: Sequence[Message]) -> str:
        return self.tokenizer.apply_chat_template([dict(m) for m in conversation], tokenize=False,
                                                  add_generation_prompt=False)

    def reward(self, conversations: Sequence[Sequence[Message]]) -> list[float | CallFailed]:
        import torch

        ids = [self.encoder.encode(self.render(c))[: self.max_length] for c in conversations]
        out: list[float | CallFailed] = []
        for batch in _chunks(ids, self.batch_size):
            enc = self.tokenizer.pad({"input_ids": batch}, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                result = self.model(**enc)
            values = getattr(result, "score", None)
            values = result.logits[:, 0] if values is None else values.reshape(len(batch), -1)[:, 0]
            out.extend(float(v) for v in values.float().cpu())
        return out

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        raise CapabilityError("a reward model only scores conversations (capability 'reward')")
