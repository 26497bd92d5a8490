"""The local executor: one streaming reader over the step's input, batches in order."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl

from workbench.engine.finalize import CHECK_EVERY
from workbench.engine.parts import prefetch
from workbench.engine.positional import BatchStream
from workbench.executors import (
    Progress,
    StepJob,
    run_batch,
    run_batches,
    run_batches_lazily,
    run_global,
)
from workbench.transform import Context


class LocalExecutor:
    name = "local"

    def map_row_batches(self, job: StepJob, done: set[int], make_context: Callable[[], Context],
                        bar: Progress) -> None:
        # Resumes start reading after the finished prefix; batches are done in order here,
        # `job.together` of them in one call where the step allows (one file for them).
        skip = 0
        while skip in done:
            skip += 1
            bar.advance()
        ctx = make_context()
        assert job.source is not None
        if job.together > 1 and job.view_kind is not None and not job.source.is_view:
            self._lazily(job, skip, done, ctx, bar)
            return
        rows = job.batch_rows
        reader = job.source.batches(rows * job.together, start=skip * rows,
                                    positions=job.view_kind is not None)
        if job.together > 1:  # no model: read the next batches while these run
            reader = prefetch(reader)
        index = skip
        for chunk in reader:
            count = -(-chunk.height // rows)
            self._run(job, index, count, chunk, done, ctx)
            for _ in range(count):
                bar.advance()
            index += count

    @staticmethod
    def _run(job: StepJob, index: int, count: int, chunk: pl.DataFrame, done: set[int],
             ctx: Context) -> None:
        """Batches index..index+count-1 of `chunk`: together when none is done yet."""
        todo = [i for i in range(index, index + count) if i not in done]
        if count > 1 and len(todo) == count:
            run_batches(job, index, chunk, ctx)
            return
        rows = job.batch_rows
        for k in range(count):
            if index + k in todo:
                run_batch(job, index + k, chunk.slice(k * rows, rows), ctx)

    def _lazily(self, job: StepJob, skip: int, done: set[int], ctx: Context,
                bar: Progress) -> None:
        """A stateless step writing a view over plain files: each run of batches on a lazy
        scan (`run_batches_lazily`); every `CHECK_EVERY`-th run, or one the step changed,
        is read whole and checked (`thin`)."""
        assert job.source is not None
        total, rows = job.source.count(), job.batch_rows
        for call, index in enumerate(range(skip, job.batches, job.together)):
            count = min(job.together, job.batches - index)
            start = index * rows
            size = min(count * rows, total - start)
            fresh = count > 1 and not any(i in done for i in range(index, index + count))
            if not (fresh and call % CHECK_EVERY and
                    run_batches_lazily(job, index, start, size, ctx)):
                chunk = job.source.read_rows(start, size, positions=True)
                self._run(job, index, count, chunk, done, ctx)
            for _ in range(count):
                bar.advance()

    def run_global(self, job: StepJob,
                   make_context: Callable[[], Context]) -> list[Path] | BatchStream:
        return run_global(job, make_context())

    def close(self) -> None:
        pass
