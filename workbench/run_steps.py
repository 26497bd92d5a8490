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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench import parts
from workbench.atomic import atomic_dir
from workbench.checkpoints import (
    META_FILE,
    CheckpointStore,
    batch_notes,
    batch_path,
    finished_batches,
)
from workbench.diskfull import is_no_space, no_space
from workbench.errors import PipelineError, WorkbenchError
from workbench.executors import Executor, StepJob, new_context
from workbench.finalize import DATA_DIR, finalize
from workbench.models.breaker import Breaker
from workbench.pipeline import Pipeline, Step
from workbench.run_checks import CallsAllFailed, all_calls_failed
from workbench.run_input import PART_ROWS
from workbench.run_log import RunLog
from workbench.run_progress import StepBar
from workbench.step_notes import StepNotes, merge_all
from workbench.transform import QUARANTINED, Context
from workbench.workspace import Workspace


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

    @property
    def data(self) -> Path:
        """The step's kept rows: a folder of Parquet parts."""
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

    def run(self, step: Step, kind: str, source: Path | None, key: str, bar: StepBar,
            force: bool = False) -> StepResult:
        """The step's checkpoint, run unless it is there (or `force`: the input changed)."""
        target = self.store.step_dir(step.index, step.name, key)
        started = time.monotonic()
        meta = self.store.meta(target)
        if meta and self.retry_failed and any(r.startswith(QUARANTINED) for r in meta["dropped"]):
            meta = None  # the quarantined rows are called again; finished calls are cache hits
            self.ws.call_cache().clear_failed(step.label)
        if meta and not force:
            bar.done(step.label + " (cached)")
            return StepResult(step.index, step.name, "cached", meta["rows_in"], meta["rows_out"],
                              meta["dropped"], time.monotonic() - started, target, meta["detail"])
        # a folder without meta is not a checkpoint; with `force` the input changed under the
        # same key (a retried step upstream), so its finished batches are stale too
        self.store.discard(target, partial=force)
        job = self._job(step, source, self.store.partial_dir(target))
        contexts = Contexts(job, self.model_loader, Breaker(self.pipeline.spec.failures), bar)
        reused: set[int] = set()
        try:
            result = self._execute(step, kind, job, target, contexts, reused, bar)
        except BaseException as exc:
            self.log.step_failed(step, merge_all(self._notes(job, reused, contexts)))
            if isinstance(exc, CallsAllFailed):  # a re-run calls them again
                self.store.discard(exc.target, partial=True)
            raise
        result.seconds = time.monotonic() - started
        return result

    def _job(self, step: Step, source: Path | None, partial: Path) -> StepJob:
        spec = self.pipeline.spec
        rows = parts.count(source) if source is not None else 0
        batches = -(-rows // spec.batch_size) if step.transform.scope == "row" else 1
        return StepJob(transform=step.transform, label=step.label, source=source,
                       partial=partial, seed=spec.seed, workspace=self.ws.root,
                       base_dir=self.pipeline.base_dir, batch_rows=spec.batch_size,
                       batches=batches,
                       models={n: spec.models[n] for n in step.transform.models().values()
                               if n in spec.models},
                       failures=spec.failures, memory_limit=spec.memory_limit)

    def _execute(self, step: Step, kind: str, job: StepJob, target: Path, contexts: Contexts,
                 reused: set[int], bar: StepBar) -> StepResult:
        rows_in = parts.count(job.source) if job.source is not None else 0
        try:
            if step.transform.scope == "row" and rows_in:
                job.partial.mkdir(parents=True, exist_ok=True)
                reused.update(i for i in finished_batches(job.partial) if i < job.batches)
                bar.start(step.label, job.batches)
                self.executor.map_row_batches(job, reused, contexts, bar)
                outputs = [batch_path(job.partial, i) for i in range(job.batches)]
                detail: dict[str, Any] = {"batches": job.batches, "reused_batches": len(reused)}
            else:
                bar.start(step.label, 1)
                outputs = self.executor.run_global(job, contexts)
                detail = {"batches": 1, "reused_batches": 0}
            notes = merge_all(self._notes(job, reused, contexts))
            failed = all_calls_failed(notes)
            if failed:
                raise CallsAllFailed(f"{step.label}: {failed}", target)
            with atomic_dir(target) as tmp:
                done = finalize(outputs, kind, tmp, where=f"output of {step.label}",
                                batch_rows=max(self.pipeline.spec.batch_size, PART_ROWS))
                dropped = done.dropped
                unexplained = rows_in - done.rows_out - sum(dropped.values())
                if unexplained > 0 and job.source is not None:
                    dropped[f"{step.name}: not kept"] = unexplained
                detail.update(notes.detail())
                meta = {"rows_in": rows_in, "rows_out": done.rows_out, "dropped": dropped,
                        "detail": detail}
                (tmp / META_FILE).write_text(json.dumps(meta, default=str))
        except CallsAllFailed:
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
                          target, detail)

    def _notes(self, job: StepJob, reused: set[int], contexts: Contexts) -> list[StepNotes]:
        """Finished batches' notes (from their files) plus what this process's contexts
        still hold."""
        found = [batch_notes(job.partial, reused)] if job.partial.exists() else []
        return found + contexts.notes()
