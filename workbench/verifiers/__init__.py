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


def checkers_digest() -> str:
    """A digest of the checkers' code and of the packages they lean on: verdicts depend on
    both, so `verify` checkpoints key on it (a transform's own fingerprint covers only the
    `transforms` package)."""
    import hashlib
    from importlib.metadata import PackageNotFoundError, version
    from pathlib import Path

    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    for package in ("math-verify", "jsonschema", "regex"):
        try:
            digest.update(f"{package}=={version(package)}".encode())
        except PackageNotFoundError:
            digest.update(f"{package} absent".encode())
    return digest.hexdigest()[:16]
