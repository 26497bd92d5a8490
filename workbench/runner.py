"""A run: resolve the input, run each step through its checkpoint, publish the output.

Each step's output is a checkpoint keyed on the input and the configs of all steps up to it
(`step_keys`), so a re-run skips finished steps and a changed config re-runs that step and
later ones only. `run_steps` runs one step on an executor (`workbench.executors`: local or
Ray); `run_input` stages the input; `run_log` records the run; `run_progress` shows it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.engine.checkpoints import CheckpointStore
from workbench.engine.run_checks import CallsAllFailed, empty_output
from workbench.engine.run_input import RunInput, resolve_input
from workbench.engine.run_log import RunLog
from workbench.engine.run_progress import step_bars
from workbench.engine.run_steps import StepResult, StepRunner
from workbench.engine.source import Source, materialize
from workbench.engine.step_keys import chain_key, first_key, step_key
from workbench.errors import InputError, PipelineError
from workbench.executors import Executor, get_executor
from workbench.pipeline import Pipeline, check_kinds
from workbench.store.atomic import file_lock, file_sha256
from workbench.workspace import DatasetVersion, Workspace


@dataclass
class RunResult:
    run_id: str
    output: DatasetVersion | None
    steps: list[StepResult]
    up_to_date: bool
    final_checkpoint: Path


class Runner:
    def __init__(
        self,
        pipeline: Pipeline,
        workspace: Workspace,
        limit: int | None = None,
        progress: bool | str = True,
        retry_failed: bool = False,
        fresh: bool = False,
        executor: Executor | str = "local",
        allow_empty: bool = False,
        lineage: dict[str, Any] | None = None,
    ) -> None:
        """`progress`: True or "bar" (rich), "plain" (a line every few seconds), False/"off".
        `lineage`: what the caller adds to the published version's lineage (a loop names the
        policy that generated the rows); it enters every checkpoint key too, so rows made
        for one policy are never reused for another under the same model path."""
        self.pipeline = pipeline
        self.lineage = lineage or {}
        self.allow_empty = allow_empty or pipeline.spec.allow_empty  # publish 0 rows anyway
        self.ws = workspace
        self.limit = limit
        self.progress = {True: "bar", False: "off"}.get(progress, progress)  # type: ignore[call-overload]
        self.retry_failed = retry_failed
        self.fresh = fresh  # ignore every checkpoint (model calls still come from the cache)
        self.root = workspace.cache_dir / "checkpoints" / pipeline.spec.name
        self.store = CheckpointStore(self.root)
        self.executor = get_executor(executor) if isinstance(executor, str) else executor
        self._models: dict[str, Any] = {}

    def _model(self, name: str) -> Any:
        if name not in self._models:
            if name not in self.pipeline.spec.models:
                raise PipelineError(f"no model {name!r} under `models:`")
            from workbench.models import load_backend

            self._models[name] = load_backend(self.pipeline.spec.models[name])
        return self._models[name]

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
        given = resolve_input(self.pipeline, self.ws, self.store, self.limit)
        kinds = check_kinds(self.pipeline, given.kind)
        log = RunLog(self.ws, self.pipeline)
        steps = StepRunner(self.pipeline, self.ws, self.store, self.executor, self._model, log,
                           self.retry_failed)
        key = first_key(given.fingerprint, spec.seed)
        if self.lineage:  # left out otherwise, so existing keys stay what they were
            key = chain_key(key, self.lineage)
        current = Source.of(given.path) if given.path is not None else None
        results: list[StepResult] = []
        rerun = self.fresh
        try:
            with step_bars(self.progress) as bar:
                for step, kind, given_kind in zip(self.pipeline.steps, kinds,
                                                  [given.kind, *kinds[:-1]], strict=True):
                    key = step_key(key, step, self.pipeline)
                    result = steps.run(step, kind, current, key, bar, force=rerun,
                                       input_kind=given_kind)
                    rerun = rerun or result.status != "cached"  # later checkpoints are stale
                    log.step(step.index, result.as_log())
                    results.append(result)
                    current = result.source
            if spec.output and not results[-1].rows_out and not self.allow_empty:
                raise PipelineError(empty_output(self.pipeline, results))
            assert current is not None
            if not spec.output:  # the last checkpoint is what the run leaves: as files
                current = materialize(current)
            output, up_to_date = self._publish(log.run_id, key, kinds[-1], current, given,
                                               results)
        except BaseException as exc:
            log.failed(exc)
            raise
        finally:
            self.executor.close()
        log.finished(output)
        return RunResult(log.run_id, output, results, up_to_date, results[-1].checkpoint)

    def _publish(self, run_id: str, key: str, kind: str, data: Source, given: RunInput,
                 results: list[StepResult]) -> tuple[DatasetVersion | None, bool]:
        """The output as a new dataset version with its lineage; the same configs over the
        same rows reuse the version an earlier run published (`up_to_date`)."""
        spec = self.pipeline.spec
        if not spec.output:
            return None, False
        files = [*data.rows, *data.base]  # a view's rows are its positions over its base
        digest = hashlib.sha256("".join(file_sha256(f) for f in files).encode())
        key = f"{key[:32]}:{digest.hexdigest()[:32]}"  # same configs and same rows
        existing = self.ws.find_by_run_key(spec.output, key)
        if existing is not None:
            return existing, True
        lineage = {
            "pipeline": {"name": spec.name, "source": self.pipeline.source,
                         "yaml": self.pipeline.yaml_text, "seed": spec.seed},
            "run_id": run_id,
            "input": given.lineage,
            "steps": [{"index": r.index, "step": r.step, "rows_in": r.rows_in,
                       "rows_out": r.rows_out, "dropped": r.dropped,
                       **({"report": r.detail["report"]} if "report" in r.detail else {})}
                      for r in results],
            "models": {n: m.model_dump() for n, m in spec.models.items()},
            **self.lineage,
        }
        return self.ws.publish_rows(spec.output, data, kind, lineage, run_key=key), False


def run_pipeline(pipeline: Pipeline, workspace: Workspace, **options: Any) -> RunResult:
    """Library entry point: what `workbench run` does, callable from a notebook."""
    return Runner(pipeline, workspace, **options).run()


__all__ = ["CallsAllFailed", "Runner", "RunResult", "StepResult", "run_pipeline",
           "InputError"]
