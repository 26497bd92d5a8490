"""Time and memory bounds for SQL a person types (`workbench sql`, the app's filter box).

A typed query can ask for anything: `count(*) FROM range(1e12)` runs for hours, `list()` over
billions of rows grows without end. Each one therefore runs in a worker thread while the
calling thread watches the clock: at the deadline, or on Ctrl-C, it calls DuckDB's
`interrupt()` on the connection, which stops the query between vectors. The memory bound is
DuckDB's own `memory_limit`; the sandbox has no temp directory, so a query that outgrows it
fails instead of spilling.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from workbench.errors import QueryError

T = TypeVar("T")
GIB = 1 << 30


def default_memory() -> int:
    """A modest share of the machine: a quarter of its memory, at most 4 GiB."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        total = 8 * GIB
    return max(256 << 20, min(total // 4, 4 * GIB))


@dataclass(frozen=True)
class Limits:
    """`timeout` seconds of wall time and `memory` bytes per typed query."""

    timeout: float = 60.0
    memory: int = 0  # 0: default_memory()

    def memory_bytes(self) -> int:
        return self.memory or default_memory()


APP_LIMITS = Limits(timeout=5.0)  # the app answers a typed filter fast, or says why not
_CURRENT: contextvars.ContextVar[Limits | None] = contextvars.ContextVar("query_limits",
                                                                         default=None)


class QueryCancelled(QueryError):
    """The person stopped the query (Ctrl-C)."""


class QueryTooBig(QueryError):
    """The query's result outgrew the memory limit."""


def parse_memory(text: str) -> int:
    """'512MB', '4GB', '2GiB', '1000000' (bytes) -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)\s*", text, re.IGNORECASE)
    if not match:
        raise QueryError(f"memory limit {text!r}: use a size like 512MB or 4GB")
    value, unit = float(match.group(1)), match.group(2).upper()
    size = int(value * (1024 ** " KMGT".index(unit or " ")))
    if size < (16 << 20):
        raise QueryError(f"memory limit {text!r}: at least 16MB")
    return size


def human(size: int) -> str:
    for unit, scale in (("GB", GIB), ("MB", 1 << 20)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} bytes"


def current() -> Limits:
    return _CURRENT.get() or Limits()


@contextlib.contextmanager
def limited(limits: Limits | None) -> Iterator[Limits]:
    """Typed queries in this block (this thread) run under `limits` (None: keep the current)."""
    if limits is None:
        yield current()
        return
    token = _CURRENT.set(limits)
    try:
        yield limits
    finally:
        _CURRENT.reset(token)


def accepts_limits(fn: Callable[..., T]) -> Callable[..., T]:
    """Give a query function a keyword `limits: Limits | None` (None: the current ones, by
    default 60 s and `default_memory()`), kept for every sandbox query it runs."""

    @functools.wraps(fn)
    def bounded(*args: Any, limits: Limits | None = None, **kwargs: Any) -> T:
        with limited(limits):
            return fn(*args, **kwargs)

    return bounded


def connection_config(limits: Limits) -> dict[str, Any]:
    """DuckDB settings for a sandbox connection under `limits` (set before it is locked)."""
    return {"memory_limit": f"{limits.memory_bytes() // (1 << 20)}MB"}


def run_bounded(con: Any, work: Callable[[], T], limits: Limits | None = None) -> T:
    """`work()` (a query on `con`) under the time limit and Ctrl-C, its DuckDB errors for
    memory and interruption turned into QueryErrors that say which limit stopped it."""
    import duckdb

    limits = limits or current()
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = work()
        except BaseException as exc:  # handed to the watching thread
            box["error"] = exc

    context = contextvars.copy_context()  # the worker sees this thread's limits
    worker = threading.Thread(target=context.run, args=(run,), name="typed-query", daemon=True)
    started = time.monotonic()
    worker.start()
    timed_out = cancelled = False
    while worker.is_alive():
        try:
            left = started + limits.timeout - time.monotonic()
            if left <= 0 and not timed_out:
                timed_out = True
                con.interrupt()
            worker.join(min(max(left, 0.05), 0.1))
        except KeyboardInterrupt:  # stop the query, then wait for the worker to let go
            cancelled = True
            con.interrupt()
    if cancelled:
        raise QueryCancelled("query cancelled (Ctrl-C)")
    error = box.get("error")
    if error is None:
        return box["value"]
    if timed_out and isinstance(error, duckdb.InterruptException):
        raise QueryError(f"query stopped after {limits.timeout:g} s (the time limit for typed "
                         f"queries; `workbench sql --timeout SECONDS` sets it)") from None
    if isinstance(error, duckdb.OutOfMemoryException) or "memory limit" in str(error).lower() \
            and isinstance(error, duckdb.Error):
        raise QueryError(f"query needs more than {human(limits.memory_bytes())} of memory (the "
                         f"memory limit for typed queries; `workbench sql --memory-limit SIZE` "
                         f"sets it)") from None
    raise error


def bounded_table(relation: Any, limits: Limits | None = None) -> Any:
    """The relation's rows as an Arrow table, read in batches whose sizes count against the
    memory limit: DuckDB's `memory_limit` does not count the result it hands to Python, so
    `SELECT range FROM range(3e8)` would otherwise grow past it in the caller."""
    import pyarrow as pa

    limit = (limits or current()).memory_bytes()
    reader = relation.to_arrow_reader(100_000)
    batches, size = [], 0
    for batch in reader:
        size += batch.nbytes
        if size > limit:
            raise QueryTooBig(f"query needs more than {human(limit)} of memory for its result "
                              f"(the memory limit for typed queries; `workbench sql "
                              f"--memory-limit SIZE` sets it)")
        batches.append(batch)
    return pa.Table.from_batches(batches, schema=reader.schema)


def close(con: Any) -> None:
    """Close a sandbox connection. Right after an interrupted query DuckDB may still call it
    busy for a moment (seen after Ctrl-C), so a refused close is retried for up to 2 s."""
    import duckdb

    deadline = time.monotonic() + 2.0
    while True:
        try:
            con.close()
            return
        except duckdb.Error:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
