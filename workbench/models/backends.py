"""Every backend by name, in one table: where its class lives, what it can do, and whether
using it loads a model into this process. Validation, loading, option checks and
`workbench transforms` all read this table; nothing heavy is imported here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backend:
    module: str
    cls: str
    capabilities: frozenset[str]
    loads_model: bool = True  # False: a client of a server (nothing to load here)


BACKENDS: dict[str, Backend] = {
    "transformers": Backend("workbench.models.transformers_backend", "TransformersBackend",
                            frozenset({"generate", "logprobs", "next_token_distribution",
                                       "hidden_states"})),
    "vllm": Backend("workbench.models.vllm_backend", "VLLMBackend",
                    frozenset({"generate", "logprobs", "next_token_distribution"})),
    "openai": Backend("workbench.models.openai_backend", "OpenAIBackend",
                      frozenset({"generate", "logprobs", "next_token_distribution"}),
                      loads_model=False),
    "reward": Backend("workbench.models.reward_backend", "RewardBackend",
                      frozenset({"reward"})),
}


def backend(name: str) -> Backend:
    """The entry for `name`; a ValueError listing the names when there is none."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
    return BACKENDS[name]


def backend_class(name: str) -> type:
    """The backend's class, its module imported now."""
    import importlib

    entry = backend(name)
    return getattr(importlib.import_module(entry.module), entry.cls)
