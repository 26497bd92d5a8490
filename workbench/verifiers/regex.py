"""`regex`: the response matches a pattern held in the ground-truth column.

Patterns use the `regex` package (a superset of Python's `re`), which can stop a match that
runs too long, so a pattern that backtracks without end fails its row instead of hanging the
step. `match: search` (default) passes when the pattern occurs anywhere; `fullmatch` when
the whole response, stripped of surrounding whitespace, matches. Flags go inline (`(?i)`).
"""

from __future__ import annotations

import functools
from typing import Any

import regex as re_engine

from workbench.verifiers import Verdict, short

TIMEOUT_S = 1.0


def check(response: str, truth: str, **options: Any) -> Verdict:
    """Options: `match` (`search` or `fullmatch`), `timeout_s` (per match, default 1)."""
    if truth is None:
        return Verdict(False, "no ground truth")
    mode = options.get("match", "search")
    if mode not in ("search", "fullmatch"):
        raise ValueError(f"regex: match must be 'search' or 'fullmatch', not {mode!r}")
    try:
        pattern = _compile(str(truth))
    except re_engine.error as exc:
        return Verdict(False, f"bad pattern {short(truth, 60)!r}: {exc}")
    text = response or ""
    timeout = float(options.get("timeout_s", TIMEOUT_S))
    try:
        if mode == "fullmatch":
            found = pattern.fullmatch(text.strip(), timeout=timeout)
        else:
            found = pattern.search(text, timeout=timeout)
    except TimeoutError:
        return Verdict(False, f"match took over {timeout:g}s")
    shown = short(truth, 60)
    if found is None:
        what = "does not fully match" if mode == "fullmatch" else "no match for"
        return Verdict(False, f"{what} /{shown}/")
    return Verdict(True, f"matches /{shown}/: {short(found.group(0), 60)!r}")


@functools.lru_cache(maxsize=1024)
def _compile(pattern: str) -> Any:
    return re_engine.compile(pattern)
