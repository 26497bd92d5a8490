"""Magpie's first-token processors as a vLLM engine logits processor.

Importing this module imports vLLM; it fails (ImportError) where vLLM is missing or older
than the V1 engine's custom logits processors (0.10.1). The logic is
workbench.models.first_token.FirstTokenRows; this only puts it on vLLM's base class, which
is what `LLM(logits_processors=[...])` accepts.
"""

from __future__ import annotations

from vllm.v1.sample.logits_processor import LogitsProcessor

from workbench.models.first_token import FirstTokenRows


class FirstTokenProcessor(FirstTokenRows, LogitsProcessor):
    """FirstTokenRows as a vLLM V1 logits processor (loaded once per engine)."""
