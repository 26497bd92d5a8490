"""A run's entry in the workspace's run log: started, each step as it ends (also the step
that failed, with its model-call counts and errors by kind), finished or failed."""

from __future__ import annotations

import time
import uuid
from typing import Any

from workbench.engine.step_notes import StepNotes
from workbench.errors import WorkbenchError
from workbench.pipeline import Pipeline, Step
from workbench.workspace import DatasetVersion, Workspace


class RunLog:
    def __init__(self, ws: Workspace, pipeline: Pipeline) -> None:
        self.ws = ws
        self.run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        ws.start_run(self.run_id, pipeline.spec.name, pipeline.yaml_text)

    def step(self, index: int, entry: dict[str, Any]) -> None:
        self.ws.log_step(self.run_id, index, entry)

    def step_failed(self, step: Step, notes: StepNotes) -> None:
        self.step(step.index, {"step": step.name, "status": "failed", "dropped": {},
                               "detail": notes.detail()})

    def finished(self, output: DatasetVersion | None) -> None:
        self.ws.finish_run(self.run_id, "finished", output=output)

    def failed(self, exc: BaseException) -> None:
        message = str(exc) if isinstance(exc, WorkbenchError) else f"{type(exc).__name__}: {exc}"
        self.ws.finish_run(self.run_id, "failed", error=message)
