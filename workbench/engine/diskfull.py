"""A full disk as one clear error: "no space left on DEVICE while writing PATH".

Python, polars, DuckDB and Arrow each word ENOSPC their own way (an OSError with errno 28,
"No space left on device (os error 28)" inside a ComputeError, an IOException). `writing`
turns any of them into a `NoSpaceError` naming the file system and the path being written.
The write points wrapped by it (publish, import staging, checkpoints, export) already write
to a temporary sibling and remove it on failure, so nothing is left half-written.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from workbench.errors import WorkbenchError

_MARKERS = ("no space left on device", "os error 28", "enospc", "disk quota exceeded")


class NoSpaceError(WorkbenchError):
    """The disk (or quota) filled up while writing; what was being written was removed."""


def is_no_space(exc: BaseException) -> bool:
    """Whether `exc`, or an exception it was raised from, is a full disk or quota."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(marker in str(current).lower() for marker in _MARKERS):
            return True
        current = current.__cause__ or current.__context__
    return False


def device_of(path: str | Path) -> str:
    """The mount point holding `path`, with its device and file system type when known."""
    where = Path(os.path.abspath(path))
    while not where.exists() and where != where.parent:
        where = where.parent
    while not os.path.ismount(where) and where != where.parent:
        where = where.parent
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[1] == str(where):
                return f"{where} ({fields[0]}, {fields[2]})"
    return str(where)


def no_space(path: str | Path, what: str = "") -> NoSpaceError:
    doing = f" ({what})" if what else ""
    return NoSpaceError(f"no space left on {device_of(path)} while writing {path}{doing}; "
                        "what was being written was removed: free some space and run again")


@contextlib.contextmanager
def writing(path: str | Path, what: str = "") -> Iterator[None]:
    """Raise a `NoSpaceError` naming `path` when the block fails for lack of space."""
    try:
        yield
    except NoSpaceError:
        raise
    except Exception as exc:
        if is_no_space(exc):
            raise no_space(path, what) from exc
        raise
