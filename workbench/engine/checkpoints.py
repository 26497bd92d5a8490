"""Where a pipeline's checkpoints live and what makes one finished.

A step's checkpoint is `NN-step-KEY/` holding `data/` (kept parts), `dropped/` and
`meta.json`; it exists only once complete (written through `atomic_dir`). While a row-local
step runs, finished batches land in `NN-step-KEY.partial/batch-NNNNNN.parquet` with their
notes beside them, one file per batch (or per run of batches done in one call, the notes
saying how many: `stateless` steps), written by whichever worker ran it; a killed run
resumes from those files. Any executor whose workers see this folder (a shared file system
for a cluster) can use the store.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import polars as pl

from workbench.engine import parts
from workbench.engine.crashpoints import crashpoint
from workbench.engine.step_notes import StepNotes
from workbench.store.atomic import atomic_file

META_FILE = "meta.json"
BATCH = "batch-{:06d}.parquet"


class CheckpointStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def step_dir(self, index: int, name: str, key: str) -> Path:
        return self.root / f"{index:02d}-{name}-{key[:16]}"

    @staticmethod
    def partial_dir(target: Path) -> Path:
        return target.with_name(target.name + ".partial")

    @staticmethod
    def meta(target: Path) -> dict[str, Any] | None:
        """The finished checkpoint's meta, or None (a folder without meta is not one)."""
        path = target / META_FILE
        return json.loads(path.read_text()) if path.exists() else None

    @staticmethod
    def discard(target: Path, partial: bool = False) -> None:
        shutil.rmtree(target, ignore_errors=True)
        if partial:
            shutil.rmtree(CheckpointStore.partial_dir(target), ignore_errors=True)


def batch_path(partial: Path, index: int) -> Path:
    return partial / BATCH.format(index)


def batch_files(partial: Path) -> dict[int, tuple[Path, int]]:
    """Finished batch files by their first batch: (file, how many batches it holds)."""
    found = {}
    for path in sorted(partial.glob("batch-*.parquet")):
        notes = path.with_suffix(".json")
        count = json.loads(notes.read_text()).get(COUNT, 1) if notes.exists() else 1
        found[int(path.stem.split("-")[1])] = (path, count)
    return found


def finished_batches(partial: Path) -> set[int]:
    return {first + k for first, (_, count) in batch_files(partial).items()
            for k in range(count)}


COUNT = "batches"  # in a batch file's notes: how many batches it holds (when more than one)


def write_batch(partial: Path, index: int, frame: pl.DataFrame, notes: StepNotes,
                count: int = 1) -> Path:
    """Notes first, then the rows: a batch file only exists with its notes beside it.
    `count`: the file holds batches index..index+count-1, done in one call."""
    path = batch_path(partial, index)
    text = notes.to_json()
    if count > 1:
        text = json.dumps({**json.loads(text), COUNT: count})
    with atomic_file(path.with_suffix(".json")) as tmp:
        tmp.write_text(text)
    with atomic_file(path) as tmp:
        parts.write(frame, tmp)
    crashpoint("checkpoint.batch_written")
    return path


def batch_notes(partial: Path, reused: set[int] | frozenset[int] = frozenset()) -> StepNotes:
    """The merged notes of the finished batches, in batch order. Batches in `reused` were
    finished by an earlier run: what they found (errors, nulled fields, fallbacks) counts, but their
    model calls are reported apart, as `reused_calls`, so `model_calls` is this run's."""
    from workbench.engine.step_notes import merge_all

    found = [(int(p.stem.split("-")[1]), _notes(p.with_suffix(".json")))
             for p in sorted(partial.glob("batch-*.parquet")) if p.with_suffix(".json").exists()]
    earlier = merge_all([n for i, n in found if i in reused])
    merged = merge_all([n for i, n in found if i not in reused]
                       + [StepNotes({}, earlier.errors, earlier.nulled, earlier.report,
                                    fallbacks=earlier.fallbacks, totals=earlier.totals)])
    merged.reused_calls = earlier.model_calls
    return merged


def _notes(path: Path) -> StepNotes:
    values = json.loads(path.read_text())
    values.pop(COUNT, None)
    return StepNotes(**values)
