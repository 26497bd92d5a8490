"""What a transform is: a validated config plus one function from frame to frame.

Transforms mark rows they drop with a `_drop_reason` column instead of filtering them out;
the executor removes those rows, counts them per reason and keeps them for inspection. That
keeps every transform's bookkeeping out of its code.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    ClassVar,
    Literal,
    Protocol,
    get_args,
    get_type_hints,
)

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from workbench.engine.crashpoints import crashpoint

if TYPE_CHECKING:
    from workbench.engine.positional import BatchStream
    from workbench.engine.source import Source
    from workbench.models.base import Backend
    from workbench.models.breaker import Breaker
    from workbench.models.cache import CallCache
    from workbench.workspace import Workspace

    # what a transform returns: a LazyFrame, or (global steps only) a BatchStream that
    # attaches per-row values to the input as it streams past; executors accept both
    StepOutput = pl.LazyFrame | BatchStream

DROP = "_drop_reason"
QUARANTINED = "model call failed"  # drop reason prefix of rows whose model call failed
Scope = Literal["row", "global"]


class ModelRef:
    """Marks a config field whose value names a model under the pipeline's `models:`."""


ModelName = Annotated[str, ModelRef()]


class StepConfig(BaseModel):
    """Base of every transform config: frozen, and unknown options are errors.

    What a step declares beyond its decorator, when it depends on the step's options, it
    declares by overriding one of these methods (the defaults declare nothing more):
    `output_kind`, `accepted_kinds`, `capabilities`, `input_digest`. Fields typed
    `ModelName` name pipeline models. Nothing else is looked up on a config.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    def output_kind(self, input_kind: str) -> str | None:
        """The kind of the rows this step makes, when its options decide it."""
        return None

    def accepted_kinds(self) -> tuple[str, ...] | None:
        """The kinds this step takes, when its options decide them."""
        return None

    def capabilities(self) -> tuple[str, ...] | None:
        """The backend capabilities this step calls, when its options decide them."""
        return None

    def input_digest(self, base_dir: Path | None) -> str | None:
        """A hash of files the step reads by itself, so editing them re-runs the step."""
        return None

    def named_models(self) -> dict[str, str]:
        """Field name -> model name, for every set field typed `ModelName`."""
        return {name: getattr(self, name) for name in model_fields(type(self))
                if isinstance(getattr(self, name), str)}


HOOKS = ("output_kind", "accepted_kinds", "capabilities", "input_digest")


def model_fields(config: type[StepConfig]) -> list[str]:
    """The config's fields typed `ModelName` (or `ModelName | None`)."""
    return [name for name, info in config.model_fields.items() if _names_model(info)]


def declared_hooks(config: type[StepConfig]) -> list[str]:
    """The `StepConfig` methods this config overrides (what its options decide)."""
    return [hook for hook in HOOKS if getattr(config, hook) is not getattr(StepConfig, hook)]


def _names_model(info: Any) -> bool:
    """Whether a field is typed `ModelName` (or `ModelName | None`)."""
    if any(isinstance(m, ModelRef) for m in info.metadata):
        return True
    return any(isinstance(m, ModelRef) for arg in get_args(info.annotation)
               for m in getattr(arg, "__metadata__", ()))


class ModelStep(StepConfig):
    """The options every model step shares."""

    model: ModelName = Field("default", description="a name under the pipeline's `models:`")
    batch_size: int = Field(8, ge=1, description="items per model call")


class Seeded(StepConfig):
    """A step with its own seed, defaulting to the pipeline's."""

    seed: int | None = Field(None, description="defaults to the pipeline seed")

    def seed_or(self, ctx: Context) -> int:
        return ctx.seed if self.seed is None else self.seed


@dataclass
class Context:
    """What a running step may use: seed, workspace, models by name, a place to note counts.

    `step` labels the running step (quarantine entries, errors); `breaker` stops the run when
    a step's model calls keep failing; `base_dir` is where relative paths in step options
    resolve (the pipeline YAML's folder). A global step may read its input's Parquet files
    (`input_files`) directly, e.g. in DuckDB, and spill to `temp_dir` under `memory_limit`.
    `input` is the same rows as a `source.Source`, which may be a view of another step's
    files: a `keeps_content` global step gets only that (no `input_files`) when it is.
    """

    seed: int = 0
    workspace: Workspace | None = None
    model_loader: Callable[[str], Backend] | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    base_dir: Path | None = None
    step: str = ""
    breaker: Breaker | None = None
    input_files: list[Path] | None = None
    input: Source | None = None
    temp_dir: Path | None = None
    memory_limit: str = "1GB"
    progress: Callable[[int, int, int], None] | None = None  # (items done, total, tokens)

    def call_cache(self) -> CallCache:
        if self.workspace is None:
            raise RuntimeError("this context has no workspace for the call cache")
        return self.workspace.call_cache()

    def model(self, name: str = "default") -> Backend:
        if self.model_loader is None:
            raise RuntimeError("this context has no models configured")
        return self.model_loader(name)

    def path(self, value: str | Path) -> Path:
        """A path from a step option: relative ones resolve against the pipeline's folder."""
        path = Path(value).expanduser()
        return path if path.is_absolute() or self.base_dir is None else self.base_dir / path

    def call(
        self,
        model: str,
        capability: str,
        inputs: Sequence[Any],
        params: Any = None,
        *,
        row_ids: Sequence[str] | None = None,
        sample_ids: Sequence[str] | None = None,
        batch_size: int = 16,
    ) -> list[Any]:
        """Model results for every input through the call cache; None where an item failed.

        Failures are quarantined under this step and row id, counted by kind in the run log,
        and fed to the failure breaker. `sample_ids` make identical sampled inputs independent
        samples (Magpie sends one template thousands of times).
        """
        from workbench.models.cache import CallStats, cached_call
        from workbench.models.meter import metering

        stats = CallStats()
        position = [0, len(inputs), 0]  # items done, total, tokens of the running batch
        progress = self.progress
        reports = [0]

        def on_batch(done: int, total: int) -> None:
            reports[0] += 1
            if reports[0] > 1:  # the first report is of cache hits; later ones follow a commit
                crashpoint("call.batch_committed")
            position[:] = [done, total, 0]
            if progress is not None:
                progress(done, total, stats.tokens)

        def on_tokens(tokens: int) -> None:
            position[2] += tokens
            if progress is not None:
                progress(position[0], position[1], stats.tokens + position[2])

        try:
            with metering(on_tokens if progress is not None else None):
                results, _ = cached_call(
                    self.call_cache(), self.model(model), capability, inputs, params,
                    batch_size=batch_size, step=self.step, row_ids=row_ids,
                    sample_ids=sample_ids, breaker=self.breaker, stats=stats,
                    on_batch=on_batch)
        finally:  # counted also when the breaker stops the step
            self.notes.setdefault("calls", []).append(stats.counts())
            errors = self.notes.setdefault("errors", {})
            for kind, entry in stats.errors.items():
                seen = errors.setdefault(kind, {"count": 0, "first": entry["first"]})
                seen["count"] += entry["count"]
        return results

    def report(self, values: dict[str, Any]) -> None:
        """The step's own report (shown by `workbench show --log` and kept in meta.json); a
        later batch's report replaces an earlier one's."""
        self.notes["report"] = values

    def report_counts(self, values: dict[str, Any]) -> None:
        """Counts for the step's report that add up over batches (and over calls within one):
        numbers add, nested dicts add key by key. A row step's per-batch `report` would
        keep only the last batch's; these land in the same report."""
        totals = self.notes.setdefault("totals", {})
        add_counts(totals, values)

    def count_nulled(self, reason: str, n: int = 1) -> None:
        """Count `n` fields set to null (or samples removed) for `reason`; the row is kept."""
        if n:
            nulled = self.notes.setdefault("nulled", {})
            nulled[reason] = nulled.get(reason, 0) + n

    def count_fallbacks(self, reason: str, fallen: int, scored: int) -> None:
        """Note that `fallen` of `scored` scores took a default value for `reason` (counted in
        the run log by reason); the breaker stops the step past `failures: max_fallback_rate`."""
        if fallen:
            counts = self.notes.setdefault("fallbacks", {})
            counts[reason] = counts.get(reason, 0) + fallen
        if self.breaker is not None:
            self.breaker.record_fallbacks(reason, fallen, scored)


def add_counts(into: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Add `values` into `into` in place: numbers add, dicts recurse, anything else replaces."""
    for key, value in values.items():
        seen = into.get(key)
        if isinstance(value, dict):
            into[key] = add_counts(dict(seen) if isinstance(seen, dict) else {}, value)
        elif (isinstance(value, (int, float)) and not isinstance(value, bool)
              and isinstance(seen, (int, float)) and not isinstance(seen, bool)):
            into[key] = seen + value
        else:
            into[key] = value
    return into


class Transform(Protocol):
    name: ClassVar[str]
    consumes: ClassVar[str]  # a kind, or "any"
    produces: ClassVar[str]  # a kind, or "same"
    scope: ClassVar[Scope]  # "row": runs batch by batch; "global": sees the whole dataset
    needs: ClassVar[tuple[str, ...]]  # backend capabilities it calls
    keeps_content: ClassVar[bool]  # kept rows keep their content columns, hence their ids
    stateless: ClassVar[bool]  # a row's output depends on that row alone; no model is called
    version: ClassVar[str | int | None]  # bumped by hand for what code hashing cannot see
    Config: ClassVar[type[StepConfig]]
    config: StepConfig

    def __call__(self, frame: pl.LazyFrame, ctx: Context) -> StepOutput:
        """A LazyFrame, or (global steps only) a `positional.BatchStream`, which attaches
        per-row values to the input as it streams past; executors accept both."""

    def output_kind(self, input_kind: str) -> str: ...

    def models(self) -> dict[str, str]: ...


def transform(
    name: str,
    *,
    scope: Scope,
    consumes: str = "any",
    produces: str = "same",
    needs: tuple[str, ...] = (),
    config: type[StepConfig] | None = None,
    version: str | int | None = None,
    keeps_content: bool = False,
    stateless: bool = False,
) -> Callable[[Callable[..., StepOutput]], type]:
    """Turn `fn(frame, config, ctx) -> StepOutput` into a registered Transform class.

    `scope` has no default: a global step (dedup, selection) that forgot it would silently run
    per batch. The config class is `config`, or else read from the annotation of the
    function's second parameter (which must then be importable from the function's module).
    `consumes`, `produces` and `needs` (the backend capabilities it calls, checked before
    anything runs) hold for every option; a config whose options change them overrides
    `StepConfig`'s declared methods.
    Checkpoints key on the transform's code (see `code_fingerprint`); `version` adds what the
    code cannot show, e.g. a bump when a data file the method reads changes.
    `keeps_content=True` declares that every row the step keeps has exactly the content
    columns (`schema.CONTENT` of its kind) of the input row it came from: the step drops or
    reorders rows, or adds and changes other columns (scores, tags, a split). Its rows then
    keep their ids and are not hashed again (when its output kind is its input kind).
    `stateless=True` (row steps) declares that each output row depends on its input row
    alone and that no model is called: the runner may then run several batches in one call.
    """
    if scope not in ("row", "global"):
        raise ValueError(f"transform {name!r}: scope must be 'row' or 'global', not {scope!r}")
    if stateless and (scope != "row" or needs):
        raise ValueError(f"transform {name!r}: only a row step that calls no model is stateless")
    from workbench.registry import register

    def wrap(fn: Callable[..., StepOutput]) -> type:
        config_cls = config or get_type_hints(fn)[list(inspect.signature(fn).parameters)[1]]
        untyped = [f for f in config_cls.model_fields if (f == "model" or f.endswith("_model"))
                   and f not in model_fields(config_cls)]
        if untyped:  # it would name a model the runner never checks or loads
            raise TypeError(f"transform {name!r}: type the field {untyped[0]!r} ModelName "
                            "(from workbench.transform) so the pipeline checks the model it names")

        def __init__(self: Any, config: StepConfig | dict[str, Any] | None = None) -> None:
            if not isinstance(config, config_cls):
                config = config_cls.model_validate(config or {})
            self.config = config

        def __call__(self: Any, frame: pl.LazyFrame, ctx: Context) -> StepOutput:
            return fn(frame, self.config, ctx)

        def output_kind(self: Any, input_kind: str) -> str:
            declared = self.config.output_kind(input_kind)
            if declared:
                return declared
            return input_kind if produces == "same" else produces

        def models(self: Any) -> dict[str, str]:
            return self.config.named_models()

        cls = type(
            fn.__name__,
            (),
            {
                "name": name,
                "consumes": consumes,
                "produces": produces,
                "scope": scope,
                "needs": needs,
                "version": version,
                "keeps_content": keeps_content,
                "stateless": stateless,
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


def code_fingerprint(cls: type) -> str:
    """Hash of the source a transform runs: its module, the modules of the same top-level
    package that it uses directly (helpers, templates), and its declared `version`.

    Step checkpoints key on this, so an edited transform re-runs its step (and later ones)
    instead of serving rows its old code made.
    """
    module = sys.modules[cls.__module__]
    package = cls.__module__.split(".")[0]
    names = {cls.__module__}
    for value in vars(module).values():
        owner = value.__name__ if inspect.ismodule(value) else getattr(value, "__module__", None)
        if isinstance(owner, str) and owner.split(".")[0] == package and owner in sys.modules:
            names.add(owner)
    digest = hashlib.sha256(f"version={getattr(cls, 'version', None)!r}".encode())
    for name in sorted(names):
        source = getattr(sys.modules[name], "__file__", None)
        digest.update(name.encode() + b"\0")
        if source and Path(source).is_file():
            digest.update(Path(source).read_bytes())
    return digest.hexdigest()[:16]
