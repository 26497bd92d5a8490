"""`workbench import`: a file or HF dataset in, a validated dataset version out, or nothing."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from workbench import schema
from workbench.atomic import file_sha256
from workbench.errors import InputError
from workbench.io import layouts
from workbench.io.read import detect_format, read_raw
from workbench.workspace import DatasetVersion, Workspace

LOCATION_COLUMNS = ("_line", "_record")


def load(
    path: str | Path,
    mapping: dict[str, str] | None = None,
    layout: str | None = None,
    csv_columns: list[str] | None = None,
) -> tuple[pl.DataFrame, str, dict]:
    """Read and convert a file; returns (canonical frame, kind, lineage of the source)."""
    path = Path(path)
    raw = read_raw(path, csv_columns=csv_columns)
    try:
        raw = _apply_mapping(raw, mapping or {})
        chosen = layouts.by_name(layout) if layout else layouts.detect(raw)
        frame = chosen.convert(raw)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    except pl.exceptions.PolarsError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: cannot convert as {chosen.name} layout ({first})") from exc
    _check_rows(path, frame, chosen.kind)
    frame = frame.drop([c for c in frame.columns if c.startswith("_")])
    schema.validate(frame, chosen.kind, where=str(path), ids=False)
    frame = schema.with_ids(frame, chosen.kind)
    lineage = {
        "source": str(path),
        "format": detect_format(path) if path.exists() else "hub",
        "layout": chosen.name,
        "sha256": file_sha256(path) if path.is_file() else None,
        "mapping": mapping or {},
        "rows": frame.height,
    }
    return frame, chosen.kind, lineage


def import_path(
    workspace: Workspace,
    path: str | Path,
    name: str,
    mapping: dict[str, str] | None = None,
    layout: str | None = None,
    csv_columns: list[str] | None = None,
) -> DatasetVersion:
    frame, kind, lineage = load(path, mapping, layout, csv_columns)
    return workspace.write_dataset(name, frame, kind, lineage={"import": lineage})


def _apply_mapping(raw: pl.DataFrame, mapping: dict[str, str]) -> pl.DataFrame:
    # the source's own ids are kept as source_id; our id is a content hash
    if "id" in raw.columns and "source_id" not in raw.columns and "id" not in mapping.values():
        raw = raw.rename({"id": "source_id"})
    for canonical, column in mapping.items():
        if column not in raw.columns:
            raise InputError(f"--map {canonical}={column}: no column {column!r} "
                             f"(columns: {', '.join(c for c in raw.columns if not c.startswith('_'))})")
        if canonical in raw.columns and canonical != column:
            raw = raw.rename({canonical: f"{canonical}_original"})
        raw = raw.rename({column: canonical})
    return raw


def _check_rows(path: Path, frame: pl.DataFrame, kind: str) -> None:
    """Name the first row (by line or record) whose required fields are null or malformed."""
    checks: list[tuple[str, pl.Expr]] = [
        ("prompt is missing or empty", pl.col("prompt").is_null() | (pl.col("prompt").list.len() == 0)),
        ("prompt has a message with no content",
         pl.col("prompt").list.eval(pl.element().struct.field("content").is_null()).list.any()),
        ("prompt does not end with a user turn",
         pl.col("prompt").list.last().struct.field("role") != "user"),
    ]
    for column in schema.REQUIRED[kind]:
        if column not in ("id", "prompt") and column in frame.columns:
            checks.append((f"field {column!r} is null", pl.col(column).is_null()))
    if "_reply_role" in frame.columns:
        checks.append(("the last message is not an assistant reply",
                       pl.col("_reply_role") != "assistant"))
    location = [c for c in LOCATION_COLUMNS if c in frame.columns]
    for problem, expr in checks:
        bad = frame.select(*location, expr.fill_null(True).alias("_bad")).filter("_bad")
        if bad.height:
            where = layouts._where(bad.row(0, named=True))
            more = f" ({bad.height} rows)" if bad.height > 1 else ""
            raise InputError(f"{path}, {where}: {problem}{more}")
