"""Executors run a step: a row-local step's batches, or a global step over its whole input.

The runner decides what to run (keys, checkpoints, finalizing, publishing); an executor turns
a `StepJob` into output files in the job's partial folder: for a row step one file per
unfinished batch, each with its notes; for a global step the step's sunk output. `local` does
it in this process, `ray` spreads row batches over a Ray cluster and runs global steps on the
driver. The rows are the same whichever runs them: both call `run_batch` and `run_global`,
with contexts made by `new_context`.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from workbench import parts
from workbench.batches import apply_batch
from workbench.checkpoints import write_batch
from workbench.positional import BatchStream
from workbench.step_notes import StepNotes
from workbench.transform import Context

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class StepJob:
    """Everything a worker needs to run one step, and nothing unpicklable."""

    transform: Any
    label: str
    source: Path | None  # the step's input: a folder of parts (None: the step creates rows)
    partial: Path  # where the step's unfinished output goes
    seed: int
    workspace: Path
    base_dir: Path | None
    batch_rows: int
    batches: int = 1
    models: dict[str, Any] = field(default_factory=dict)  # name -> ModelSpec the step uses
    failures: Any = None
    memory_limit: str = "1GB"

    @functools.cached_property
    def sources(self) -> tuple[Path, ...]:
        return tuple(parts.files(self.source)) if self.source is not None else ()

    def rows(self, index: int) -> tuple[int, int]:
        return index * self.batch_rows, self.batch_rows


def new_context(job: StepJob, model_loader: Callable[[str], Any], breaker: Any,
                progress: Callable[[int, int, int], None] | None = None) -> Context:
    """The one recipe for a step's context, in the runner's process or a Ray worker. Only a
    global step sees its input files (and a scratch folder beside its output): a row step
    sees its batch."""
    from workbench.workspace import Workspace

    whole = job.transform.scope == "global"
    return Context(seed=job.seed, workspace=Workspace(job.workspace), model_loader=model_loader,
                   base_dir=job.base_dir, step=job.label, breaker=breaker,
                   input_files=list(job.sources) if whole else None,
                   temp_dir=job.partial / "tmp" if whole else None,
                   memory_limit=job.memory_limit, progress=progress)


class Progress(Protocol):
    def advance(self) -> None: ...


class Executor(Protocol):
    name: str

    def map_row_batches(self, job: StepJob, done: set[int], make_context: Callable[[], Context],
                        bar: Progress) -> None:
        """Write every batch of `job` not in `done` to the job's partial folder."""
        ...

    def run_global(self, job: StepJob, make_context: Callable[[], Context]) -> list[Path]:
        """Run a global step on its whole input; the files of its output."""
        ...

    def close(self) -> None: ...


def run_batch(job: StepJob, index: int, batch: pl.DataFrame, ctx: Context) -> StepNotes:
    """Apply the step to one batch and store the result with its notes (any worker)."""
    ctx.notes = {}  # this batch's notes only; kept on the context if the batch fails
    out = apply_batch(job.transform, batch, ctx)
    notes = StepNotes.from_context(ctx.notes)
    write_batch(job.partial, index, out, notes)
    ctx.notes = {}  # now in the batch's file
    return notes


def run_global(job: StepJob, ctx: Context) -> list[Path]:
    """Run a step on its whole input (a lazy scan of the parts) and sink the result; a
    `BatchStream` result is written batch by batch. Its notes stay on `ctx`."""
    shutil.rmtree(job.partial, ignore_errors=True)  # a global step has no batches to reuse
    job.partial.mkdir(parents=True)
    frame = job.transform(parts.scan(job.source) if job.source is not None else pl.LazyFrame(),
                          ctx)
    if isinstance(frame, BatchStream):
        frame.sink_parts(job.partial / "output")
        return parts.files(job.partial / "output")
    output = job.partial / "output.parquet"
    frame.sink_parquet(output, row_group_size=job.batch_rows)
    return [output]


def get_executor(name: str, **options: Any) -> Executor:
    if name == "local":
        from workbench.executors.local import LocalExecutor

        return LocalExecutor()
    if name == "ray":
        from workbench.executors.ray_data import RayExecutor

        return RayExecutor(**options)
    raise ValueError(f"unknown executor {name!r} (executors: {', '.join(EXECUTORS)})")
