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
    chosen: layouts.Layout | None = None
    try:
        raw = _prepare(raw, mapping or {})
        chosen = layouts.by_name(layout) if layout else layouts.detect(raw)
        layouts.check_columns(chosen, raw.schema)
        problem = _first_problem(raw, chosen.row_checks(raw.schema))
        frame = chosen.convert(raw) if problem is None else raw
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    except pl.exceptions.PolarsError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        what = f"as {chosen.name} layout" if chosen else "the columns"
        raise InputError(f"{path}: cannot convert {what} ({first})") from exc
    if problem is not None:
        raise InputError(f"{path}, {problem}")
    _check_rows(path, frame, chosen)
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


def _prepare(raw: pl.DataFrame, mapping: dict[str, str]) -> pl.DataFrame:
    """--map renames first, then known column names are matched case-insensitively; the
    source's own ids are kept as source_id (our id is a content hash)."""
    raw = layouts.normalise_columns(_apply_mapping(raw, mapping))
    if "id" in raw.columns and "source_id" not in raw.columns and "id" not in mapping:
        raw = raw.rename({"id": "source_id"})
    return raw


def _apply_mapping(raw: pl.DataFrame, mapping: dict[str, str]) -> pl.DataFrame:
    for canonical, column in mapping.items():
        column = _find_column(raw, canonical, column)
        # a column already named like the target (in any case) steps aside
        for other in [c for c in raw.columns if c.lower() == canonical.lower() and c != column]:
            raw = raw.rename({other: f"{canonical}_original"})
        raw = raw.rename({column: canonical})
    return raw


def _find_column(raw: pl.DataFrame, canonical: str, column: str) -> str:
    """The column named exactly, else the one column with that name in another case."""
    if column in raw.columns:
        return column
    folded = [c for c in raw.columns if c.lower() == column.lower()]
    if len(folded) == 1:
        return folded[0]
    listed = ", ".join(c for c in raw.columns if not c.startswith("_"))
    if folded:
        raise InputError(f"--map {canonical}={column}: several columns match in another case "
                         f"({', '.join(folded)}); name one exactly")
    raise InputError(f"--map {canonical}={column}: no column {column!r} (columns: {listed})")


def _first_problem(frame: pl.DataFrame, checks: list[tuple[str, pl.Expr]]) -> str | None:
    """'line N: problem (K rows)' for the first check that some row fails, else None."""
    location = [c for c in LOCATION_COLUMNS if c in frame.columns]
    for problem, expr in checks:
        bad = frame.select(*location, expr.fill_null(True).alias("_bad")).filter("_bad")
        if bad.height:
            more = f" ({bad.height} rows)" if bad.height > 1 else ""
            return f"{layouts.where(bad.row(0, named=True))}: {problem}{more}"
    return None


def _check_rows(path: Path, frame: pl.DataFrame, layout: layouts.Layout) -> None:
    """Name the first row (by line or record) whose required fields are null or malformed."""
    role = pl.element().struct.field("role")
    checks: list[tuple[str, pl.Expr]] = [
        ("prompt is missing or empty", pl.col("prompt").is_null() | (pl.col("prompt").list.len() == 0)),
        ("prompt has a message with no content",
         pl.col("prompt").list.eval(pl.element().struct.field("content").is_null()).list.any()),
        (f"prompt has a message whose role is not one of {', '.join(schema.ROLES)}",
         pl.col("prompt").list.eval(~role.is_in(list(schema.ROLES)).fill_null(True)).list.any()),
        ("prompt does not end with a user turn",
         pl.col("prompt").list.last().struct.field("role") != "user"),
    ]
    for column in schema.REQUIRED[layout.kind]:
        if column not in ("id", "prompt") and column in frame.columns:
            checks.append((f"field {column!r} is null", pl.col(column).is_null()))
    for column in layout.booleans:
        checks.append((f"field {column!r} is null or not a boolean", pl.col(column).is_null()))
    if "_reply_role" in frame.columns:
        checks.append(("the last message is not an assistant reply",
                       pl.col("_reply_role") != "assistant"))
    problem = _first_problem(frame, checks)
    if problem is not None:
        raise InputError(f"{path}, {problem}")
