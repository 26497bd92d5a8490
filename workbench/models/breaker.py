"""Stop a run whose model calls keep failing, instead of writing an empty dataset.

Single failures are quarantined and the run goes on; but when the first calls of a step all
fail (server down, wrong URL, bad key, unknown model) or most of them fail, nothing useful
can come out, so the step stops with the first error the backend gave.

Scores that fell back to a default (deita's 3.0 when a digit is outside a server's top-k, a
judge's empty score) are counted the same way: more than `max_fallback_rate` of a step's
scores stops it, since the column would then say more about the server than the data.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from workbench.errors import WorkbenchError


class ModelCallsFailing(WorkbenchError):
    """A step's model calls failed too often to go on (the failure breaker tripped)."""


class FailurePolicy(BaseModel):
    """`failures:` in a pipeline: when a step's model calls stop the run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    first_calls: int = Field(
        8, ge=0, description="stop when the first N calls of a step all fail (0: never)")
    max_rate: float = Field(
        0.5, gt=0, le=1, description="stop when more than this share of a step's calls fail...")
    min_calls: int = Field(20, ge=1, description="...once at least this many were made")
    max_fallback_rate: float = Field(
        0.05, ge=0, le=1, description="stop when more than this share of a step's scores fell "
        "back to a default (a candidate missing from the model's top-k); 1: never")


class TooManyFallbacks(WorkbenchError):
    """Too many of a step's scores fell back to a default value."""


class Breaker:
    """Counts one step's computed calls (cache hits are not calls) and trips by the policy."""

    def __init__(self, policy: FailurePolicy | None = None, where: str = "") -> None:
        self.policy = policy or FailurePolicy()
        self.where = where
        self.ok = 0
        self.failed = 0
        self.first_error: str | None = None
        self.scored = 0
        self.fallbacks: dict[str, int] = {}

    def record(self, ok: int, errors: list[str]) -> None:
        self.ok += ok
        self.failed += len(errors)
        if errors and self.first_error is None:
            self.first_error = errors[0]
        policy, total = self.policy, self.ok + self.failed
        if self.ok == 0 and 0 < policy.first_calls <= self.failed:
            self._trip(f"the first {self.failed} model calls all failed")
        if total >= policy.min_calls and self.failed > policy.max_rate * total:
            self._trip(f"{self.failed} of {total} model calls failed "
                       f"(more than {policy.max_rate:.0%})")

    def record_fallbacks(self, reason: str, fallen: int, scored: int) -> None:
        """`fallen` of `scored` scores took a default for `reason`; trips past the rate."""
        self.scored += scored
        if fallen:
            self.fallbacks[reason] = self.fallbacks.get(reason, 0) + fallen
        total = sum(self.fallbacks.values())
        rate = self.policy.max_fallback_rate
        if total > rate * self.scored and rate < 1:
            prefix = f"{self.where}: " if self.where else ""
            reasons = "; ".join(f"{r}: {n}" for r, n in self.fallbacks.items())
            raise TooManyFallbacks(
                f"{prefix}{total} of {self.scored} scores fell back to a default (more than "
                f"{rate:.0%}): {reasons}. Give the model a backend that reads every candidate "
                "(transformers, vllm), ask an openai server for more `top_logprobs`, or raise "
                "`failures: max_fallback_rate` in the pipeline to accept them")

    def _trip(self, what: str) -> None:
        prefix = f"{self.where}: " if self.where else ""
        raise ModelCallsFailing(
            f"{prefix}{what}; first error: {self.first_error} (finished calls are cached and "
            "failed rows quarantined: fix the cause and run again; tune `failures:` in the "
            "pipeline to change when a run stops)")
