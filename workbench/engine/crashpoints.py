"""Named points where a test may kill this process, to prove what a crash leaves behind.

`WORKBENCH_CRASH_AT=NAME` (or `NAME#N`, the N-th time it is reached; several comma-separated)
makes `crashpoint(NAME)` send SIGKILL to its own process: no handler, `finally` or `atexit`
runs, exactly as after `kill -9` or the out-of-memory killer. Unset, a crashpoint costs one
dictionary lookup."""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "WORKBENCH_CRASH_AT"
_hits: Counter[str] = Counter()


def crashpoint(name: str) -> None:
    """Kill this process here when WORKBENCH_CRASH_AT names this point (and hit count)."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    _hits[name] += 1
    for item in wanted.split(","):
        point, _, nth = item.strip().partition("#")
        if point == name and _hits[name] == (int(nth) if nth else 1):
            os.kill(os.getpid(), signal.SIGKILL)
