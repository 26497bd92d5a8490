"""A run's input, resolved once: a workspace dataset read in place, or a file staged chunk by
chunk into a checkpoint of parts (with ids), reused while the file's bytes are the same."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from workbench.engine import parts
from workbench.engine.checkpoints import META_FILE, CheckpointStore
from workbench.engine.diskfull import writing
from workbench.engine.finalize import DATA_DIR, finalize
from workbench.engine.step_keys import chain_key
from workbench.errors import NotFoundError
from workbench.pipeline import Pipeline
from workbench.store.atomic import atomic_dir, file_sha256
from workbench.workspace import DATA_FILE, Workspace

PART_ROWS = 5000  # a checkpoint's parts hold at least this many rows (fewer, larger files)


@dataclass(frozen=True)
class RunInput:
    path: Path | None  # a Parquet file or a folder of parts; None for a step that creates rows
    kind: str | None
    lineage: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = "none"  # what the first step's key chains on


def resolve_input(pipeline: Pipeline, ws: Workspace, store: CheckpointStore,
                  limit: int | None) -> RunInput:
    ref = pipeline.spec.input
    if ref is None:
        return RunInput(None, None)
    name = ref.partition("@")[0]
    if ws.has_dataset(name):
        version = ws.resolve(ref)
        fingerprint = f"dataset:{version.ref}:limit={limit}"
        lineage = {"dataset": version.ref, "lineage": version.lineage}
        source = version.path / DATA_FILE
        if limit is None:
            return RunInput(source, version.kind, lineage, fingerprint)
        target = store.root / f"input-{chain_key(fingerprint)[:16]}"
        if not (target / DATA_FILE).exists():
            shutil.rmtree(target, ignore_errors=True)
            with writing(target, "the limited input"), atomic_dir(target) as tmp:
                pl.scan_parquet(source).head(limit).sink_parquet(tmp / DATA_FILE)
        return RunInput(target / DATA_FILE, version.kind, lineage, fingerprint)
    path = find_file(pipeline, ws, ref)
    digest = file_sha256(path) if path.is_file() else None
    fingerprint = f"file:{digest}:limit={limit}"
    target = store.root / f"input-{chain_key(fingerprint)[:16]}"
    meta = store.meta(target)
    if meta is None:  # the file as parts with ids, converted and finalized a chunk at a time
        from workbench.io.importer import iter_load

        shutil.rmtree(target, ignore_errors=True)
        with writing(target, f"staging the input {path}"), atomic_dir(target) as tmp:
            loading = iter_load(path, limit=limit)
            if digest is not None:
                loading.known_digest(digest)
            finalize(lambda: parts.prefetch(iter(loading)), loading.kind, tmp, where=str(path),
                     batch_rows=PART_ROWS)
            meta = {"kind": loading.kind, "lineage": loading.lineage()}
            (tmp / META_FILE).write_text(json.dumps(meta, default=str))
    lineage = {"file": str(path), "import": meta["lineage"]}
    return RunInput(target / DATA_DIR, meta["kind"], lineage, fingerprint)


def find_file(pipeline: Pipeline, ws: Workspace, ref: str) -> Path:
    """A relative input path is relative to the pipeline file, wherever it is run from."""
    path = Path(ref).expanduser()
    candidate = path if path.is_absolute() else pipeline.base_dir / path
    if candidate.exists():
        return candidate
    raise NotFoundError(
        f"{pipeline.source}: input {ref!r} is neither a dataset in workspace "
        f"{ws.root} nor a file (looked for {candidate}; relative paths resolve "
        "against the pipeline file's folder)"
    )
