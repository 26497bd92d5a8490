"""The local executor: runs a validated pipeline step by step with checkpoints.

Each step's output is a checkpoint keyed on the input and the configs of all steps up to it,
so a re-run skips finished steps and a changed config re-runs that step and later ones only.
Row-local steps run batch by batch; each finished batch is a file, so a run killed mid-step
resumes at the first unfinished batch. Global steps (dedup, sampling, SQL) see the whole data.
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

from workbench import schema
from workbench.atomic import atomic_dir, atomic_file, file_lock, file_sha256
from workbench.batches import apply_batch
from workbench.errors import InputError, NotFoundError, PipelineError, WorkbenchError
from workbench.models.breaker import Breaker
from workbench.pipeline import Pipeline, Step, check_kinds
from workbench.transform import DROP, QUARANTINED, Context, code_fingerprint
from workbench.workspace import DATA_FILE, DatasetVersion, Workspace

DROPPED_FILE = "dropped.parquet"
META_FILE = "meta.json"
# Bump when the runner changes what a step's checkpoint holds (ids, columns, drop handling).
CHECKPOINT_FORMAT = 2


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


def _rows(path: Path) -> int:
    return pl.scan_parquet(path).select(pl.len()).collect().item()


class Runner:
    def __init__(
        self,
        pipeline: Pipeline,
        workspace: Workspace,
        limit: int | None = None,
        progress: bool = True,
        retry_failed: bool = False,
        fresh: bool = False,
    ) -> None:
        self.pipeline = pipeline
        self.ws = workspace
        self.limit = limit
        self.progress = progress
        self.retry_failed = retry_failed
        self.fresh = fresh  # ignore every checkpoint (model calls still come from the cache)
        self.root = workspace.cache_dir / "checkpoints" / pipeline.spec.name
        self._models: dict[str, Any] = {}

    # input ------------------------------------------------------------------------------
    def _input(self) -> tuple[Path | None, str | None, dict[str, Any], str]:
        """(checkpointed input file, kind, lineage of the input, fingerprint)."""
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
            frame, kind = pl.read_parquet(source, n_rows=self.limit), version.kind
        else:
            path = self._find_file(ref)
            from workbench.io.importer import load

            frame, kind, source_lineage = load(path)
            if self.limit is not None:
                frame = frame.head(self.limit)
            fingerprint = f"file:{source_lineage['sha256']}:limit={self.limit}"
            lineage = {"file": str(path), "import": source_lineage}
        target = self.root / f"input-{_key(fingerprint)[:16]}"
        if not (target / DATA_FILE).exists():
            shutil.rmtree(target, ignore_errors=True)
            with atomic_dir(target) as tmp:
                frame.write_parquet(tmp / DATA_FILE)
        return target / DATA_FILE, kind, lineage, fingerprint

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
                    ctx = Context(seed=spec.seed, workspace=self.ws, model_loader=self._model,
                                  base_dir=self.pipeline.base_dir, step=step.label,
                                  breaker=Breaker(spec.failures))
                    try:
                        result = self._step(step, kind, current, key, ctx, bar, force=rerun)
                    except BaseException:
                        self._log_failed_step(run_id, step, ctx)
                        raise
                    rerun = rerun or result.status != "cached"  # later checkpoints are stale
                    self.ws.log_step(run_id, step.index, result.as_log())
                    results.append(result)
                    current = result.checkpoint / DATA_FILE
            output, up_to_date = self._publish(run_id, key, kinds[-1], current, input_lineage,
                                               results)
        except BaseException as exc:
            message = str(exc) if isinstance(exc, WorkbenchError) else f"{type(exc).__name__}: {exc}"
            self.ws.finish_run(run_id, "failed", error=message)
            raise
        self.ws.finish_run(run_id, "finished", output=output)
        return RunResult(run_id, output, results, up_to_date, current.parent)

    def _log_failed_step(self, run_id: str, step: Step, ctx: Context) -> None:
        """The step that stopped the run, with its model-call counts and errors by kind."""
        detail = _call_detail(ctx)
        self.ws.log_step(run_id, step.index, {"step": step.name, "status": "failed",
                                              "dropped": {}, "detail": detail})

    def _step(self, step: Step, kind: str, source: Path | None, key: str, ctx: Context,
              bar: Any, force: bool = False) -> StepResult:
        target = self.root / f"{step.index:02d}-{step.name}-{key[:16]}"
        started = time.monotonic()
        meta = json.loads((target / META_FILE).read_text()) if (target / META_FILE).exists() else None
        if meta and self.retry_failed and any(r.startswith(QUARANTINED) for r in meta["dropped"]):
            meta = None  # the quarantined rows are called again; finished calls are cache hits
            ctx.call_cache().clear_failed(step.label)
        if meta and not force:
            bar.done(step.label + " (cached)")
            return StepResult(step.index, step.name, "cached", meta["rows_in"], meta["rows_out"],
                              meta["dropped"], time.monotonic() - started, target, meta["detail"])
        shutil.rmtree(target, ignore_errors=True)  # a folder without meta is not a checkpoint
        if force:  # the input changed under the same key (a retried step upstream)
            shutil.rmtree(target.with_name(target.name + ".partial"), ignore_errors=True)
        rows_in = _rows(source) if source is not None else 0
        try:
            if step.transform.scope == "row" and source is not None:
                parts, detail = self._row_batches(step, source, rows_in, target, ctx, bar)
                frame = pl.concat([pl.scan_parquet(p) for p in parts], how="diagonal_relaxed")
            else:
                bar.start(step.label, 1)
                empty = pl.LazyFrame()
                frame = step.transform(pl.scan_parquet(source) if source else empty, ctx)
                detail = {"batches": 1, "reused_batches": 0}
            result = frame.collect()
        except WorkbenchError as exc:
            raise PipelineError(f"{step.label}: {exc}") from exc
        except Exception as exc:
            raise PipelineError(f"{step.label} failed: {type(exc).__name__}: {exc}") from exc
        dropped_rows = result.filter(pl.col(DROP).is_not_null()) if DROP in result.columns else None
        kept = result.filter(pl.col(DROP).is_null()).drop(DROP) if DROP in result.columns else result
        try:
            schema.validate(kept, kind, where=f"output of {step.label}", ids=False)
            kept = schema.with_ids(kept, kind)
        except WorkbenchError as exc:
            raise PipelineError(str(exc)) from exc
        dropped: dict[str, int] = {}
        if dropped_rows is not None and dropped_rows.height:
            counts = dropped_rows.group_by(DROP).len().sort("len", descending=True)
            dropped = dict(zip(counts[DROP].to_list(), counts["len"].to_list(), strict=True))
        unexplained = rows_in - kept.height - sum(dropped.values())
        if unexplained > 0 and source is not None:
            dropped[f"{step.name}: not kept"] = unexplained
        detail.update(_call_detail(ctx))
        if "report" in ctx.notes:  # a step's own statistics (selection, dedup, length bias)
            detail["report"] = ctx.notes["report"]
        meta = {"rows_in": rows_in, "rows_out": kept.height, "dropped": dropped, "detail": detail}
        with atomic_dir(target) as tmp:
            kept.write_parquet(tmp / DATA_FILE)
            if dropped_rows is not None and dropped_rows.height:
                dropped_rows.write_parquet(tmp / DROPPED_FILE)
            (tmp / META_FILE).write_text(json.dumps(meta))
        shutil.rmtree(target.with_name(target.name + ".partial"), ignore_errors=True)
        bar.done(f"{step.label}: {rows_in} → {kept.height} rows")
        status = "resumed" if detail.get("reused_batches") else "ran"
        return StepResult(step.index, step.name, status, rows_in, kept.height, dropped,
                          time.monotonic() - started, target, detail)

    def _row_batches(self, step: Step, source: Path, rows: int, target: Path, ctx: Context,
                     bar: Any) -> tuple[list[Path], dict[str, Any]]:
        size = self.pipeline.spec.batch_size
        count = max(1, -(-rows // size))
        partial = target.with_name(target.name + ".partial")
        partial.mkdir(parents=True, exist_ok=True)
        bar.start(step.label, count)
        parts, reused = [], 0
        for index in range(count):
            part = partial / f"batch-{index:06d}.parquet"
            if part.exists():
                reused += 1
            else:
                batch = pl.scan_parquet(source).slice(index * size, size).collect()
                out = apply_batch(step.transform, batch, ctx)
                with atomic_file(part) as tmp:
                    out.write_parquet(tmp)
            parts.append(part)
            bar.advance()
        return parts, {"batches": count, "reused_batches": reused}

    def _publish(self, run_id: str, key: str, kind: str, data: Path, input_lineage: dict,
                 results: list[StepResult]) -> tuple[DatasetVersion | None, bool]:
        spec = self.pipeline.spec
        if not spec.output:
            return None, False
        key = f"{key[:32]}:{file_sha256(data)[:32]}"  # same configs and same rows
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
        return self.ws.write_dataset(spec.output, pl.read_parquet(data), kind, lineage,
                                     run_key=key), False


def _files_digest(step: Step, pipeline: Pipeline) -> list[str]:
    """The content hash of files a step reads by itself (a config's `content_digest`, e.g.
    the documents of `agentinstruct`), so an edited file re-runs the step."""
    digest = getattr(step.transform.config, "content_digest", None)
    if not callable(digest):
        return []
    try:
        return [digest(pipeline.base_dir)]
    except WorkbenchError as exc:
        raise PipelineError(f"{step.label}: {exc}") from exc


def _call_detail(ctx: Context) -> dict[str, Any]:
    """What a step noted for the run log: model-call counts, errors by kind (count and first
    message), fields nulled or samples removed by reason (`nulled`), and a step's own
    `report` (e.g. statistics a method computes)."""
    detail: dict[str, Any] = {}
    calls = ctx.notes.get("calls") or []
    if calls:
        detail["model_calls"] = {k: sum(c[k] for c in calls) for k in calls[0]}
    for key in ("errors", "nulled", "report"):
        if ctx.notes.get(key):
            detail[key] = ctx.notes[key]
    return detail


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


__all__ = ["Runner", "RunResult", "StepResult", "run_pipeline", "InputError"]
