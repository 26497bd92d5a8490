"""The local executor: one streaming reader over the step's input, batches in order."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from workbench import parts
from workbench.executors import Progress, StepJob, run_batch, run_global
from workbench.transform import Context


class LocalExecutor:
    name = "local"

    def map_row_batches(self, job: StepJob, done: set[int], make_context: Callable[[], Context],
                        bar: Progress) -> None:
        # Resumes start reading after the finished prefix; batches are done in order here.
        skip = 0
        while skip in done:
            skip += 1
            bar.advance()
        ctx = make_context()
        reader = parts.exact_batches(
            parts.iter_batches(list(job.sources), job.batch_rows, start=skip * job.batch_rows),
            job.batch_rows)
        for index, batch in enumerate(reader, start=skip):
            if index not in done:
                run_batch(job, index, batch, ctx)
            bar.advance()

    def run_global(self, job: StepJob, make_context: Callable[[], Context]) -> list[Path]:
        return run_global(job, make_context())

    def close(self) -> None:
        pass
