"""Torch threads sized to the cores other processes leave free.

On a CPU, a torch thread that shares its core with a busy neighbour makes every parallel
region wait for it: generation with two threads beside one busy process ran 10-30x slower
than with one. So before each batch the backend asks how many cores the *other* processes
left free since the last batch (system busy time minus this process's own) and uses that
many threads. `OMP_NUM_THREADS` or `WORKBENCH_THREADS`, when set, fix the count instead.
Idle OpenMP threads sleep instead of spinning (`OMP_WAIT_POLICY=PASSIVE`, set before torch
loads, unless the user set it), so they do not steal the core they would wait for.
"""

from __future__ import annotations

import math
import os
import time

import psutil

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

MIN_INTERVAL = 0.2  # seconds between two readings that are worth comparing


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _fixed() -> int | None:
    for name in ("WORKBENCH_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def _reading() -> tuple[float, float, float]:
    """(clock, CPU seconds all processes spent busy, CPU seconds this process spent)."""
    total = psutil.cpu_times()
    busy = total.user + total.system + getattr(total, "nice", 0.0) + getattr(
        total, "irq", 0.0) + getattr(total, "softirq", 0.0) + getattr(total, "steal", 0.0)
    own = psutil.Process().cpu_times()
    return time.monotonic(), busy, own.user + own.system


class CoreGauge:
    """How many cores are free of other processes, from the CPU time used between calls."""

    def __init__(self, settle: float = 0.25) -> None:
        self.cores = _cores()
        self._last = _reading()
        self._free = self.cores
        if settle > 0:
            time.sleep(settle)  # a first reading over a short quiet interval
            self.free()

    def free(self) -> int:
        now = _reading()
        elapsed = now[0] - self._last[0]
        if elapsed >= MIN_INTERVAL:
            others = max(0.0, (now[1] - self._last[1]) - (now[2] - self._last[2])) / elapsed
            # a neighbour using more than a quarter of a core takes that core
            self._free = max(1, min(self.cores, math.floor(self.cores - others + 0.75)))
            self._last = now
        return self._free


_gauge: CoreGauge | None = None


def fit_threads() -> int:
    """Set torch's intra-op threads to the free cores (or the fixed count); returns it."""
    import torch

    global _gauge
    count = _fixed()
    if count is None:
        if _gauge is None:
            _gauge = CoreGauge()
        count = _gauge.free()
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count
