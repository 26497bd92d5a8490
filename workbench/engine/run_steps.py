"""One step of a run: served from its checkpoint, or run on the executor (row batches, or
the whole input for a global step), then finalized into a checkpoint with its counts.

Each finished row batch is a file, so a step killed midway resumes at its first unfinished
batch; `finalize` turns the outputs into a checkpoint folder of parts whichever executor ran
them, so memory is bounded by a batch (plus a 16-byte hash per row), not by the dataset.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from workbench.engine import parts
from workbench.engine.checkpoints import META_FILE, CheckpointStore, batch_files, batch_notes
from workbench.engine.diskfull import is_no_space, no_space
from workbench.engine.finalize import (
    DATA_DIR,
    DROPPED_DIR,
    ROWS_DIR,
    Finalized,
    finalize,
    finalize_view,
)
from workbench.engine.positional import BatchStream
from workbench.engine.run_checks import CallsAllFailed, all_calls_failed
from workbench.engine.run_input import PART_ROWS
from workbench.engine.run_log import RunLog
from workbench.engine.run_progress import StepBar
from workbench.engine.source import ROW, NotAView, Source, checkpoint_source, materialize, view_meta
from workbench.engine.step_notes import StepNotes, merge_all
from workbench.errors import PipelineError, WorkbenchError
from workbench.executors import Executor, StepJob, new_context
from workbench.models.breaker import Breaker
from workbench.pipeline import Pipeline, Step
from workbench.schema import CONTENT
from workbench.store.atomic import atomic_dir
from workbench.transform import QUARANTINED, Context
from workbench.workspace import Workspace

TOGETHER_ROWS = 10_000  # rows a `stateless` step runs in one call (at most 16 batches)


def _together(batch_rows: int, batches: int) -> int:
    """Batches a `stateless` step runs in one call (and keeps in one file): about
    `TOGETHER_ROWS` rows, at most 16 batches, and a quarter of the step at most, so that a
    killed step has finished some of them."""
    return max(1, min(16, TOGETHER_ROWS // batch_rows, batches // 4))


@dataclass
class StepResult:
    index: int
    step: str
    status: str  # "ran", "resumed" (some batches reused) or "cached"
    rows_in: int
    rows_out: int
    dropped: dict[str, int]
    seconds: float
    checkpoint: Path
    detail: dict[str, Any] = field(default_factory=dict)
    source: Source | None = None  # the kept rows: parts, or a view of its input's

    @property
    def data(self) -> Path:
        """The step's kept rows as a folder of Parquet parts (a view is written out)."""
        if self.source is not None and self.source.is_view:
            materialize(self.source)
        return self.checkpoint / DATA_DIR

    def as_log(self) -> dict[str, Any]:
        return {"step": self.step, "status": self.status, "rows_in": self.rows_in,
                "rows_out": self.rows_out, "dropped": self.dropped,
                "seconds": round(self.seconds, 3),
                "detail": {**self.detail, "checkpoint": str(self.checkpoint)}}


class Contexts:
    """Makes a step's contexts in this process and keeps them, so that what they noted is
    logged also when the step fails (a global step's, or the batch that was running)."""

    def __init__(self, job: StepJob, model_loader: Callable[[str], Any], breaker: Breaker,
                 bar: StepBar) -> None:
        self.job, self.model_loader, self.breaker, self.bar = job, model_loader, breaker, bar
        self.made: list[Context] = []

    def __call__(self) -> Context:
        ctx = new_context(self.job, self.model_loader, self.breaker, self.bar.calls())
        self.made.append(ctx)
        return ctx

    def notes(self) -> list[StepNotes]:
        return [StepNotes.from_context(c.notes) for c in self.made]


@dataclass
class StepRunner:
    pipeline: Pipeline
    ws: Workspace
    store: CheckpointStore
    executor: Executor
    model_loader: Callable[[str], Any]
    log: RunLog
    retry_failed: bool = False

    def run(self, step: Step, kind: str, source: Source | None, key: str, bar: StepBar,
            force: bool = False, input_kind: str | None = None) -> StepResult:
        """The step's checkpoint, run unless it is there (or `force`: the input changed).
        `kind` is the kind of the rows it makes, `input_kind` that of its input."""
        target = self.store.step_dir(step.index, step.name, key)
        started = time.monotonic()
        meta = self.store.meta(target)
        if meta and self.retry_failed and any(r.startswith(QUARANTINED) for r in meta["dropped"]):
            meta = None  # the quarantined rows are called again; finished calls are cache hits
            self.ws.call_cache().clear_failed(step.label)
        if meta and not force:
            output = checkpoint_source(target, meta, self.ws.root)
            if output.exists():  # (a view whose base is gone runs again)
                bar.done(step.label + " (cached)")
                return StepResult(step.index, step.name, "cached", meta["rows_in"],
                                  meta["rows_out"], meta["dropped"], time.monotonic() - started,
                                  target, meta["detail"], output)
        # a folder without meta is not a checkpoint; with `force` the input changed under the
        # same key (a retried step upstream), so its finished batches are stale too
        self.store.discard(target, partial=force)
        transform = step.transform
        if source is not None and source.is_view and transform.scope == "global" and not (
                transform.keeps_content):
            source = materialize(source)  # it may read its input's files (`input_files`)
        keep = transform.keeps_content and source is not None and input_kind == kind
        views = [True, False] if keep else [False]  # a view, else rows written in full
        partial = self.store.partial_dir(target)
        for view in views:
            job = self._job(step, source, partial, kind if view else None)
            contexts = Contexts(job, self.model_loader, Breaker(self.pipeline.spec.failures),
                                bar)
            reused: set[int] = set()
            try:
                result = self._execute(step, kind, job, target, contexts, reused, bar, keep,
                                       view)
                break
            except NotAView:  # its rows changed after all: written in full instead
                shutil.rmtree(partial, ignore_errors=True)
                if not view:
                    raise
            except BaseException as exc:
                self.log.step_failed(step, merge_all(self._notes(job, reused, contexts)))
                if isinstance(exc, CallsAllFailed):  # a re-run calls them again
                    self.store.discard(exc.target, partial=True)
                raise
        result.seconds = time.monotonic() - started
        return result

    def _job(self, step: Step, source: Source | None, partial: Path,
             view_kind: str | None) -> StepJob:
        spec = self.pipeline.spec
        rows = source.count() if source is not None else 0
        row_step = step.transform.scope == "row"
        batches = -(-rows // spec.batch_size) if row_step else 1
        return StepJob(transform=step.transform, label=step.label, source=source,
                       partial=partial, seed=spec.seed, workspace=self.ws.root,
                       base_dir=self.pipeline.base_dir, batch_rows=spec.batch_size,
                       batches=batches,
                       models={n: spec.models[n] for n in step.transform.models().values()
                               if n in spec.models},
                       failures=spec.failures, memory_limit=spec.memory_limit,
                       view_kind=view_kind if row_step else None,
                       together=_together(spec.batch_size, batches)
                       if step.transform.stateless else 1)

    def _execute(self, step: Step, kind: str, job: StepJob, target: Path, contexts: Contexts,
                 reused: set[int], bar: StepBar, keep_ids: bool, view: bool) -> StepResult:
        """Run the step and finalize its output: as a view of its input when `view` (a
        `keeps_content` step: `NotAView` if its rows changed after all), else in full."""
        rows_in = job.source.count() if job.source is not None else 0
        part_rows = max(self.pipeline.spec.batch_size, PART_ROWS)
        try:
            if step.transform.scope == "row" and rows_in:
                job.partial.mkdir(parents=True, exist_ok=True)
                reused.update(_reusable(job, view))
                bar.start(step.label, job.batches)
                self.executor.map_row_batches(job, reused, contexts, bar)
                outputs: list[Path] | BatchStream = [
                    path for path, _ in batch_files(job.partial).values()]
                detail: dict[str, Any] = {"batches": job.batches, "reused_batches": len(reused)}
            else:
                bar.start(step.label, 1)
                outputs = self.executor.run_global(job, contexts)
                detail = {"batches": 1, "reused_batches": 0}
            notes = merge_all(self._notes(job, reused, contexts))
            failed = all_calls_failed(notes)
            if failed:
                raise CallsAllFailed(f"{step.label}: {failed}", target)
            stream = outputs if isinstance(outputs, BatchStream) else None
            view = view and job.source is not None and (
                stream is not None or (step.transform.scope == "row" and rows_in > 0))
            with atomic_dir(target) as tmp:
                if view and stream is not None:
                    assert job.source is not None
                    done = _finalize_stream(stream, job.source, kind, tmp, part_rows)
                elif view:
                    assert job.source is not None
                    done = finalize_view(_files_stream(outputs, part_rows),  # type: ignore[arg-type]
                                         kind, tmp, job.source.base, part_rows, check=False)
                else:
                    done = finalize(outputs if stream is None else stream.batches, kind, tmp,
                                    where=f"output of {step.label}", batch_rows=part_rows,
                                    keep_ids=keep_ids,
                                    columns=None if stream is None else stream.collect_schema())
                dropped = done.dropped
                unexplained = rows_in - done.rows_out - sum(dropped.values())
                if unexplained > 0 and job.source is not None:
                    dropped[f"{step.name}: not kept"] = unexplained
                detail.update(notes.detail(), ids=done.ids, view=view)
                meta: dict[str, Any] = {"rows_in": rows_in, "rows_out": done.rows_out,
                                        "dropped": dropped, "detail": detail}
                if view:
                    assert job.source is not None
                    meta["view"] = view_meta(job.source, done.columns, self.ws.root)
                (tmp / META_FILE).write_text(json.dumps(meta, default=str))
        except (CallsAllFailed, NotAView):
            raise
        except WorkbenchError as exc:
            raise PipelineError(f"{step.label}: {exc}") from exc
        except Exception as exc:
            if is_no_space(exc):  # a global step's half-written output goes too
                if step.transform.scope == "global":
                    shutil.rmtree(job.partial, ignore_errors=True)
                raise PipelineError(f"{step.label}: {no_space(target.parent, 'its checkpoint')}"
                                    ) from exc
            raise PipelineError(f"{step.label} failed: {type(exc).__name__}: {exc}") from exc
        shutil.rmtree(job.partial, ignore_errors=True)
        bar.done(f"{step.label}: {rows_in} → {done.rows_out} rows")
        status = "resumed" if detail.get("reused_batches") else "ran"
        return StepResult(step.index, step.name, status, rows_in, done.rows_out, dropped, 0.0,
                          target, detail, checkpoint_source(target, meta, self.ws.root))

    def _notes(self, job: StepJob, reused: set[int], contexts: Contexts) -> list[StepNotes]:
        """Finished batches' notes (from their files) plus what this process's contexts
        still hold."""
        found = [batch_notes(job.partial, reused)] if job.partial.exists() else []
        return found + contexts.notes()


def _reusable(job: StepJob, view: bool) -> list[int]:
    """The finished batches a resumed step reuses: those written the way it writes them now
    (a view's batches carry their rows' positions); the others' files are removed."""
    found = []
    for first, (path, count) in batch_files(job.partial).items():
        if first + count <= job.batches and (ROW in parts.file_schema(path).names()) == view:
            found.extend(range(first, first + count))
        else:
            path.unlink()
            path.with_suffix(".json").unlink(missing_ok=True)
    return found


def _files_stream(files: list[Path], rows: int) -> Callable[[], Iterator[pl.DataFrame]]:
    target = parts.schema(files)
    return lambda: parts.exact_batches(parts.iter_batches(files, rows, target=target), rows)


def _finalize_stream(stream: BatchStream, source: Source, kind: str, out: Path,
                     rows: int) -> Finalized:
    """A `keeps_content` global step's stream as a view: read without the columns the view
    takes from its base (content, `id`, `parent_id`: split, sample and dedup's second pass
    need positions only; dropped rows take them from what the step put aside, else from the
    base), or whole when the step's functions name one."""
    narrow = [c for c in source.schema().names()
              if c not in (*CONTENT[kind], "id", "parent_id")] or ["id"]  # (a column for rows)
    try:
        return finalize_view(lambda: stream.batches(positions=True, columns=narrow), kind, out,
                             source.base, rows, check=False,
                             columns=stream.collect_schema().names(), aside=stream.aside)
    except pl.exceptions.ColumnNotFoundError:
        for folder in (ROWS_DIR, DROPPED_DIR):
            shutil.rmtree(out / folder, ignore_errors=True)
    return finalize_view(lambda: stream.batches(positions=True), kind, out, source.base, rows)
