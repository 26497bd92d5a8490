"""Model backends behind one interface (see base.py), loaded lazily by name.

Nothing heavy is imported here: a backend's module (and torch, vLLM or httpx with it) is
imported only when a pipeline asks for that backend.
"""

from __future__ import annotations

import json
import os
import threading
from typing import TYPE_CHECKING, Any

from workbench.models.backends import BACKENDS as BACKENDS  # the one table of backends
from workbench.models.backends import backend, backend_class

if TYPE_CHECKING:
    from workbench.models.base import Backend
    from workbench.models.spec import ModelSpec

# idle OpenMP threads sleep instead of spinning on a core a neighbour needs (before torch
# loads; see cpu_threads)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_loaded: dict[str, Backend] = {}
_lock = threading.Lock()


def refuse_if_models_off(what: str) -> None:
    """Raise when `WORKBENCH_NO_MODELS` is set: the fast test tier sets it, so a test that
    loads a model fails there at once, naming the model, instead of slowing the tier."""
    if os.environ.get("WORKBENCH_NO_MODELS"):
        raise RuntimeError(f"loading {what}: model loads are off (WORKBENCH_NO_MODELS is set, as "
                           "in `make test-fast`; mark the test `slow`)")


def load_backend(spec: ModelSpec) -> Backend:
    """The backend for `spec`, loaded once per process: steps sharing a model share it."""
    key = _spec_key(spec)
    with _lock:
        if key not in _loaded:
            if backend(spec.backend).loads_model:
                refuse_if_models_off(f"{spec.backend} model {spec.model!r}")
            cls = backend_class(spec.backend)
            try:
                _loaded[key] = cls(spec.model, **spec.options)
            except TypeError as error:
                if "unexpected keyword" in str(error):
                    raise ValueError(f"{spec.backend} backend: {error}") from error
                raise
        return _loaded[key]


def provide(backend: Backend, model: str, backend_name: str = "transformers") -> dict[str, Any]:
    """Serve an already-built backend object for a `models:` entry, returned here, so that a
    notebook or test can run pipelines on a backend it built or scripted itself."""
    from workbench.models.spec import ModelSpec

    spec = ModelSpec(backend=backend_name, model=model)
    with _lock:
        _loaded[_spec_key(spec)] = backend
    return spec.model_dump()


def withdraw(entry: dict[str, Any]) -> None:
    """Stop serving what `provide` served for this `models:` entry."""
    from workbench.models.spec import ModelSpec

    with _lock:
        _loaded.pop(_spec_key(ModelSpec.model_validate(entry)), None)


def unload_all() -> None:
    """Forget loaded backends (their memory is freed once nothing else refers to them)."""
    with _lock:
        _loaded.clear()


def _spec_key(spec: Any) -> str:
    return json.dumps(
        {"backend": spec.backend, "model": spec.model, "options": spec.options},
        sort_keys=True,
        default=str,
    )
