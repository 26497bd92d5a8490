"""Pipeline specs: YAML (or the same structure in Python), validated as a whole before a run."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from workbench import registry
from workbench.errors import PipelineError
from workbench.formats import strict_yaml
from workbench.models.backends import BACKENDS
from workbench.models.breaker import FailurePolicy
from workbench.models.spec import ModelSpec, check_options


class PipelineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: int = 0
    input: str | None = None
    models: dict[str, ModelSpec] = Field(default_factory=dict)
    steps: list[dict[Any, Any]] = Field(min_length=1)
    output: str | None = None
    batch_size: int = Field(1000, ge=1, description="rows per batch for row-local steps")
    memory_limit: str = Field("1GB", pattern=r"^\s*\d+(\.\d+)?\s*[KMGT]i?B\s*$",
                              description="DuckDB memory for global SQL steps (they spill "
                                          "to disk beyond it), e.g. 1GB, 512MiB")
    failures: FailurePolicy = Field(default_factory=FailurePolicy,
                                    description="when failing model calls stop the run")
    allow_empty: bool = Field(False, description="publish `output` even when no row is left "
                                                 "(otherwise an empty result fails the run)")

    @field_validator("output")
    @classmethod
    def _output_name(cls, value: str | None) -> str | None:
        """Checked here, not only at publish, so a bad name fails before any step runs."""
        from workbench.workspace import NAME_RE

        if value is not None and not NAME_RE.fullmatch(value):
            raise ValueError(f"invalid dataset name {value!r}: use letters, digits, '_', '-', "
                             "'.' (max 128), starting with a letter or digit")
        return value


@dataclass(frozen=True)
class Step:
    index: int  # 1-based, as users count
    name: str
    transform: Any  # an instance of a registered Transform class

    @property
    def label(self) -> str:
        return f"step {self.index} ({self.name})"


@dataclass(frozen=True)
class Pipeline:
    spec: PipelineSpec
    steps: tuple[Step, ...]
    source: str  # file path, or "<python>"
    yaml_text: str
    base_dir: Path  # where relative paths (input, step options) resolve: the YAML's folder


def load_pipeline(path: str | Path) -> Pipeline:
    path = Path(path)
    data, text = strict_yaml.load_mapping_file(path, "pipeline", PipelineError, "name, steps, ...")
    return build_pipeline(data, source=str(path), yaml_text=text, base_dir=path.parent)


def build_pipeline(
    data: dict[str, Any],
    source: str = "<python>",
    yaml_text: str | None = None,
    base_dir: Path | None = None,
) -> Pipeline:
    """Validate names, options and model references of every step; raise one clear error."""
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as exc:
        raise PipelineError(f"{source}: {_first_error(exc)}") from None
    for model_name, model in spec.models.items():
        try:
            check_options(model)
        except ValueError as exc:
            raise PipelineError(f"{source}: models.{model_name}: {exc}") from None
    steps = []
    for index, entry in enumerate(spec.steps, start=1):
        if len(entry) != 1:
            raise PipelineError(
                f"{source}: step {index}: write each step as `- name: {{options}}`, got keys "
                f"{', '.join(entry) or 'none'}"
            )
        ((name, options),) = entry.items()
        if not isinstance(options, dict | None):
            raise PipelineError(f"{source}: step {index} ({name}): options must be a mapping, "
                                f"got {type(options).__name__}")
        for key in options or {}:
            if not isinstance(key, str):  # YAML 1.1 reads on/off/yes/no as booleans
                raise PipelineError(f"{source}: step {index} ({name}): option {key!r} is not a "
                                    "name (quote it if YAML read it as a boolean)")
        try:
            cls = registry.get(name)
        except PipelineError as exc:
            raise PipelineError(f"{source}: step {index}: {exc}") from None
        try:
            instance = cls(options or {})
        except ValidationError as exc:
            raise PipelineError(f"{source}: step {index} ({name}): {_first_error(exc)}") from None
        step = Step(index, name, instance)
        _check_models(source, spec, step)
        steps.append(step)
    return Pipeline(
        spec=spec,
        steps=tuple(steps),
        source=source,
        yaml_text=yaml_text if yaml_text is not None else yaml.safe_dump(data, sort_keys=False),
        base_dir=(base_dir or Path.cwd()).resolve(),
    )


def _check_models(source: str, spec: PipelineSpec, step: Step) -> None:
    needs = step.transform.config.capabilities() or step.transform.needs
    for field, model_name in step.transform.models().items():
        if model_name not in spec.models:
            known = ", ".join(spec.models) or "none defined"
            raise PipelineError(
                f"{source}: {step.label}: field {field!r}: no model {model_name!r} under "
                f"`models:` ({known})"
            )
        backend = spec.models[model_name].backend
        if backend == "vllm" and importlib.util.find_spec("vllm") is None:
            raise PipelineError(
                f"{source}: {step.label}: model {model_name!r} uses the vllm backend, which is "
                "not installed: pip install 'preference-workbench[gpu]' (needs a CUDA GPU)"
            )
        missing = [c for c in needs if c not in BACKENDS[backend].capabilities]
        if missing:
            raise PipelineError(
                f"{source}: {step.label}: model {model_name!r} uses backend {backend!r}, "
                f"which cannot do {', '.join(missing)}"
            )


def check_kinds(pipeline: Pipeline, input_kind: str | None) -> list[str]:
    """The kind after each step; a step that receives the wrong kind is an error."""
    kinds = []
    current = input_kind
    for step in pipeline.steps:
        consumes = consumed_kinds(step)
        if consumes == "none":
            if current is not None:
                raise PipelineError(
                    f"{pipeline.source}: {step.label} creates rows and takes no input, but it "
                    f"receives {current!r} rows"
                )
        elif current is None:
            raise PipelineError(
                f"{pipeline.source}: {step.label} needs input rows, but the pipeline has no "
                "`input` and no earlier step creates rows"
            )
        elif consumes != "any" and current not in consumes:
            raise PipelineError(
                f"{pipeline.source}: {step.label} consumes "
                f"{' or '.join(repr(k) for k in consumes)} rows but receives {current!r} rows"
            )
        current = step.transform.output_kind(current)
        kinds.append(current)
    return kinds


def consumed_kinds(step: Step) -> str | tuple[str, ...]:
    """"none", "any", or the kinds a step accepts: its config's `accepted_kinds()` (which may
    depend on its options, e.g. the `pairs` method) or else the transform's declared one."""
    declared = step.transform.config.accepted_kinds() or step.transform.consumes
    if declared in ("none", "any"):
        return str(declared)
    return (declared,) if isinstance(declared, str) else tuple(declared)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    message = err["msg"].removeprefix("Value error, ")
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"field {loc!r}: {message}{more}" if loc else f"{message}{more}"
