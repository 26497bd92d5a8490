"""Where an export may write: plain split and folder names, the folders it may replace, and
the write-then-swap that replaces one. Split names come from the data, so they are checked
like any other untrusted input before a single file is written."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from workbench.engine.crashpoints import crashpoint
from workbench.errors import WorkbenchError

MARKER = "workbench_export.json"
STAGING_PREFIX = ".tmp-export-"  # .tmp-export-<pid>-<hex>: `workbench gc` knows whose it is
# .old-export-<pid>-<hex>: the replaced export, until the swap. A kill between the two renames
# leaves it as the only copy: its marker's "folder" names where it belongs (gc puts it back)
OLD_PREFIX = ".old-export-"
# the split names `datasets` itself loads (its `^\w+(\.\w+)*$`, ASCII only): `-`, `/`, a
# leading `.` and `..` are out, so a split name is always one plain file or folder name
SPLIT_NAME = r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*"
SPLIT_MAX = 100
# export folder names typed in the app: the workspace's dataset-name characters
FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
SHOWN = 8  # bad split values named in an error


def check_split_names(frame: pl.DataFrame, column: str = "split") -> None:
    """Refuse a `split` column holding any value that is not a plain split name, naming each
    bad value (repr, so `/` and NUL show) and its row count."""
    if column not in frame.columns:
        return
    names = pl.col(column).cast(pl.String)
    counts = frame.group_by(names.alias("name")).len().filter(pl.col("name").is_not_null())
    ok = pl.col("name").str.contains(rf"\A(?:{SPLIT_NAME})\z") & (
        pl.col("name").str.len_chars() <= SPLIT_MAX)
    bad = counts.filter(~ok).sort("len", "name", descending=[True, False])
    if bad.height == 0:
        return
    shown = [f"{name!r} ({n} row{'' if n == 1 else 's'})" for name, n in bad.head(SHOWN).rows()]
    more = f" and {bad.height - SHOWN} more" if bad.height > SHOWN else ""
    raise WorkbenchError(
        f"the `{column}` column holds split names that cannot be file names: "
        f"{', '.join(shown)}{more}. A split name is letters, digits and '_', in parts joined "
        f"by '.' (e.g. train, test, dev_2, valid.v2; at most {SPLIT_MAX} characters): fix the "
        "column, or export with --split-test to split anew")


def check_folder_name(name: str) -> str:
    """An export folder name typed in the app: one plain name, never a path."""
    if not FOLDER_NAME.fullmatch(name):
        raise WorkbenchError(f"invalid export folder name {name!r}: use letters, digits, '_', "
                             "'-', '.', not starting with '.' (max 128); a name, not a path")
    return name


def inside(folder: Path, relative: str) -> Path:
    """`folder / relative`, refused unless it resolves strictly inside `folder`."""
    path = folder / relative
    resolved, base = path.resolve(), folder.resolve()
    if resolved == base or not resolved.is_relative_to(base):
        raise WorkbenchError(f"export refused: {relative!r} would be written at {resolved}, "
                             f"outside the export folder {base}")
    return path


def export_target(out: Path, workspace_root: Path, overwrite: bool) -> Path:
    """The resolved folder to write, or a refusal saying why: never `/`, $HOME or a folder
    holding it, a workspace, a folder holding the workspace, or a folder inside a workspace
    other than under its `exports/`; an existing non-empty folder only with `overwrite` and
    only when it holds an earlier export of this tool (its marker) and nothing else."""
    target = Path(out).resolve()
    ws = Path(workspace_root).resolve()
    home = Path.home().resolve()
    if target == Path(target.anchor):
        raise WorkbenchError(f"export refused: {out} is the filesystem root")
    if target == home:
        raise WorkbenchError(f"export refused: {out} is your home folder ($HOME)")
    if home.is_relative_to(target):
        raise WorkbenchError(f"export refused: {out} contains your home folder ($HOME)")
    if target == ws:
        raise WorkbenchError(f"export refused: {out} is the workspace")
    if ws.is_relative_to(target):
        raise WorkbenchError(f"export refused: {out} contains the workspace {ws}")
    for root in [ws, *(p for p in target.parents if (p / "workbench.duckdb").is_file())]:
        exports = root / "exports"
        if target.is_relative_to(root) and not (target.is_relative_to(exports)
                                                and target != exports):
            raise WorkbenchError(f"export refused: {out} is inside the workspace {root}; "
                                 f"write under {exports}/NAME or outside the workspace")
    if target.exists() and not target.is_dir():
        raise WorkbenchError(f"export refused: {out} is a file, not a folder")
    if target.is_dir() and any(target.iterdir()):
        if not overwrite:
            raise WorkbenchError(f"{out} exists and is not empty (use --overwrite to replace "
                                 "an earlier export there)")
        _check_earlier_export(target, out)
    return target


def _check_earlier_export(target: Path, out: Path) -> None:
    """Only a folder this tool wrote, holding only what it wrote, may be replaced."""
    marker = target / MARKER
    if not marker.is_file():
        raise WorkbenchError(f"--overwrite refused: {out} holds no {MARKER}, so it is not an "
                             "earlier export of this tool; choose a new or empty folder")
    try:
        meta = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        meta = None
    if not isinstance(meta, dict) or not {"dataset", "format"} <= meta.keys():
        raise WorkbenchError(f"--overwrite refused: {marker} is not this tool's export marker")
    listed = meta.get("files")
    if listed is None:  # written before markers listed their files
        return
    extra = sorted(f for f in set(files_in(target)) - {*map(str, listed), MARKER}
                   if not DATASETS_CACHE.fullmatch(f))
    if extra:
        more = f" and {len(extra) - SHOWN} more" if len(extra) > SHOWN else ""
        raise WorkbenchError(f"--overwrite refused: {out} holds files the export did not write: "
                             f"{', '.join(extra[:SHOWN])}{more}; move them away first")


# `datasets.load_from_disk(EXPORT)` followed by `.map` (as TRL's trainers do) leaves its
# cache files in the split's Arrow folder: they are derived from the export, not the user's.
DATASETS_CACHE = re.compile(r"(?:[A-Za-z0-9_.]+/)?cache-[0-9a-f]+\.arrow")


def files_in(folder: Path) -> list[str]:
    """Every file and link under `folder`, as sorted relative POSIX paths (links not followed)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        base = Path(dirpath)
        found += [(base / n).relative_to(folder).as_posix() for n in filenames]
        found += [(base / n).relative_to(folder).as_posix() for n in dirnames
                  if (base / n).is_symlink()]
    return sorted(found)


@contextlib.contextmanager
def staged(target: Path) -> Iterator[Path]:
    """Yield an empty sibling folder to fill; then swap it in for `target` (an earlier export
    is moved aside first and removed only once the new one is in place). Whatever happens, no
    staging or old copy stays behind, and a failed swap puts the earlier export back."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = target.parent / f"{STAGING_PREFIX}{tag}"
    old = target.parent / f"{OLD_PREFIX}{tag}"
    tmp.mkdir()
    try:
        yield tmp
        crashpoint("export.staged")
        if target.exists():
            os.rename(target, old)
            crashpoint("export.after_aside")
        os.rename(tmp, target)
        crashpoint("export.after_swap")
    finally:
        if old.exists():
            if target.exists():
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(old, target)  # the swap failed: the earlier export comes back
        shutil.rmtree(tmp, ignore_errors=True)
