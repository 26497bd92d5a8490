"""Declarative model entries of a pipeline's `models:` section."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from workbench.models.backends import backend, backend_class


class ModelSpec(BaseModel):
    """`{backend, model, options}`; `model: embedded` is the bundled SmolLM2-135M-Instruct."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: str = "transformers"
    model: str = "embedded"
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("backend")
    @classmethod
    def _known(cls, name: str) -> str:
        backend(name)  # one table of names: workbench.models.backends
        return name


def check_options(spec: ModelSpec) -> None:
    """Check `options` against the backend's constructor before anything loads: an unknown
    name (a typo) or a value of the wrong type is a ValueError naming the option."""
    import inspect
    import typing

    from pydantic import TypeAdapter, ValidationError

    cls = backend_class(spec.backend)
    params = {name: p for name, p in inspect.signature(cls.__init__).parameters.items()
              if name not in ("self", "model") and p.kind is not p.VAR_KEYWORD}
    hints = typing.get_type_hints(cls.__init__)
    for name, value in spec.options.items():
        if name not in params:
            close = _closest(name, params)
            hint = f"; did you mean {close!r}?" if close else ""
            raise ValueError(f"backend {spec.backend!r} has no option {name!r}{hint} "
                             f"(options: {', '.join(params)})")
        if name in hints:
            try:
                TypeAdapter(hints[name]).validate_python(value, strict=False)
            except ValidationError as exc:
                problem = exc.errors()[0]["msg"]
                raise ValueError(f"option {name!r} = {value!r}: {problem}") from None


def _closest(name: str, known: Any) -> str | None:
    import difflib

    matches = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return matches[0] if matches else None
