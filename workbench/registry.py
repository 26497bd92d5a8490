"""Transforms by name. Built-ins and plugins come from the `workbench.transforms` entry points,
so the CLI and the runner never import a method module by name."""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points
from typing import Any

from workbench.errors import PipelineError

_REGISTRY: dict[str, type] = {}
_LOADED = False


def register(cls: type) -> type:
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing.__module__ != cls.__module__:
        raise PipelineError(f"transform name {cls.name!r} is registered twice "
                            f"({existing.__module__} and {cls.__module__})")
    _REGISTRY[cls.name] = cls
    return cls


def _load_package(package_name: str) -> None:
    package = importlib.import_module(package_name)
    for info in pkgutil.iter_modules(getattr(package, "__path__", []), package_name + "."):
        importlib.import_module(info.name)


def load_all() -> dict[str, type]:
    global _LOADED
    if not _LOADED:
        names = {ep.value for ep in entry_points(group="workbench.transforms")}
        names.add("transforms")  # the built-in library, also when running from a source tree
        for name in sorted(names):
            _load_package(name)
        _LOADED = True
    return dict(_REGISTRY)


def get(name: str) -> type:
    registry = load_all()
    if name not in registry:
        raise PipelineError(f"unknown step {name!r} (known: {', '.join(sorted(registry))})")
    return registry[name]


def describe() -> list[dict[str, Any]]:
    """Each transform's declared contract (for `workbench transforms`): name, kinds, scope,
    backend capabilities, the fields that name models, which declarations its options decide
    (`StepConfig` hooks it overrides), whether its kept rows keep their content (and ids),
    whether it is stateless (batches may run together), and its config fields (with
    `choices` where a field declares the values it knows of)."""
    from workbench.transform import declared_hooks, model_fields

    out = []
    for name, cls in sorted(load_all().items()):
        fields = []
        for field_name, info in cls.Config.model_fields.items():
            entry = {
                "name": field_name,
                "type": _type_name(info.annotation),
                "required": info.is_required(),
                "default": None if info.is_required() else _jsonable(info.get_default(call_default_factory=True)),
                "description": info.description or "",
            }
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            if "choices" in extra:  # the values a field knows of (e.g. agentinstruct's skills)
                entry["choices"] = _jsonable(extra["choices"])
            fields.append(entry)
        doc = (cls.__doc__ or "").strip().splitlines()
        out.append({
            "name": name,
            "consumes": cls.consumes,
            "produces": cls.produces,
            "scope": cls.scope,
            "needs": list(cls.needs),
            "models": model_fields(cls.Config),
            "decided_by_options": declared_hooks(cls.Config),
            "keeps_content": bool(getattr(cls, "keeps_content", False)),
            "stateless": bool(getattr(cls, "stateless", False)),
            "summary": doc[0] if doc else "",
            "fields": fields,
        })
    return out


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if not getattr(annotation, "__args__", None) else None
    return text or str(annotation).replace("typing.", "")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)
