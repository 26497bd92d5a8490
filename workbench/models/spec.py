"""Declarative model entries of a pipeline's `models:` section."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

BackendName = Literal["transformers", "vllm", "openai"]

# What each backend can do, known without loading anything, so validation fails before a run.
BACKEND_CAPABILITIES: dict[str, frozenset[str]] = {
    "transformers": frozenset({"generate", "logprobs", "next_token_distribution", "hidden_states"}),
    "vllm": frozenset({"generate", "logprobs", "next_token_distribution"}),
    "openai": frozenset({"generate", "logprobs", "next_token_distribution"}),
}


class ModelSpec(BaseModel):
    """`{backend, model, options}`; `model: embedded` is the bundled SmolLM2-135M-Instruct."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: BackendName = "transformers"
    model: str = "embedded"
    options: dict[str, Any] = Field(default_factory=dict)
