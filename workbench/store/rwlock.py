"""A readers-writer lock per file inside one process.

DuckDB opens one database instance per file and process, and refuses a read-only connection
while a read-write one is open (and the other way round). Threads of one process (Streamlit
sessions, a notebook) therefore take this lock before they connect: readers share it, a writer
holds it alone, and a waiting writer keeps new readers back so it is not starved.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from workbench.errors import WorkbenchError


class ReadWriteLock:
    """Many readers or one writer. Reentrant per thread: a thread that writes may read or write
    again inside (it keeps the write mode); a thread that reads may read again, not write."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._cond = threading.Condition()
        self._readers: dict[int, int] = {}  # thread id -> depth
        self._writer: int | None = None
        self._writer_depth = 0
        self._writers_waiting = 0

    @contextlib.contextmanager
    def hold(self, write: bool, timeout: float = 60.0) -> Iterator[bool]:
        """Hold the lock for the block; yields whether the block holds it for writing."""
        me = threading.get_ident()
        deadline = time.monotonic() + timeout
        with self._cond:
            if self._writer == me:
                self._writer_depth += 1
                writing = True
            elif me in self._readers:
                if write:
                    raise WorkbenchError(
                        f"{self.name}: a thread cannot write while it is reading (finish the read)"
                    )
                self._readers[me] += 1
                writing = False
            elif write:
                self._writers_waiting += 1
                try:
                    self._wait(lambda: self._writer is None and not self._readers, deadline)
                finally:
                    self._writers_waiting -= 1
                self._writer, self._writer_depth = me, 1
                writing = True
            else:
                self._wait(lambda: self._writer is None and not self._writers_waiting, deadline)
                self._readers[me] = 1
                writing = False
        try:
            yield writing
        finally:
            with self._cond:
                if writing:
                    self._writer_depth -= 1
                    if self._writer_depth == 0:
                        self._writer = None
                else:
                    self._readers[me] -= 1
                    if self._readers[me] == 0:
                        del self._readers[me]
                self._cond.notify_all()

    def _wait(self, ready: Callable[[], bool], deadline: float) -> None:
        while not ready():
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkbenchError(f"{self.name}: busy for too long in this process, try again")
            self._cond.wait(left)


_LOCKS: dict[str, ReadWriteLock] = {}
_LOCKS_GUARD = threading.Lock()


def lock_for(path: Path) -> ReadWriteLock:
    """The one lock of this process for `path` (the same file reached by any spelling)."""
    key = os.path.realpath(path)
    with _LOCKS_GUARD:
        if key not in _LOCKS:
            _LOCKS[key] = ReadWriteLock(f"catalog {path}")
        return _LOCKS[key]
