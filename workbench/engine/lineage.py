"""Where a dataset version's rows came from and where the others went: the run that wrote it,
its steps (rows in and out, drops by reason) and each step's kept dropped rows (a folder of
Parquet parts in its checkpoint)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from workbench.engine.checkpoints import CheckpointStore
from workbench.engine.finalize import DROPPED_DIR
from workbench.engine.source import checkpoint_source
from workbench.errors import NotFoundError
from workbench.query.query import browse_file
from workbench.workspace import DatasetVersion, Workspace


@dataclass(frozen=True)
class StepDrops:
    index: int
    step: str
    rows_in: int | None
    rows_out: int | None
    dropped: dict[str, int]
    checkpoint: Path | None  # None when the run log has no checkpoint (or it was cleaned)

    @property
    def dropped_file(self) -> Path | None:
        if self.checkpoint is None or not (self.checkpoint / DROPPED_DIR).is_dir():
            return None
        return self.checkpoint / DROPPED_DIR


def steps(ws: Workspace, version: DatasetVersion) -> list[StepDrops]:
    """The steps of the run that wrote `version`, from its run log (checkpoint paths) or, for a
    version without one, from the lineage it carries."""
    run_id = version.lineage.get("run_id")
    logs = ws.step_logs(run_id) if run_id else []
    if logs:
        return [StepDrops(r["step_index"], r["step"], r["rows_in"], r["rows_out"], r["dropped"],
                          _checkpoint(ws, r["detail"].get("checkpoint"))) for r in logs]
    return [StepDrops(s["index"], s["step"], s.get("rows_in"), s.get("rows_out"),
                      s.get("dropped") or {}, None) for s in version.lineage.get("steps", [])]


def _checkpoint(ws: Workspace, value: Any) -> Path | None:
    """The checkpoint folder a run log names, found again under this workspace's cache when
    the workspace was moved or copied since (logs keep absolute paths)."""
    if not value:
        return None
    path = Path(value)
    if path.is_relative_to(ws.root) or path.resolve().is_relative_to(ws.root.resolve()):
        return path
    return ws.cache_dir / "checkpoints" / path.parent.name / path.name


def drops_table(ws: Workspace, version: DatasetVersion) -> pl.DataFrame:
    """One row per (step, drop reason) with its count, for a chart."""
    rows = [{"step": f"{s.index}: {s.step}", "reason": reason, "rows": count}
            for s in steps(ws, version) for reason, count in s.dropped.items()]
    return pl.DataFrame(rows, schema={"step": pl.String, "reason": pl.String, "rows": pl.Int64})


def _step(ws: Workspace, version: DatasetVersion, index: int) -> StepDrops:
    for step in steps(ws, version):
        if step.index == index:
            return step
    raise NotFoundError(f"{version.ref} has no step {index}")


def browse_dropped(ws: Workspace, version: DatasetVersion, index: int,
                   **options: Any) -> tuple[pl.DataFrame, int]:
    """A page of the rows step `index` dropped (with `_drop_reason`, and `duplicate_of` for
    duplicates), through the query sandbox like `query.browse`."""
    path = _step(ws, version, index).dropped_file
    if path is None:
        raise NotFoundError(f"step {index} of {version.ref} kept no dropped rows (or its "
                            "checkpoint was removed)")
    return browse_file(ws, path, **options)


def kept_twin(ws: Workspace, version: DatasetVersion, index: int,
              twin_id: str) -> dict[str, Any] | None:
    """The row a duplicate was dropped in favour of: in that step's kept output."""
    step = _step(ws, version, index)
    meta = CheckpointStore.meta(step.checkpoint) if step.checkpoint is not None else None
    if step.checkpoint is None or meta is None:
        return None
    kept = checkpoint_source(step.checkpoint, meta, ws.root)
    if not kept.exists():
        return None
    found = kept.scan().filter(pl.col("id") == twin_id).collect()
    return found.row(0, named=True) if found.height else None


def describe(version: DatasetVersion) -> str:
    """Where a version came from, in one line: an import, a pipeline run or labels."""
    lin = version.lineage
    if "import" in lin:
        source = lin["import"]
        return f"imported from `{source.get('source')}` (layout {source.get('layout')})"
    if "pipeline" in lin:
        origin = lin.get("input") or {}
        start = origin.get("dataset") or origin.get("file") or "nothing (synthesized)"
        return (f"pipeline **{lin['pipeline'].get('name')}** (run `{lin.get('run_id')}`, seed "
                f"{lin['pipeline'].get('seed')}) from `{start}`")
    if "labels_from" in lin:
        return (f"human labels applied to `{lin['labels_from']}` "
                f"(policy {lin.get('labels', {}).get('policy')})")
    return "written from the library"


def origin(version: DatasetVersion) -> str:
    """A short origin for a table: the import file name, pipeline name or labelled source."""
    lin = version.lineage
    if "import" in lin:
        return "import: " + Path(str(lin["import"].get("source"))).name
    if "pipeline" in lin:
        return "pipeline: " + str(lin["pipeline"].get("name"))
    if "labels_from" in lin:
        return "labels: " + str(lin["labels_from"])
    return ""
