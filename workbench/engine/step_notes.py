"""What a step reports besides rows (model calls, errors by kind, nulled fields, scores that
fell back to a default, a method's own report), as a typed value that batches merge and that
survives a trip through a worker or a file.

Transforms record through `Context` (`report`, `count_nulled`, `count_fallbacks`, `call`);
executors turn each batch's notes into
`StepNotes` and merge them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class StepNotes:
    model_calls: dict[str, int] = field(default_factory=dict)
    errors: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> {count, first}
    nulled: dict[str, int] = field(default_factory=dict)
    report: dict[str, Any] | None = None
    reused_calls: dict[str, int] = field(default_factory=dict)  # of batches a past run made
    fallbacks: dict[str, int] = field(default_factory=dict)  # scores that took a default
    totals: dict[str, Any] = field(default_factory=dict)  # report counts added over batches

    @classmethod
    def from_context(cls, notes: dict[str, Any]) -> StepNotes:
        calls: dict[str, int] = {}
        for entry in notes.get("calls") or []:
            for key, value in entry.items():
                calls[key] = calls.get(key, 0) + value
        errors = {kind: {"count": e["count"], "first": e["first"]}
                  for kind, e in (notes.get("errors") or {}).items()}
        return cls(calls, errors, dict(notes.get("nulled") or {}), notes.get("report"),
                   fallbacks=dict(notes.get("fallbacks") or {}),
                   totals=dict(notes.get("totals") or {}))

    def merge(self, other: StepNotes) -> StepNotes:
        """Counts add up (report totals too), the first error message of a kind stays, a
        later report wins."""
        from workbench.transform import add_counts

        calls = dict(self.model_calls)
        for key, value in other.model_calls.items():
            calls[key] = calls.get(key, 0) + value
        errors = {kind: dict(e) for kind, e in self.errors.items()}
        for kind, entry in other.errors.items():
            seen = errors.setdefault(kind, {"count": 0, "first": entry["first"]})
            seen["count"] += entry["count"]
        nulled = dict(self.nulled)
        for reason, n in other.nulled.items():
            nulled[reason] = nulled.get(reason, 0) + n
        reused = dict(self.reused_calls)
        for key, value in other.reused_calls.items():
            reused[key] = reused.get(key, 0) + value
        fallbacks = dict(self.fallbacks)
        for reason, n in other.fallbacks.items():
            fallbacks[reason] = fallbacks.get(reason, 0) + n
        totals = add_counts(add_counts({}, self.totals), other.totals)
        return StepNotes(calls, errors, nulled,
                         other.report if other.report is not None else self.report, reused,
                         fallbacks, totals)

    def detail(self) -> dict[str, Any]:
        """The keys the run log has always had: only those with something in them."""
        out: dict[str, Any] = {}
        if self.model_calls:
            out["model_calls"] = self.model_calls
        for key in ("reused_calls", "errors", "nulled", "fallbacks", "report"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.totals:
            out["report"] = {**(self.report or {}), **self.totals}
        return out

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)

    @classmethod
    def from_json(cls, text: str) -> StepNotes:
        return cls(**json.loads(text))


def merge_all(notes: list[StepNotes]) -> StepNotes:
    merged = StepNotes()
    for entry in notes:
        merged = merged.merge(entry)
    return merged
