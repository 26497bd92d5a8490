"""Executors run a step: a row-local step's batches, or a global step over its whole input.

The runner decides what to run (keys, checkpoints, finalizing, publishing); an executor turns
a `StepJob` into output files in the job's partial folder: for a row step one file per
unfinished batch, each with its notes; for a global step the step's sunk output. `local` does
it in this process, `ray` spreads row batches over a Ray cluster and runs global steps on the
driver. The rows are the same whichever runs them: both call `run_batch` and `run_global`,
with contexts made by `new_context`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from workbench.engine.batches import apply_batch
from workbench.engine.checkpoints import write_batch
from workbench.engine.positional import BatchStream
from workbench.engine.source import ROW, NotAView, Source
from workbench.engine.step_notes import StepNotes
from workbench.schema import CONTENT
from workbench.transform import DROP, Context

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class StepJob:
    """Everything a worker needs to run one step, and nothing unpicklable."""

    transform: Any
    label: str
    source: Source | None  # the step's input (None: the step creates rows)
    partial: Path  # where the step's unfinished output goes
    seed: int
    workspace: Path
    base_dir: Path | None
    batch_rows: int
    batches: int = 1
    models: dict[str, Any] = field(default_factory=dict)  # name -> ModelSpec the step uses
    failures: Any = None
    memory_limit: str = "1GB"
    view_kind: str | None = None  # set: a row step writes its batches as a view's (`thin`)
    together: int = 1  # batches one call may run (a `stateless` step's: see `run_batches`)

    def rows(self, index: int) -> tuple[int, int]:
        return index * self.batch_rows, self.batch_rows


def new_context(job: StepJob, model_loader: Callable[[str], Any], breaker: Any,
                progress: Callable[[int, int, int], None] | None = None) -> Context:
    """The one recipe for a step's context, in the runner's process or a Ray worker. Only a
    global step sees its input files (and a scratch folder beside its output): a row step
    sees its batch."""
    from workbench.workspace import Workspace

    whole = job.transform.scope == "global"
    plain = job.source is not None and not job.source.is_view
    return Context(seed=job.seed, workspace=Workspace(job.workspace), model_loader=model_loader,
                   base_dir=job.base_dir, step=job.label, breaker=breaker,
                   input_files=list(job.source.base) if whole and plain else None,
                   input=job.source if whole else None,
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

    def run_global(self, job: StepJob,
                   make_context: Callable[[], Context]) -> list[Path] | BatchStream:
        """Run a global step on its whole input; the files of its output, or the stream of
        it that the runner finalizes as it is read."""
        ...

    def close(self) -> None: ...


def run_batch(job: StepJob, index: int, batch: pl.DataFrame, ctx: Context) -> StepNotes:
    """Apply the step to one batch and store the result with its notes (any worker); for a
    view (`job.view_kind`) only what the view keeps (see `thin`)."""
    ctx.notes = {}  # this batch's notes only; kept on the context if the batch fails
    positions = batch[ROW] if ROW in batch.columns else None
    if positions is not None:
        batch = batch.drop(ROW)
    out = apply_batch(job.transform, batch, ctx)
    if job.view_kind is not None:
        assert positions is not None
        out = thin(batch, out, job.view_kind).with_columns(positions)
    notes = StepNotes.from_context(ctx.notes)
    write_batch(job.partial, index, out, notes)
    ctx.notes = {}  # now in the batch's file
    return notes


def run_batches(job: StepJob, first: int, chunk: pl.DataFrame, ctx: Context) -> None:
    """Apply a `stateless` step to several whole batches in one call and store them as one
    file whose notes say how many batches it holds (a resumed run reuses them all); batch
    by batch when the step dropped rows instead of marking them (a batch's rows could not
    be told apart then)."""
    ctx.notes = {}
    positions = chunk[ROW] if ROW in chunk.columns else None
    batch = chunk.drop(ROW) if positions is not None else chunk
    out = apply_batch(job.transform, batch, ctx)
    if out.height != batch.height:
        for k in range(-(-chunk.height // job.batch_rows)):
            run_batch(job, first + k, chunk.slice(k * job.batch_rows, job.batch_rows), ctx)
        return
    if job.view_kind is not None:
        assert positions is not None
        out = thin(batch, out, job.view_kind).with_columns(positions)
    write_batch(job.partial, first, out, StepNotes.from_context(ctx.notes),
                count=-(-chunk.height // job.batch_rows))
    ctx.notes = {}


def run_batches_lazily(job: StepJob, first: int, start: int, rows: int, ctx: Context) -> bool:
    """`run_batches` for a `stateless` step writing a view over plain files, on a lazy scan
    of rows start..start+rows: polars reads only the columns the step needs and the view
    keeps, and dropped rows whole. False, with nothing written, when the step changed the
    number, order or ids of the rows (the caller runs the batches eagerly, checked)."""
    assert job.source is not None and job.view_kind is not None
    ctx.notes = {}
    scan = pl.scan_parquet(list(job.source.base)).slice(start, rows)
    out = job.transform(scan, ctx)
    columns = out.collect_schema()
    if "id" not in columns:
        return False
    own = [c for c in columns.names()
           if c not in (*CONTENT[job.view_kind], "id", "parent_id", DROP)]
    marks = [DROP] if DROP in columns else []
    indexed = out.with_row_index(ROW, offset=start).with_columns(pl.col(ROW).cast(pl.UInt64))
    narrow = indexed.select(ROW, "id", *marks, *own).collect()
    if narrow.height != rows or not narrow["id"].equals(scan.select("id").collect()["id"]):
        ctx.notes = {}
        return False
    kept = narrow.filter(pl.col(DROP).is_null()) if marks else narrow
    order = [*columns.names(), ROW]
    out_rows = kept.with_columns(pl.lit(None, dtype=columns[c]).alias(c)
                                 for c in columns.names() if c not in kept.columns).select(order)
    if kept.height < narrow.height:  # dropped rows are kept whole
        dropped = indexed.filter(pl.col(DROP).is_not_null()).collect().select(order)
        out_rows = pl.concat([out_rows, dropped]).sort(ROW)
    write_batch(job.partial, first, out_rows, StepNotes.from_context(ctx.notes),
                count=-(-rows // job.batch_rows))
    ctx.notes = {}
    return True


def run_global(job: StepJob, ctx: Context) -> list[Path] | BatchStream:
    """Run a step on its whole input (a lazy scan of the parts) and sink the result, or
    return a `BatchStream` result for the runner to finalize as it streams past (no copy
    is written first). Its notes stay on `ctx`."""
    shutil.rmtree(job.partial, ignore_errors=True)  # a global step has no batches to reuse
    job.partial.mkdir(parents=True)
    frame = job.transform(job.source.scan() if job.source is not None else pl.LazyFrame(), ctx)
    if isinstance(frame, BatchStream):
        return frame
    output = job.partial / "output.parquet"
    frame.sink_parquet(output, row_group_size=job.batch_rows)
    return [output]


def thin(batch: pl.DataFrame, out: pl.DataFrame, kind: str) -> pl.DataFrame:
    """A row step's output batch as a view keeps it: the same rows in the same order (same
    ids), whose content columns are nulled on kept rows (the view reads them from its base;
    dropped rows are kept whole). Checked: ids row by row, and a few rows' content hash;
    `NotAView` otherwise (the runner then runs the step again, writing rows in full)."""
    from workbench.engine.finalize import CHECKED_PER_PART, ids_are_content

    checked = CHECKED_PER_PART * max(1, out.height // 1000)
    if (out.height != batch.height or "id" not in out.columns
            or not out["id"].equals(batch["id"]) or not ids_are_content(out, kind, checked)):
        raise NotAView("its rows changed")
    kept = pl.col(DROP).is_null() if DROP in out.columns else pl.lit(True)
    return out.with_columns(pl.when(~kept).then(pl.col(c)).alias(c)
                            for c in CONTENT[kind] if c in out.columns)


def get_executor(name: str, **options: Any) -> Executor:
    if name == "local":
        from workbench.executors.local import LocalExecutor

        return LocalExecutor()
    if name == "ray":
        from workbench.executors.ray_data import RayExecutor

        return RayExecutor(**options)
    raise ValueError(f"unknown executor {name!r} (executors: {', '.join(EXECUTORS)})")
