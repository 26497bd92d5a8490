"""`workbench gc`: remove what killed processes left in a workspace, and only that.

A crash (kill -9, the out-of-memory killer, a power cut) skips every cleanup, so it can leave:
staging folders in `cache/tmp/`, a version being written (`datasets/NAME/.tmp-*`), a version
folder renamed into place whose catalog row was never written (an orphan), a checkpoint being
written (`cache/checkpoints/P/.tmp-*`), spill files in a step's `.partial` folder, an export's
staging or set-aside copy (`exports/.tmp-export-*`, `.old-export-*`), and a run the catalog
still calls "running".

Nothing a live process owns is touched: staging folders carry an flock of their owner (see
`atomic.owned_dir`), which the kernel drops when it dies; a pipeline's checkpoints and runs
are guarded by its run lock, a dataset's versions by its publish lock; an export's temporary
names carry the exporter's pid. What a killed run needs to resume (the finished batches in a
`.partial` folder, every finished checkpoint) is kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.io.export_folder import FOLDER_NAME, MARKER, OLD_PREFIX, STAGING_PREFIX
from workbench.store.atomic import claimed, file_lock
from workbench.workspace import NAME_RE, Workspace

BATCH_FILE = re.compile(r"batch-\d{6}\.(parquet|json)")


@dataclass
class Report:
    """What gc removed (relative paths by kind), put back, marked, and the bytes it freed."""

    removed: dict[str, list[str]] = field(default_factory=dict)
    restored: list[str] = field(default_factory=list)
    interrupted_runs: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)  # left alone: a live process owns them
    bytes_freed: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"removed": {k: len(v) for k, v in self.removed.items()},
                "bytes_freed": self.bytes_freed, "restored_exports": self.restored,
                "interrupted_runs": self.interrupted_runs, "busy": self.busy,
                "paths": sorted(p for v in self.removed.values() for p in v)}

    def summary(self) -> str:
        parts = [f"{len(v)} {k.replace('_', ' ')}" for k, v in self.removed.items() if v]
        if self.restored:
            parts.append(f"{len(self.restored)} export(s) put back")
        if self.interrupted_runs:
            parts.append(f"{len(self.interrupted_runs)} run(s) marked interrupted")
        freed = f"freed {_size(self.bytes_freed)}" if self.bytes_freed else "freed nothing"
        busy = f"; {len(self.busy)} left to live processes" if self.busy else ""
        return f"{freed}: {', '.join(parts) or 'no crash leftovers'}{busy}"


def collect(ws: Workspace, full: bool = True) -> Report:
    """Remove crash leftovers in `ws`. `full=False` is the cheap pass every write command
    makes first: it lists a few folders (cache/tmp, each dataset's folder, exports/) and
    checks the catalog for running runs; the full pass also removes orphan versions (taking
    each dataset's publish lock) and walks every pipeline's checkpoint folder."""
    report = Report()
    _scratch(ws, report)
    _dataset_temps(ws, report)
    _exports(ws, report)
    _runs(ws, report)
    if full:
        _orphan_versions(ws, report)
        _checkpoints(ws, report)
    return report


def _remove(ws: Workspace, path: Path, kind: str, report: Report) -> None:
    size = _tree_size(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
    report.removed.setdefault(kind, []).append(str(path.relative_to(ws.root)))
    report.bytes_freed += size


def _remove_unowned(ws: Workspace, path: Path, kind: str, report: Report) -> None:
    """Remove `path` if no live process holds its flock (held by us while removing)."""
    with claimed(path) as free:
        if free:
            _remove(ws, path, kind, report)
        elif path.exists():
            report.busy.append(str(path.relative_to(ws.root)))


def _scratch(ws: Workspace, report: Report) -> None:
    tmp = ws.cache_dir / "tmp"
    for path in _children(tmp):
        _remove_unowned(ws, path, "staging_folders", report)


def _dataset_temps(ws: Workspace, report: Report) -> None:
    for folder in _children(ws.datasets_dir):
        for path in _children(folder):
            if path.name.startswith(".tmp-"):
                _remove_unowned(ws, path, "unpublished_versions", report)


def _orphan_versions(ws: Workspace, report: Report) -> None:
    for folder in _children(ws.datasets_dir):
        if folder.is_dir() and NAME_RE.fullmatch(folder.name):
            with ws.publish_lock(folder.name):
                for path in ws.orphan_versions(folder.name):
                    _remove(ws, path, "orphan_versions", report)


def _checkpoints(ws: Workspace, report: Report) -> None:
    """Under each pipeline's run lock (free: no run of it is alive): staging copies of
    checkpoints, `.partial` folders of finished checkpoints, and in the other `.partial`
    folders everything but the finished batches a resumed run reuses."""
    for folder in _children(ws.cache_dir / "checkpoints"):
        if not folder.is_dir():
            continue
        try:
            with file_lock(folder / ".lock", wait=False):
                _pipeline_leftovers(ws, folder, report)
        except BlockingIOError:
            report.busy.append(str(folder.relative_to(ws.root)))


def _pipeline_leftovers(ws: Workspace, folder: Path, report: Report) -> None:
    for path in _children(folder):
        if path.name.startswith(".tmp-"):
            _remove_unowned(ws, path, "unfinished_checkpoints", report)
        elif path.name.endswith(".partial") and path.is_dir():
            finished = path.with_name(path.name.removesuffix(".partial")) / "meta.json"
            if finished.is_file():  # killed after the checkpoint was renamed into place
                _remove(ws, path, "partial_folders", report)
                continue
            for item in _children(path):
                match = BATCH_FILE.fullmatch(item.name)
                if match and (match.group(1) == "parquet" or item.with_suffix(".parquet").exists()):
                    continue  # a finished batch (and its notes): resume reuses it
                _remove(ws, item, "partial_leftovers", report)
            if not any(path.iterdir()):
                path.rmdir()
                report.removed.setdefault("partial_folders", []).append(
                    str(path.relative_to(ws.root)))


def _exports(ws: Workspace, report: Report) -> None:
    """An export's `.tmp-export-<pid>-*` of a dead exporter goes; its `.old-export-<pid>-*`
    (the earlier export, set aside for the swap) goes back where its marker says it belongs
    when nothing is there, else it goes."""
    for path in _children(ws.root / "exports"):
        for prefix in (STAGING_PREFIX, OLD_PREFIX):
            if not path.name.startswith(prefix):
                continue
            pid = path.name[len(prefix):].partition("-")[0]
            if not pid.isdigit() or _alive(int(pid)):
                report.busy.append(str(path.relative_to(ws.root)))
                break
            home = _export_home(path) if prefix == OLD_PREFIX else None
            if home is not None and not os.path.lexists(home):
                os.rename(path, home)
                report.restored.append(str(home.relative_to(ws.root)))
            else:
                _remove(ws, path, "export_copies", report)
            break


def _export_home(old: Path) -> Path | None:
    try:
        name = json.loads((old / MARKER).read_text(encoding="utf-8")).get("folder")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(name, str) or not FOLDER_NAME.fullmatch(name):
        return None
    return old.parent / name


def _runs(ws: Workspace, report: Report) -> None:
    """A run still "running" whose pipeline's run lock is free: its process is gone."""
    rows = ws.catalog.query("SELECT DISTINCT pipeline FROM runs WHERE status = 'running'")
    for pipeline in (r["pipeline"] for r in rows):
        if not NAME_RE.fullmatch(pipeline):
            continue
        lock = ws.cache_dir / "checkpoints" / pipeline / ".lock"
        try:
            with file_lock(lock, wait=False):
                ids = ws.catalog.query("SELECT run_id FROM runs WHERE pipeline = ? AND "
                                       "status = 'running' ORDER BY run_id", [pipeline])
                ws.mark_interrupted(pipeline)
                report.interrupted_runs += [r["run_id"] for r in ids]
        except BlockingIOError:
            report.busy.append(f"run of {pipeline}")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _tree_size(path: Path) -> int:
    if not path.is_dir() or path.is_symlink():
        return path.lstat().st_size
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"
