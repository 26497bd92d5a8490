"""The one interface every model backend implements.

Transforms never talk to transformers, vLLM or HTTP directly: they call these batched methods
(through the call cache), so a pipeline can switch backend in YAML without code changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

# A prompt is chat messages (rendered with the model's chat template) or raw text (sent as is,
# e.g. Magpie's pre-query templates).
Message = dict[str, str]
Prompt = str | Sequence[Message]

CAPABILITIES = ("generate", "logprobs", "next_token_distribution", "hidden_states")
# `reward` (a scalar per conversation) is offered by the reward-model backend only.


class CapabilityError(RuntimeError):
    """A backend was asked for something it cannot do (raised at pipeline validation)."""


@dataclass(frozen=True)
class SamplingParams:
    """Sampling options shared by all backends; temperature 0 means greedy decoding.

    The first-token options are Magpie's logits processors: `first_token_temperature` divides
    the first generated position's logits ("flaming tokens": 1.2), `first_token_ban` pushes the
    listed single-token strings to -9999.999 there (Llama-3.1 "de-markdown": #, ##, ###, ####).
    `json_schema` asks for schema-constrained output where the backend can (vLLM guided
    decoding, OpenAI-compatible `response_format`); others ignore it and callers parse.
    """

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int = 0
    first_token_temperature: float = 1.0
    first_token_ban: tuple[str, ...] = ()
    json_schema: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The options as the cache keys them; options left at their default are omitted, so
        adding an option never changes the keys of calls that do not use it."""
        out: dict[str, Any] = {
            "n": self.n,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
            "stop": list(self.stop),
            "seed": self.seed,
        }
        if self.first_token_temperature != 1.0:
            out["first_token_temperature"] = self.first_token_temperature
        if self.first_token_ban:
            out["first_token_ban"] = list(self.first_token_ban)
        if self.json_schema is not None:
            out["json_schema"] = self.json_schema
        return out

    @property
    def shapes_first_token(self) -> bool:
        return self.first_token_temperature != 1.0 or bool(self.first_token_ban)


@dataclass(frozen=True)
class Generation:
    """One sample. `reasoning` is a trace the server returned apart from the text (an
    OpenAI-compatible `reasoning_content`); a `<think>` block inside `text` is split off by
    the steps that keep answers (workbench.algorithms.reasoning)."""

    text: str
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    prompt_tokens: int
    completion_tokens: int
    reasoning: str | None = None


@dataclass(frozen=True)
class TokenLogprobs:
    """Log-probabilities of a continuation's tokens given its prompt."""

    total: float
    tokens: list[str] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class CallFailed:
    """Stands in for one item's result when that item failed after retries.

    Backends that call per item (HTTP) return it in place of a result so one bad row does not
    lose the batch; the call cache quarantines these rows.
    """

    error: str


@runtime_checkable
class Backend(Protocol):
    """A loaded model. Every method is batched: one result per input, in input order."""

    backend: ClassVar[str]
    capabilities: ClassVar[frozenset[str]]

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this model's outputs in the call cache (backend, model, revision)."""
        ...

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        seeds: Sequence[int] | None = None,
    ) -> list[list[Generation] | CallFailed]:
        """`params.n` samples per prompt; `seeds` (one per prompt) replaces `params.seed`, so
        identical prompts can be sampled independently within one batch."""
        ...

    def logprobs(
        self, prompts: Sequence[Prompt], continuations: Sequence[str]
    ) -> list[TokenLogprobs | CallFailed]: ...

    def next_token_distribution(
        self, prompts: Sequence[Prompt], candidates: Sequence[str]
    ) -> list[dict[str, float] | CallFailed]:
        """Log-probability of each candidate string as the next token after each prompt."""
        ...

    def hidden_states(
        self, prompts: Sequence[Prompt], continuations: Sequence[str], pool: str = "none",
        eos: bool = False,
    ) -> list[Any | CallFailed]:
        """Last-layer hidden states at the positions that predict the continuation's n tokens
        and at its last token: numpy float32 (n + 1) x dim, row 0 at the last prompt token,
        row k at continuation token k. Prompt and continuation are tokenized together once;
        the boundary comes from character offsets (a token straddling it belongs to the
        prompt). `eos=True` appends the tokenizer's EOS token to each continuation (counted in
        n). `pool="sum"` gives {"sum": float64 Σ of rows 0..n-1, "last": row n, "tokens": n}
        instead (what CHES needs, small enough to cache)."""
        ...


def require(backend: Backend, capability: str) -> None:
    if capability not in backend.capabilities:
        raise CapabilityError(
            f"backend {backend.backend!r} cannot do {capability!r} "
            f"(it offers: {', '.join(sorted(backend.capabilities))})"
        )
