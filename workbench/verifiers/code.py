"""`code`: a response's Python code run against the row's tests in the sandbox.

The code is the first fenced block labelled `python`/`py` (or unlabelled), else the whole
response. The tests are either HumanEval's layout (a `check(candidate)` function, called
with the row's `entry_point`) or plain statements such as `assert f(2) == 4`, run after the
code in the same program. The program passes when it runs to its end and exits 0; how it
ran and what it may touch is `workbench.verifiers.sandbox`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from workbench.verifiers import Verdict
from workbench.verifiers.sandbox import Limits, run_programs

FENCE = re.compile(r"```[ \t]*(python3?|py)?[ \t]*\r?\n(.*?)```", re.DOTALL | re.IGNORECASE)
CHECK_FUNCTION = re.compile(r"^def check\s*\(", re.MULTILINE)
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check(response: str, truth: str, **options: Any) -> Verdict:
    """Run the response's code against the tests in `truth`.

    Options: `entry_point` (the function HumanEval's `check` is called with), `timeout_s`,
    `memory_mb`, `file_size_mb`, `processes` (see `sandbox.Limits`)."""
    return check_many([(response, truth, options.pop("entry_point", None))], **options)[0]


def check_many(items: Sequence[tuple[str | None, str | None, str | None]], *,
               workers: int | None = None, **options: Any) -> list[Verdict]:
    """Verdicts for many (response, tests, entry_point) at once, `workers` programs at a
    time; items whose program cannot be built fail without running."""
    limits = Limits(**options)
    verdicts: list[Verdict | None] = []
    sources: list[str] = []
    for response, tests, entry_point in items:
        built = program(response or "", tests, entry_point)
        if isinstance(built, Verdict):
            verdicts.append(built)
        else:
            verdicts.append(None)
            sources.append(built)
    ran = iter(run_programs(sources, limits, workers=workers))
    return [verdict if verdict is not None else next(ran) for verdict in verdicts]


def extract_code(response: str) -> str:
    """The first fenced Python (or unlabelled) block, else the whole response."""
    blocks = FENCE.findall(response)
    labelled = [body for language, body in blocks if language]
    chosen = labelled or [body for _, body in blocks]
    return chosen[0] if chosen else response


def program(response: str, tests: str | None, entry_point: str | None = None) -> str | Verdict:
    """The program to run (code, then tests, then `check(entry_point)` for HumanEval's
    layout), or a failing verdict that says why none can be built."""
    if tests is None or not str(tests).strip():
        return Verdict(False, "no tests")
    code = extract_code(response)
    if not code.strip():
        return Verdict(False, "no code in the response")
    parts = [code.rstrip(), str(tests).rstrip()]
    if CHECK_FUNCTION.search(str(tests)):
        if not entry_point:
            return Verdict(False, "the tests define check(candidate) but the row has no "
                                  "entry_point")
        if not IDENTIFIER.fullmatch(entry_point):
            return Verdict(False, f"entry_point {entry_point!r} is not a Python name")
        parts.append(f"check({entry_point})")
    return "\n\n".join(parts) + "\n"
