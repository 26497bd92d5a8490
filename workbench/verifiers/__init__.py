"""Checkers that say whether a response is right against a known answer, without a model.

Each module is one checker with `check(response, truth, **options) -> Verdict`; `CHECKERS`
maps the names `verify` accepts to them. They are plain functions so that a training-time
reward function can apply the same check as the data pipeline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple


class Verdict(NamedTuple):
    """Whether the response passed, and a short reason a person can read (what was extracted,
    why it failed)."""

    passed: bool
    detail: str


def _checkers() -> dict[str, Callable[..., Verdict]]:
    from workbench.verifiers import code, json_schema, math, regex

    return {"math": math.check, "code": code.check, "regex": regex.check,
            "json_schema": json_schema.check}


def short(text: str, limit: int = 80) -> str:
    """`text` on one line, cut to `limit` characters, for a detail message."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


CHECKERS: dict[str, Callable[..., Verdict]] = _checkers()
