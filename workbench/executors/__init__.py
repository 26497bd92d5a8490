"""Executors run a row-local step's batches; everything else about a run is theirs in common.

The runner decides what to run (keys, checkpoints, global steps, finalizing, publishing); an
executor only turns the unfinished batches of a `RowJob` into batch files in the job's
partial folder, each with its notes. `local` does it in this process, `ray` on a Ray cluster.
The output is the same rows whichever runs it, because both call `run_batch`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from workbench.batches import apply_batch
from workbench.checkpoints import write_batch
from workbench.step_notes import StepNotes
from workbench.transform import Context

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class RowJob:
    """Everything a worker needs to run batches of one step, and nothing unpicklable."""

    transform: Any
    label: str
    sources: tuple[Path, ...]
    batch_rows: int
    batches: int
    partial: Path
    seed: int
    workspace: Path
    base_dir: Path | None
    models: dict[str, Any] = field(default_factory=dict)  # name -> ModelSpec the step uses
    failures: Any = None

    def rows(self, index: int) -> tuple[int, int]:
        return index * self.batch_rows, self.batch_rows


class Progress(Protocol):
    def advance(self) -> None: ...


class Executor(Protocol):
    name: str

    def map_row_batches(self, job: RowJob, done: set[int], make_context: Callable[[], Context],
                        bar: Progress) -> None:
        """Write every batch of `job` not in `done` to the job's partial folder."""
        ...

    def close(self) -> None: ...


def run_batch(job: RowJob, index: int, batch: pl.DataFrame, ctx: Context) -> StepNotes:
    """Apply the step to one batch and store the result with its notes (any worker)."""
    ctx.notes = {}  # this batch's notes only; kept on the context if the batch fails
    out = apply_batch(job.transform, batch, ctx)
    notes = StepNotes.from_context(ctx.notes)
    write_batch(job.partial, index, out, notes)
    ctx.notes = {}  # now in the batch's file
    return notes


def get_executor(name: str, **options: Any) -> Executor:
    if name == "local":
        from workbench.executors.local import LocalExecutor

        return LocalExecutor()
    if name == "ray":
        from workbench.executors.ray_data import RayExecutor

        return RayExecutor(**options)
    raise ValueError(f"unknown executor {name!r} (executors: {', '.join(EXECUTORS)})")
