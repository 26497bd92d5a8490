"""The local executor: runs a validated pipeline step by step with checkpoints.

Each step's output is a checkpoint keyed on the input and the configs of all steps up to it,
so a re-run skips finished steps and a changed config re-runs that step and later ones only.
Row-local steps run batch by batch on an executor (`workbench.executors`: local or Ray);
each finished batch is a file, so a run killed mid-step resumes at the first unfinished
batch. Global steps (dedup, sampling, SQL) run here over the input's Parquet parts and sink
their result to disk. A step's output becomes a checkpoint folder of parts through
`finalize`, the same pure function whichever executor ran it, so memory is bounded by a
batch (plus a 16-byte hash per row), not by the dataset.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from workbench import parts
from workbench.atomic import atomic_dir, file_lock, file_sha256
from workbench.checkpoints import (
    META_FILE,
    CheckpointStore,
    batch_notes,
    batch_path,
    finished_batches,
)
from workbench.diskfull import is_no_space, no_space, writing
from workbench.errors import InputError, NotFoundError, PipelineError, WorkbenchError
from workbench.executors import Executor, RowJob, get_executor
from workbench.finalize import DATA_DIR, DROPPED_DIR, finalize
from workbench.models.breaker import Breaker
from workbench.pipeline import Pipeline, Step, check_kinds
from workbench.positional import BatchStream
from workbench.step_notes import StepNotes, merge_all
from workbench.transform import QUARANTINED, Context, code_fingerprint
from workbench.workspace import DATA_FILE, DatasetVersion, Workspace

DROPPED_FILE = DROPPED_DIR  # a checkpoint's dropped rows: a folder of parts
# Bump when the runner changes what a step's checkpoint holds (ids, columns, drop handling).
CHECKPOINT_FORMAT = 3
PART_ROWS = 5000  # a checkpoint's parts hold at least this many rows (fewer, larger files)


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
        return {
            "step": self.step,
            "status": self.status,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "dropped": self.dropped,
            "seconds": round(self.seconds, 3),
            "detail": {**self.detail, "checkpoint": str(self.checkpoint)},
        }


@dataclass
class RunResult:
    run_id: str
    output: DatasetVersion | None
    steps: list[StepResult]
    up_to_date: bool
    final_checkpoint: Path


def _key(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class Runner:
    def __init__(
        self,
        pipeline: Pipeline,
        workspace: Workspace,
        limit: int | None = None,
        progress: bool = True,
        retry_failed: bool = False,
        fresh: bool = False,
        executor: Executor | str = "local",
        allow_empty: bool = False,
    ) -> None:
        self.pipeline = pipeline
        self.allow_empty = allow_empty or pipeline.spec.allow_empty  # publish 0 rows anyway
        self.ws = workspace
        self.limit = limit
        self.progress = progress
        self.retry_failed = retry_failed
        self.fresh = fresh  # ignore every checkpoint (model calls still come from the cache)
        self.root = workspace.cache_dir / "checkpoints" / pipeline.spec.name
        self.store = CheckpointStore(self.root)
        self.executor = get_executor(executor) if isinstance(executor, str) else executor
        self._models: dict[str, Any] = {}
        self._reused: dict[int, set[int]] = {}  # step index -> batches an earlier run made

    # input ------------------------------------------------------------------------------
    def _input(self) -> tuple[Path | None, str | None, dict[str, Any], str]:
        """(the input's file or folder of parts, kind, lineage of the input, fingerprint)."""
        ref = self.pipeline.spec.input
        if ref is None:
            return None, None, {}, "none"
        name = ref.partition("@")[0]
        if self.ws.has_dataset(name):
            version = self.ws.resolve(ref)
            fingerprint = f"dataset:{version.ref}:limit={self.limit}"
            lineage = {"dataset": version.ref, "lineage": version.lineage}
            source = version.path / DATA_FILE
            if self.limit is None:
                return source, version.kind, lineage, fingerprint
            target = self.root / f"input-{_key(fingerprint)[:16]}"
            if not (target / DATA_FILE).exists():
                shutil.rmtree(target, ignore_errors=True)
                with writing(target, "the limited input"), atomic_dir(target) as tmp:
                    pl.scan_parquet(source).head(self.limit).sink_parquet(tmp / DATA_FILE)
            return target / DATA_FILE, version.kind, lineage, fingerprint
        path = self._find_file(ref)
        digest = file_sha256(path) if path.is_file() else None
        fingerprint = f"file:{digest}:limit={self.limit}"
        target = self.root / f"input-{_key(fingerprint)[:16]}"
        meta = self.store.meta(target)
        if meta is None:  # stage the file as parts, a chunk at a time, with ids
            from workbench.io.importer import stage

            shutil.rmtree(target, ignore_errors=True)
            with (writing(target, f"staging the input {path}"), self.ws.scratch() as scratch,
                  atomic_dir(target) as tmp):
                staged = stage(path, scratch / "staged", limit=self.limit)
                finalize(staged.files, staged.kind, tmp, where=str(path), batch_rows=PART_ROWS)
                meta = {"kind": staged.kind, "lineage": staged.lineage}
                (tmp / META_FILE).write_text(json.dumps(meta, default=str))
        lineage = {"file": str(path), "import": meta["lineage"]}
        return target / DATA_DIR, meta["kind"], lineage, fingerprint

    def _find_file(self, ref: str) -> Path:
        """A relative input path is relative to the pipeline file, wherever it is run from."""
        path = Path(ref).expanduser()
        candidate = path if path.is_absolute() else self.pipeline.base_dir / path
        if candidate.exists():
            return candidate
        raise NotFoundError(
            f"{self.pipeline.source}: input {ref!r} is neither a dataset in workspace "
            f"{self.ws.root} nor a file (looked for {candidate}; relative paths resolve "
            "against the pipeline file's folder)"
        )

    def _model(self, name: str) -> Any:
        if name not in self._models:
            if name not in self.pipeline.spec.models:
                raise PipelineError(f"no model {name!r} under `models:`")
            from workbench.models import load_backend

            self._models[name] = load_backend(self.pipeline.spec.models[name])
        return self._models[name]

    # run --------------------------------------------------------------------------------
    def run(self) -> RunResult:
        """One run at a time per pipeline and workspace; a second one is refused at once."""
        try:
            with file_lock(self.root / ".lock", wait=False):
                self.ws.mark_interrupted(self.pipeline.spec.name)
                return self._run()
        except BlockingIOError:
            raise PipelineError(
                f"pipeline {self.pipeline.spec.name!r} is already running in workspace "
                f"{self.ws.root}; wait for it or stop it first"
            ) from None

    def _run(self) -> RunResult:
        spec = self.pipeline.spec
        input_path, input_kind, input_lineage, fingerprint = self._input()
        kinds = check_kinds(self.pipeline, input_kind)
        run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.ws.start_run(run_id, spec.name, self.pipeline.yaml_text)
        key = _key(fingerprint, spec.seed, CHECKPOINT_FORMAT)
        current, results, rerun = input_path, [], self.fresh
        try:
            with _progress(self.progress) as bar:
                for step, kind in zip(self.pipeline.steps, kinds, strict=True):
                    key = _key(key, step.name, step.transform.config.model_dump(mode="json"),
                               code_fingerprint(type(step.transform)),
                               {n: m.model_dump() for n, m in spec.models.items()
                                if n in step.transform.models().values()},
                               spec.batch_size, *_files_digest(step, self.pipeline))
                    breaker = Breaker(spec.failures)
                    live: list[Context] = []
                    try:
                        result = self._step(step, kind, current, key, breaker, live, bar,
                                            force=rerun)
                    except BaseException as exc:
                        self._log_failed_step(run_id, step, key, live)
                        if isinstance(exc, CallsAllFailed):  # a re-run calls them again
                            self.store.discard(exc.target, partial=True)
                        raise
                    rerun = rerun or result.status != "cached"  # later checkpoints are stale
                    self.ws.log_step(run_id, step.index, result.as_log())
                    results.append(result)
                    current = result.data
            if spec.output and not results[-1].rows_out and not self.allow_empty:
                raise PipelineError(_empty_output(self.pipeline, results))
            output, up_to_date = self._publish(run_id, key, kinds[-1], current, input_lineage,
                                               results)
        except BaseException as exc:
            message = str(exc) if isinstance(exc, WorkbenchError) else f"{type(exc).__name__}: {exc}"
            self.ws.finish_run(run_id, "failed", error=message)
            raise
        finally:
            self.executor.close()
        self.ws.finish_run(run_id, "finished", output=output)
        return RunResult(run_id, output, results, up_to_date, current.parent)

    def _context(self, step: Step, breaker: Breaker, live: list[Context]) -> Context:
        """A context kept in `live`, so what it noted is logged also when the step fails."""
        ctx = Context(seed=self.pipeline.spec.seed, workspace=self.ws, model_loader=self._model,
                      base_dir=self.pipeline.base_dir, step=step.label, breaker=breaker)
        live.append(ctx)
        return ctx

    def _notes(self, step: Step, key: str, live: list[Context]) -> StepNotes:
        """Finished batches' notes (from their files) plus what live contexts still hold
        (a global step's, or the batch that was running when a step failed)."""
        partial = self.store.partial_dir(self.store.step_dir(step.index, step.name, key))
        found = [batch_notes(partial, self._reused.get(step.index, set()))
                 if partial.exists() else StepNotes()]
        return merge_all(found + [StepNotes.from_context(c.notes) for c in live])

    def _log_failed_step(self, run_id: str, step: Step, key: str, live: list[Context]) -> None:
        """The step that stopped the run, with its model-call counts and errors by kind."""
        detail = self._notes(step, key, live).detail()
        self.ws.log_step(run_id, step.index, {"step": step.name, "status": "failed",
                                              "dropped": {}, "detail": detail})

    def _step(self, step: Step, kind: str, source: Path | None, key: str, breaker: Breaker,
              live: list[Context], bar: Any, force: bool = False) -> StepResult:
        target = self.store.step_dir(step.index, step.name, key)
        partial = self.store.partial_dir(target)
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
        rows_in = parts.count(source) if source is not None else 0
        try:
            if step.transform.scope == "row" and rows_in:
                outputs, detail = self._row_batches(step, source, rows_in, partial, breaker,
                                                    live, bar)
            else:
                outputs, detail = self._global(step, source, partial, breaker, live, bar)
            notes = self._notes(step, key, live)
            failed = _all_calls_failed(notes)
            if failed:
                raise CallsAllFailed(f"{step.label}: {failed}", target)
            with atomic_dir(target) as tmp:
                done = finalize(outputs, kind, tmp, where=f"output of {step.label}",
                                batch_rows=max(self.pipeline.spec.batch_size, PART_ROWS))
                dropped = done.dropped
                unexplained = rows_in - done.rows_out - sum(dropped.values())
                if unexplained > 0 and source is not None:
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
                    shutil.rmtree(partial, ignore_errors=True)
                raise PipelineError(f"{step.label}: {no_space(target.parent, 'its checkpoint')}"
                                    ) from exc
            raise PipelineError(f"{step.label} failed: {type(exc).__name__}: {exc}") from exc
        shutil.rmtree(partial, ignore_errors=True)
        bar.done(f"{step.label}: {rows_in} → {done.rows_out} rows")
        status = "resumed" if detail.get("reused_batches") else "ran"
        return StepResult(step.index, step.name, status, rows_in, done.rows_out, dropped,
                          time.monotonic() - started, target, detail)

    def _global(self, step: Step, source: Path | None, partial: Path, breaker: Breaker,
                live: list[Context], bar: Any) -> tuple[list[Path], dict[str, Any]]:
        """Run a step on its whole input (a lazy scan of the parts) and sink the result."""
        bar.start(step.label, 1)
        ctx = self._context(step, breaker, live)
        ctx.input_files = parts.files(source) if source is not None else []
        ctx.temp_dir = partial / "tmp"  # spills and scratch files go with the partial folder
        ctx.memory_limit = self.pipeline.spec.memory_limit
        shutil.rmtree(partial, ignore_errors=True)  # a global step has no batches to reuse
        partial.mkdir(parents=True)
        frame = step.transform(parts.scan(source) if source is not None else pl.LazyFrame(), ctx)
        if isinstance(frame, BatchStream):  # written batch by batch
            frame.sink_parts(partial / "output")
            return parts.files(partial / "output"), {"batches": 1, "reused_batches": 0}
        output = partial / "output.parquet"
        frame.sink_parquet(output, row_group_size=self.pipeline.spec.batch_size)
        return [output], {"batches": 1, "reused_batches": 0}

    def _row_batches(self, step: Step, source: Path, rows: int, partial: Path,
                     breaker: Breaker, live: list[Context],
                     bar: Any) -> tuple[list[Path], dict[str, Any]]:
        size = self.pipeline.spec.batch_size
        count = -(-rows // size)
        partial.mkdir(parents=True, exist_ok=True)
        done = {i for i in finished_batches(partial) if i < count}
        self._reused[step.index] = done
        spec = self.pipeline.spec
        job = RowJob(transform=step.transform, label=step.label,
                     sources=tuple(parts.files(source)), batch_rows=size, batches=count,
                     partial=partial, seed=spec.seed, workspace=self.ws.root,
                     base_dir=self.pipeline.base_dir,
                     models={n: spec.models[n] for n in step.transform.models().values()
                             if n in spec.models},
                     failures=spec.failures)
        bar.start(step.label, count)
        self.executor.map_row_batches(job, done, lambda: self._context(step, breaker, live), bar)
        return ([batch_path(partial, i) for i in range(count)],
                {"batches": count, "reused_batches": len(done)})

    def _publish(self, run_id: str, key: str, kind: str, data: Path, input_lineage: dict,
                 results: list[StepResult]) -> tuple[DatasetVersion | None, bool]:
        spec = self.pipeline.spec
        if not spec.output:
            return None, False
        digest = hashlib.sha256("".join(file_sha256(f) for f in parts.files(data)).encode())
        key = f"{key[:32]}:{digest.hexdigest()[:32]}"  # same configs and same rows
        existing = self.ws.find_by_run_key(spec.output, key)
        if existing is not None:
            return existing, True
        lineage = {
            "pipeline": {"name": spec.name, "source": self.pipeline.source,
                         "yaml": self.pipeline.yaml_text, "seed": spec.seed},
            "run_id": run_id,
            "input": input_lineage,
            "steps": [{"index": r.index, "step": r.step, "rows_in": r.rows_in,
                       "rows_out": r.rows_out, "dropped": r.dropped,
                       **({"report": r.detail["report"]} if "report" in r.detail else {})}
                      for r in results],
            "models": {n: m.model_dump() for n, m in spec.models.items()},
        }
        return self.ws.publish_parts(spec.output, data, kind, lineage, run_key=key), False


class CallsAllFailed(PipelineError):
    """Every model call of a step failed (however few): the run stops, nothing is published,
    and the step's batches are discarded so that a re-run calls the model again."""

    def __init__(self, message: str, target: Path) -> None:
        super().__init__(message)
        self.target = target


def _all_calls_failed(notes: StepNotes) -> str | None:
    """What went wrong when a step made model calls and not one succeeded (this run's and
    reused batches' together; a cache hit is a success), else None."""
    def total(key: str) -> int:
        return notes.model_calls.get(key, 0) + notes.reused_calls.get(key, 0)

    if not total("failures") or total("hits") or total("computed"):
        return None
    first = next(iter(notes.errors.values()), {}).get("first", "no error recorded")
    return (f"all {total('failures')} model calls failed; first error: {first} (nothing was "
            "published: fix the cause and run again)")


def _empty_output(pipeline: Pipeline, results: list[StepResult]) -> str:
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


def _files_digest(step: Step, pipeline: Pipeline) -> list[str]:
    """The content hash of files a step reads by itself (a config's `input_digest`, e.g.
    the documents of `agentinstruct`), so an edited file re-runs the step."""
    try:
        digest = step.transform.config.input_digest(pipeline.base_dir)
    except WorkbenchError as exc:
        raise PipelineError(f"{step.label}: {exc}") from exc
    return [] if digest is None else [digest]


def run_pipeline(pipeline: Pipeline, workspace: Workspace, **options: Any) -> RunResult:
    """Library entry point: what `workbench run` does, callable from a notebook."""
    return Runner(pipeline, workspace, **options).run()


class _Bar:
    """A rich progress bar per step; silent when progress is off."""

    def __init__(self, progress: Any) -> None:
        self.progress = progress
        self.task: Any = None

    def start(self, label: str, total: int) -> None:
        if self.progress is not None:
            self.task = self.progress.add_task(label, total=total)

    def advance(self) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.advance(self.task)

    def done(self, label: str) -> None:
        if self.progress is None:
            return
        if self.task is None:
            self.task = self.progress.add_task(label, total=1)
        self.progress.update(self.task, description=label, completed=self.progress.tasks[
            self.task].total)
        self.task = None


class _progress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.progress: Any = None

    def __enter__(self) -> _Bar:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            self.progress = Progress("[progress.description]{task.description}", BarColumn(),
                                     MofNCompleteColumn(), TimeElapsedColumn())
            self.progress.__enter__()
        return _Bar(self.progress)

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)


__all__ = ["CallsAllFailed", "Runner", "RunResult", "StepResult", "run_pipeline",
           "InputError"]
