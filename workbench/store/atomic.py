"""File helpers: write-then-rename (readers see a whole file or folder, or none), a
cross-process lock (and a turnstile that needs no write access), folders owned by a live
process (so `workbench gc` can tell a crash's leftover from work in progress), and a
streaming file digest."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from workbench.engine.crashpoints import crashpoint


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder (owned, see `owned_dir`); rename it to `final` only if
    the block succeeds."""
    with owned_dir(final.parent, f".tmp-{final.name}-") as tmp:
        try:
            yield tmp
            fsync_dir(tmp)
            crashpoint("atomic_dir.before_rename")
            os.rename(tmp, final)  # fails if `final` exists: a finished version is never replaced
            fsync_dir(final.parent)
            crashpoint("atomic_dir.after_rename")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


@contextlib.contextmanager
def owned_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """Yield a new empty folder `parent/PREFIX<hex>` that this process owns while the block
    runs: it holds an flock on the folder itself, which the kernel drops when the process
    ends, however it ends (kill -9 included). `claimed` tells gc the owner is gone; unlike a
    pid, a lock cannot be mistaken for a later process that got the same number. The caller
    renames or removes the folder inside the block; it is not removed here."""
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        path = parent / f"{prefix}{uuid.uuid4().hex[:12]}"
        try:
            path.mkdir()
            fd = os.open(path, os.O_RDONLY)
        except (FileExistsError, FileNotFoundError):  # a twin name, or gc took it: another
            continue
        if _lock(fd) is not False and _same_file(path, fd):
            break
        os.close(fd)  # gc holds it (it found the folder before we locked it) and removes it
    try:
        yield path
    finally:
        os.close(fd)  # closing the last descriptor releases the flock


def _lock(fd: int) -> bool | None:
    """Take an exclusive flock without waiting: True, False where another holds it, None
    where the file system cannot flock (then nothing is known; callers keep the file)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:  # EBADF/ENOLCK where flock is emulated (NFS) on a read-only fd
        if exc.errno in (errno.EBADF, errno.ENOLCK, errno.EOPNOTSUPP):
            return None
        raise
    return True


def _same_file(path: Path, fd: int) -> bool:
    try:
        here, held = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (held.st_dev, held.st_ino)


@contextlib.contextmanager
def claimed(path: Path) -> Iterator[bool]:
    """Whether no live process owns `path` (an `owned_dir`, or a file another lock guards):
    True once its flock is ours, held while the block runs, so no owner can take it while
    the caller removes it; False while an owner lives, or where flock says nothing."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        yield False
        return
    try:
        yield bool(_lock(fd)) and _same_file(path, fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling path; replace `final` with it only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def fsync_dir(path: Path) -> None:
    for child in path.iterdir():
        if child.is_file():
            with open(child, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def file_lock(path: Path, wait: bool = True) -> Iterator[None]:
    """An exclusive flock on `path` across processes (POSIX); elsewhere a no-op.

    With wait=False a lock held elsewhere raises BlockingIOError at once."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


@contextlib.contextmanager
def turnstile(path: Path, create: bool) -> Iterator[None]:
    """An exclusive flock on `path` like `file_lock`, for a step that readers pass too.

    Writers (`create=True`) make the file. Readers never need write access and change
    nothing: they open it read-only (flock needs no write access); where it does not exist no
    writer has passed yet, so they go on without it, as they do where they may not open it.
    A writer that may not create it does the same; its write then fails where the workspace
    refuses it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fd = None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666) if create else (
            os.open(path, os.O_RDONLY))
    except FileNotFoundError:
        pass
    except OSError as exc:  # not ours to open: go on without it, as where it does not exist
        if exc.errno not in NOT_WRITABLE:
            raise
        if create:
            with contextlib.suppress(OSError):
                fd = os.open(path, os.O_RDONLY)
    locked = False
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                locked = True
            except OSError as exc:  # EBADF where flock is emulated by fcntl, which wants writes
                if exc.errno != errno.EBADF:
                    raise
        yield
    finally:
        if fd is not None:
            if locked:
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
