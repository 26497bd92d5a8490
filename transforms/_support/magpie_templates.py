"""The Magpie template registry: pre-query templates, stops and defaults per model family.

The registry is a data file (`data/magpie_templates.yaml`) that users extend with their own
file; the family of a model is found from how its chat template renders one user turn.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workbench.formats import strict_yaml

BUILTIN = Path(__file__).parent.parent / "data" / "magpie_templates.yaml"
PROBE = "XyZMagpieProbe"  # user text of the one-turn chat rendered for detection
VARIANTS = ("system_prompt", "math", "code", "translation")


@dataclass(frozen=True)
class Family:
    name: str
    pre_query_template: str
    stop_tokens: tuple[str, ...]
    assistant_stops: tuple[str, ...]
    mt_append_template: str
    markers: tuple[str, ...]
    defaults: dict[str, Any]
    variants: dict[str, str] = field(default_factory=dict)

    def prefix(self, variant: str | None = None) -> str:
        """The pre-query template, or one of its variants (system prompt, control task)."""
        if variant is None:
            return self.pre_query_template
        if variant not in self.variants:
            have = ", ".join(self.variants) or "none"
            raise ValueError(f"template family {self.name!r} has no {variant!r} variant "
                             f"(variants: {have})")
        return self.variants[variant]


def builtin_digest() -> str:
    return hashlib.sha256(BUILTIN.read_bytes()).hexdigest()[:12]


def load_registry(extra: Path | None = None) -> dict[str, Family]:
    """The built-in families, with a user's file merged over them (same keys)."""
    raw = _read(BUILTIN)
    if extra is not None:
        raw.update(_read(extra))
    families = {}
    for name, entry in raw.items():
        if "alias" in entry:  # e.g. llama3.3: llama3.1's template with other defaults
            base = raw.get(entry["alias"])
            if base is None:
                raise ValueError(f"magpie template {name!r}: alias {entry['alias']!r} is unknown")
            entry = {**base, **{k: v for k, v in entry.items() if k != "alias"}}
        families[name] = _family(name, entry)
    return families


def _read(path: Path) -> dict[str, Any]:
    try:
        data = strict_yaml.load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read magpie templates ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: magpie templates must be a mapping of family -> entry")
    return data


def _family(name: str, entry: dict[str, Any]) -> Family:
    required = ("pre_query_template", "stop_tokens")
    missing = [k for k in required if k not in entry]
    if missing:
        raise ValueError(f"magpie template {name!r}: missing {', '.join(missing)}")
    unknown = set(entry.get("variants") or {}) - set(VARIANTS)
    if unknown:
        raise ValueError(f"magpie template {name!r}: unknown variants {sorted(unknown)} "
                         f"(known: {', '.join(VARIANTS)})")
    return Family(
        name=name,
        pre_query_template=entry["pre_query_template"],
        stop_tokens=tuple(entry["stop_tokens"]),
        assistant_stops=tuple(entry.get("assistant_stops", ["assistant"])),
        mt_append_template=entry.get("mt_append_template") or "",
        markers=tuple(entry.get("markers", [])),
        defaults=dict(entry.get("defaults") or {}),
        variants=dict(entry.get("variants") or {}),
    )


def detect_family(rendered: str, families: dict[str, Family]) -> Family:
    """The family of a model, from how its chat template renders one user turn.

    Candidates are the families whose markers all appear in the rendering; among them the one
    whose pre-query template is the longest prefix of it wins, else the one with the most
    markers (Llama-3.1's system block makes its template no prefix; docs/methods.md §1.2).
    Ties keep the registry's order. Raises with what was seen when nothing fits.
    """
    head = rendered.split(PROBE)[0]
    candidates = [f for f in families.values() if all(m in rendered for m in f.markers)]
    prefixed = [f for f in candidates if head.startswith(f.pre_query_template)]
    if prefixed:
        return max(prefixed, key=lambda f: len(f.pre_query_template))
    marked = [f for f in candidates if f.markers]
    if marked:
        return max(marked, key=lambda f: len(f.markers))
    raise ValueError(
        f"cannot tell the Magpie template family of this model: one user turn renders as "
        f"{head[:200]!r}; set `template:` to one of {', '.join(sorted(families))} or add the "
        "family to a `templates_file:`"
    )
