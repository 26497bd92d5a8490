"""What a run shows while it works: a bar per step, and for model steps a line per model
call batch (rows done, tokens per second, time left), so a slow CPU step never sits still.

On a terminal it is a rich progress display; elsewhere (a log, CI, `make demo | tee`) a plain
line at most every `PLAIN_EVERY` seconds per step, on stderr, and a heartbeat line when a step
has said nothing for `HEARTBEAT_EVERY` seconds (a model loading, a long prefill, a busy CPU
between two calls), so a log never sits still for 10 s.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

PLAIN_EVERY = 5.0  # seconds between two plain progress lines of a step
HEARTBEAT_EVERY = 8.0  # seconds of silence after which a plain step says it is still working


class StepBar:
    """One step's progress: batches (`start`/`advance`/`done`) and model calls (`calls`)."""

    def __init__(self, progress: Any = None, plain: bool = False) -> None:
        self.progress = progress  # a rich Progress, or None
        self.plain = plain
        self.task: Any = None
        self.label = ""
        self._printed = 0.0
        self._started = 0.0
        self._lock = threading.RLock()
        self._quiet: threading.Event | None = None  # set to stop the heartbeat
        self._held = ""  # the latest call line held back by PLAIN_EVERY

    def start(self, label: str, total: int) -> None:
        self.stop()
        self.label, self._printed, self._held = label, 0.0, ""
        if self.plain:  # at once: a model step may spend seconds loading before its first call
            self._started = time.monotonic()
            self._print(f"{label}: started", self._started)
            self._quiet = threading.Event()
            threading.Thread(target=self._heartbeat, args=(self._quiet,), daemon=True,
                             name="workbench-heartbeat").start()
        if self.progress is not None:
            self.task = self.progress.add_task(label, total=total)

    def advance(self) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.advance(self.task)

    def done(self, label: str) -> None:
        self.stop()
        if self.plain:
            self._print(label, time.monotonic())
        if self.progress is None:
            return
        if self.task is None:
            self.task = self.progress.add_task(label, total=1)
        self.progress.update(self.task, description=label,
                             completed=self.progress.tasks[self.task].total)
        self.task = None

    def calls(self) -> Callable[[int, int, int], None]:
        """A callback for `Context.progress`: items done and total of the current model
        call, and tokens generated so far by it."""
        started = time.monotonic()
        first: list[int] = []

        def report(done: int, total: int, tokens: int) -> None:
            now = time.monotonic()
            if not first:
                first.append(done)  # items the cache answered before any call
                return
            elapsed = max(now - started, 1e-6)
            made = done - first[0]
            line = f"{self.label}: {done}/{total} model items"
            if tokens:
                line += f", {tokens / elapsed:.0f} tok/s"
            if made and done < total:
                line += f", ~{elapsed / made * (total - done):.0f} s left"
            self._show(line, now, final=done >= total)

        return report

    def _show(self, line: str, now: float, final: bool) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, description=line)
        elif self.plain and (final or now - self._printed >= PLAIN_EVERY):
            self._print(line, now)
        elif self.plain:
            with self._lock:
                self._held = line

    def _print(self, line: str, now: float) -> None:
        with self._lock:
            self._printed, self._held = now, ""
            print(f"  {line}", file=sys.stderr, flush=True)

    def _heartbeat(self, quiet: threading.Event) -> None:
        """Whenever the step has been silent for HEARTBEAT_EVERY s: the call line held back
        since the last one shown, else that the step is still working."""
        while not quiet.wait(0.5):
            with self._lock:  # `stop` sets `quiet` under it: no line after the step's last
                now = time.monotonic()
                if not quiet.is_set() and now - self._printed >= HEARTBEAT_EVERY:
                    self._print(self._held or
                                f"{self.label}: still working, {now - self._started:.0f} s in",
                                now)

    def stop(self) -> None:
        """Ends the current step's heartbeat (a step that raised never calls `done`)."""
        with self._lock:
            if self._quiet is not None:
                self._quiet.set()
                self._quiet = None


@contextmanager
def step_bars(mode: str) -> Iterator[StepBar]:
    """`mode`: "bar" (rich, on a terminal), "plain" (lines) or "off"."""
    if mode != "bar":
        bar = StepBar(plain=mode == "plain")
        try:
            yield bar
        finally:
            bar.stop()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn()) as progress:
        yield StepBar(progress)
