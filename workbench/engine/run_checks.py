"""When a run must stop instead of publishing: every model call of a step failed, or no rows
are left for the output."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from workbench.engine.step_notes import StepNotes
from workbench.errors import PipelineError
from workbench.pipeline import Pipeline

if TYPE_CHECKING:
    from workbench.engine.run_steps import StepResult


class CallsAllFailed(PipelineError):
    """Every model call of a step failed (however few): the run stops, nothing is published,
    and the step's batches are discarded so that a re-run calls the model again."""

    def __init__(self, message: str, target: Path) -> None:
        super().__init__(message)
        self.target = target


def all_calls_failed(notes: StepNotes) -> str | None:
    """What went wrong when a step made model calls and not one succeeded (this run's and
    reused batches' together; a cache hit is a success), else None."""
    def total(key: str) -> int:
        return notes.model_calls.get(key, 0) + notes.reused_calls.get(key, 0)

    if not total("failures") or total("hits") or total("computed"):
        return None
    first = next(iter(notes.errors.values()), {}).get("first", "no error recorded")
    return (f"all {total('failures')} model calls failed; first error: {first} (nothing was "
            "published: fix the cause and run again)")


def empty_output(pipeline: Pipeline, results: list[StepResult]) -> str:
    """Why a run would publish an empty `output`, step by step, and how to go on."""
    spec = pipeline.spec
    drops = [f"step {r.index} ({r.step}) dropped "
             + ", ".join(f"{k}: {v}" for k, v in r.dropped.items())
             for r in results if r.dropped]
    why = "; ".join(drops) if drops else "no step dropped rows: the input has none"
    return (f"{pipeline.source}: no rows left for output {spec.output!r} ({why}); nothing was "
            "published. Fix the cause and run again (`--retry-failed` calls quarantined model "
            "calls again), or publish an empty dataset on purpose with `workbench run "
            "--allow-empty` or `allow_empty: true` in the pipeline")
