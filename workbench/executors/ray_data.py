"""The Ray Data executor: a step's unfinished batch numbers flow through `map_batches`.

Workers read their batch straight from the step's input files and write the result to the
checkpoint store (so both must be on storage the cluster shares), which is what makes a
killed run resume from finished batches exactly as locally. Steps with a model run on an
actor pool, one model per actor; plain steps run as tasks. Only batch numbers and counts
travel through Ray's object store.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workbench.engine.positional import BatchStream
from workbench.errors import PipelineError, WorkbenchError
from workbench.executors import Progress, StepJob, new_context, run_batch, run_global
from workbench.transform import Context

INSTALL_HINT = ("--executor ray needs Ray Data: pip install 'preference-workbench[ray]' "
                "(or pip install 'ray[data]')")


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise PipelineError(INSTALL_HINT) from None
    return ray


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 actors: int | None = None) -> None:
        self.ray = _import_ray()
        self.actors = actors
        self.started_here = not self.ray.is_initialized()
        if self.started_here:
            options: dict[str, Any] = {"address": address, "include_dashboard": False,
                                       "log_to_driver": False, "configure_logging": False}
            if address is None:  # a local cluster: only batch numbers go through its store
                options.update(num_cpus=num_cpus, object_store_memory=256 * 1024 * 1024)
            self.ray.init(**options)
        self.ray.data.DataContext.get_current().enable_progress_bars = False

    def map_row_batches(self, job: StepJob, done: set[int], make_context: Callable[[], Context],
                        bar: Progress) -> None:
        for _ in done:
            bar.advance()
        todo = [i for i in range(job.batches) if i not in done]
        if not todo:
            return
        data = self.ray.data.from_items([{"index": i} for i in todo],
                                        override_num_blocks=len(todo))
        if job.models:
            gpus = max(_gpus(spec) for spec in job.models.values())
            cpus = 0 if gpus else 1
            pool = self.actors or _pool_size(self.ray, gpus, cpus, len(todo))
            mapped = data.map_batches(_ModelWorker, fn_constructor_args=(job,), batch_size=1,
                                      concurrency=pool, num_cpus=cpus, num_gpus=gpus)
        else:
            mapped = data.map_batches(_run_plain, fn_args=(job,), batch_size=1, num_cpus=1)
        try:
            for _ in mapped.iter_rows():
                bar.advance()
        except Exception as exc:
            raise _cause(exc) from None

    def run_global(self, job: StepJob,
                   make_context: Callable[[], Context]) -> list[Path] | BatchStream:
        """On the driver: a global step reads all of its input (DuckDB, FAISS, polars)."""
        return run_global(job, make_context())

    def close(self) -> None:
        if self.started_here and self.ray.is_initialized():
            self.ray.shutdown()


def _gpus(spec: Any) -> float:
    """GPUs one model needs, from its options: vLLM's tensor parallelism, a CUDA device."""
    options = spec.options or {}
    if spec.backend == "vllm":
        return float(options.get("tensor_parallel_size", 1))
    device = str(options.get("device", ""))
    return 1.0 if device.startswith("cuda") else 0.0


def _pool_size(ray: Any, gpus: float, cpus: float, batches: int) -> int:
    available = ray.cluster_resources()
    if gpus:
        fit = int(available.get("GPU", 0) // gpus)
    else:
        fit = int(available.get("CPU", 1) // max(cpus, 1))
    return max(1, min(fit, batches))


def _batch(job: StepJob, index: int) -> Any:
    start, rows = job.rows(index)
    assert job.source is not None
    return job.source.read_rows(start, rows, positions=job.view_kind is not None)


def _worker_context(job: StepJob) -> Context:
    from workbench.models import load_backend
    from workbench.models.breaker import Breaker

    loaded: dict[str, Any] = {}

    def model(name: str) -> Any:
        if name not in loaded:
            loaded[name] = load_backend(job.models[name])
        return loaded[name]

    return new_context(job, model, Breaker(job.failures))


def _run_plain(batch: dict[str, Any], job: StepJob) -> dict[str, Any]:
    ctx = _worker_context(job)
    for index in batch["index"]:
        run_batch(job, int(index), _batch(job, int(index)), ctx)
    return {"index": batch["index"]}


class _ModelWorker:
    """One per actor: loads its models once, with torch threads matched to its CPUs."""

    def __init__(self, job: StepJob) -> None:
        import ray

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU") or 1
        os.environ.setdefault("OMP_NUM_THREADS", str(int(cpus)))
        try:
            import torch

            torch.set_num_threads(max(1, int(cpus)))
        except ImportError:
            pass
        self.job = job
        self.ctx = _worker_context(job)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        for index in batch["index"]:
            run_batch(self.job, int(index), _batch(self.job, int(index)), self.ctx)
        return {"index": batch["index"]}


def _cause(exc: BaseException) -> BaseException:
    """The workbench error a worker raised, out of Ray's wrappers, else the Ray error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, WorkbenchError):
            return current
        cause = getattr(current, "cause", None)
        current = cause if isinstance(cause, BaseException) else (
            current.__cause__ or current.__context__)
    return exc

