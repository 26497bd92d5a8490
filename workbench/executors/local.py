"""The local executor: one streaming reader over the step's input, batches in order."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from workbench.executors import Progress, StepJob, run_batch, run_batches, run_global
from workbench.parts import prefetch
from workbench.positional import BatchStream
from workbench.transform import Context


class LocalExecutor:
    name = "local"

    def map_row_batches(self, job: StepJob, done: set[int], make_context: Callable[[], Context],
                        bar: Progress) -> None:
        # Resumes start reading after the finished prefix; batches are done in order here,
        # `job.together` of them in one call where the step allows (each still its own file).
        skip = 0
        while skip in done:
            skip += 1
            bar.advance()
        ctx = make_context()
        assert job.source is not None
        rows = job.batch_rows
        reader = job.source.batches(rows * job.together, start=skip * rows,
                                    positions=job.view_kind is not None)
        if job.together > 1:  # no model: read the next batches while these run
            reader = prefetch(reader)
        index = skip
        for chunk in reader:
            count = -(-chunk.height // rows)
            todo = [i for i in range(index, index + count) if i not in done]
            if count > 1 and len(todo) == count:
                run_batches(job, index, chunk, ctx)
            else:
                for k in range(count):
                    if index + k in todo:
                        run_batch(job, index + k, chunk.slice(k * rows, rows), ctx)
            for _ in range(count):
                bar.advance()
            index += count

    def run_global(self, job: StepJob,
                   make_context: Callable[[], Context]) -> list[Path] | BatchStream:
        return run_global(job, make_context())

    def close(self) -> None:
        pass
