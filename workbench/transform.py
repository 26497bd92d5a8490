"""What a transform is: a validated config plus one function from frame to frame.

Transforms mark rows they drop with a `_drop_reason` column instead of filtering them out;
the executor removes those rows, counts them per reason and keeps them for inspection. That
keeps every transform's bookkeeping out of its code.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, get_type_hints

import polars as pl
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from workbench.models.base import Backend
    from workbench.models.cache import CallCache
    from workbench.workspace import Workspace

DROP = "_drop_reason"
QUARANTINED = "model call failed"  # drop reason prefix of rows whose model call failed
Scope = Literal["row", "global"]


class StepConfig(BaseModel):
    """Base of every transform config: frozen, and unknown options are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class Context:
    """What a running step may use: seed, workspace, models by name, a place to note counts."""

    seed: int = 0
    workspace: Workspace | None = None
    model_loader: Callable[[str], Backend] | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def call_cache(self) -> CallCache:
        if self.workspace is None:
            raise RuntimeError("this context has no workspace for the call cache")
        return self.workspace.call_cache()

    def model(self, name: str = "default") -> Backend:
        if self.model_loader is None:
            raise RuntimeError("this context has no models configured")
        return self.model_loader(name)


class Transform(Protocol):
    name: ClassVar[str]
    consumes: ClassVar[str]  # a kind, or "any"
    produces: ClassVar[str]  # a kind, or "same"
    scope: ClassVar[Scope]  # "row": runs batch by batch; "global": sees the whole dataset
    Config: ClassVar[type[StepConfig]]
    config: StepConfig

    def __call__(self, frame: pl.LazyFrame, ctx: Context) -> pl.LazyFrame: ...

    def output_kind(self, input_kind: str) -> str: ...

    def models(self) -> dict[str, str]: ...


def transform(
    name: str,
    *,
    consumes: str = "any",
    produces: str = "same",
    scope: Scope = "row",
    needs: tuple[str, ...] = (),
    config: type[StepConfig] | None = None,
) -> Callable[[Callable[..., pl.LazyFrame]], type]:
    """Turn `fn(frame, config, ctx) -> frame` into a registered Transform class.

    The config class is `config`, or else read from the annotation of the function's second
    parameter (which must then be importable from the function's module). A
    config with a `kind` field may declare the output kind (for `sql`, `rename`, ...), and
    fields named `model` or ending in `_model` name the pipeline models the step uses, and
    `needs` lists the backend capabilities it calls (checked before anything runs).
    """
    from workbench.registry import register

    def wrap(fn: Callable[..., pl.LazyFrame]) -> type:
        config_cls = config or get_type_hints(fn)[list(inspect.signature(fn).parameters)[1]]

        def __init__(self: Any, config: StepConfig | dict[str, Any] | None = None) -> None:
            if not isinstance(config, config_cls):
                config = config_cls.model_validate(config or {})
            self.config = config

        def __call__(self: Any, frame: pl.LazyFrame, ctx: Context) -> pl.LazyFrame:
            return fn(frame, self.config, ctx)

        def output_kind(self: Any, input_kind: str) -> str:
            declared = getattr(self.config, "kind", None)
            if declared:
                return declared
            return input_kind if produces == "same" else produces

        def models(self: Any) -> dict[str, str]:
            return {
                key: value
                for key, value in self.config.model_dump().items()
                if (key == "model" or key.endswith("_model")) and isinstance(value, str)
            }

        cls = type(
            fn.__name__,
            (),
            {
                "name": name,
                "consumes": consumes,
                "produces": produces,
                "scope": scope,
                "needs": needs,
                "Config": config_cls,
                "__init__": __init__,
                "__call__": __call__,
                "output_kind": output_kind,
                "models": models,
                "__doc__": fn.__doc__,
                "__module__": fn.__module__,
                "function": staticmethod(fn),
            },
        )
        register(cls)
        return cls

    return wrap
