"""From a step's raw output to a checkpoint: kept rows with ids, dropped rows, counts.

A pure function of the output files, run the same way whichever executor made them. It
streams in two passes: the first hashes each kept row's content (16 bytes a row stay in
memory, so duplicates can be numbered in order across batches), the second validates,
assigns ids and writes the kept and dropped parts batch by batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from workbench import parts, schema
from workbench.errors import SchemaError
from workbench.transform import DROP

DATA_DIR = "data"
DROPPED_DIR = "dropped"


@dataclass
class Finalized:
    rows_out: int
    dropped: dict[str, int] = field(default_factory=dict)
    columns: list[str] = field(default_factory=list)


def split_drops(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame | None, dict[str, int]]:
    """(kept rows without the mark, dropped rows, dropped counts by reason)."""
    if DROP not in frame.columns:
        return frame, None, {}
    marked = pl.col(DROP).is_not_null()
    dropped = frame.filter(marked)
    counts = dropped.group_by(DROP).len() if dropped.height else None
    by_reason = {} if counts is None else dict(zip(counts[DROP].to_list(),
                                                   counts["len"].to_list(), strict=True))
    return frame.filter(~marked).drop(DROP), dropped if dropped.height else None, by_reason


def finalize(sources: list[Path], kind: str, out: Path, where: str,
             batch_rows: int = 10_000) -> Finalized:
    """Write `out/data/part-*.parquet` (and `out/dropped/` when rows were dropped)."""
    target = parts.schema(sources)
    kept_schema = pl.Schema({c: t for c, t in target.items() if c != DROP})
    schema.validate(pl.DataFrame(schema=kept_schema), kind, where=where, ids=False)
    hashes, old_ids = _first_pass(sources, kind, target, batch_rows)
    occurrence = schema.occurrences(hashes)
    new_ids = pl.DataFrame({"h": hashes, "o": occurrence}).select(
        pl.when(pl.col("o") == 0).then(pl.col("h"))
        .otherwise(pl.col("h") + "-" + pl.col("o").cast(pl.String)))["h"]
    with_parent = "parent_id" in target or (
        old_ids is not None and bool((old_ids.is_null() | (old_ids != new_ids)).any()))
    del new_ids, old_ids
    result = Finalized(0)
    offset = dropped_parts = 0
    for index, batch in enumerate(parts.iter_batches(sources, batch_rows, target=target)):
        kept, dropped, counts = split_drops(batch)
        for reason, n in counts.items():
            result.dropped[reason] = result.dropped.get(reason, 0) + n
        if dropped is not None:
            parts.write_part(dropped, out / DROPPED_DIR, dropped_parts)
            dropped_parts += 1
        schema.validate(kept, kind, where=where, ids=False, offset=offset)
        kept = schema.assign_ids(kept, hashes.slice(offset, kept.height),
                                 occurrence.slice(offset, kept.height), kind)
        if with_parent and "parent_id" not in kept.columns:
            kept = kept.with_columns(pl.lit(None, pl.String).alias("parent_id"))
        if kept.height or index == 0:
            parts.write_part(kept, out / DATA_DIR, index)
            result.columns = kept.columns
        offset += kept.height
    if offset == 0 and not (out / DATA_DIR).exists():  # no rows at all: keep the schema
        empty = schema.assign_ids(pl.DataFrame(schema=kept_schema), pl.Series([], dtype=pl.String),
                                  pl.Series([], dtype=pl.Int64), kind)
        parts.write_part(empty, out / DATA_DIR, 0)
        result.columns = empty.columns
    if offset != hashes.len():
        raise SchemaError(f"{where}: the output changed while it was being written")
    result.rows_out = offset
    return result


def _first_pass(sources: list[Path], kind: str, target: pl.Schema,
                batch_rows: int) -> tuple[pl.Series, pl.Series | None]:
    """Content hashes (and old ids) of the kept rows, in order."""
    wanted = [c for c in (*schema.CONTENT[kind], "id", DROP) if c in target]
    hashes, ids = [], []
    for batch in parts.iter_batches(sources, batch_rows, columns=wanted, target=target):
        if DROP in batch.columns:
            batch = batch.filter(pl.col(DROP).is_null())
        hashes.append(schema.content_hashes(batch, kind) if batch.height
                      else pl.Series("_h", [], pl.String))
        if "id" in batch.columns:
            ids.append(batch["id"].cast(pl.String))
    all_hashes = pl.concat(hashes) if hashes else pl.Series("_h", [], pl.String)
    return all_hashes, (pl.concat(ids) if ids else None) if "id" in target else None
