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
    occurrence, changed = _first_pass(sources, kind, target, batch_rows)
    with_parent = "parent_id" in target or changed
    result = Finalized(0)
    offset = dropped_parts = 0
    batches = parts.exact_batches(parts.iter_batches(sources, batch_rows, target=target),
                                  batch_rows)  # parts of batch_rows rows, however many files
    for index, batch in enumerate(batches):
        kept, dropped, counts = split_drops(batch)
        for reason, n in counts.items():
            result.dropped[reason] = result.dropped.get(reason, 0) + n
        if dropped is not None:
            parts.write_part(dropped, out / DROPPED_DIR, dropped_parts)
            dropped_parts += 1
        schema.validate(kept, kind, where=where, ids=False, offset=offset)
        hashes = (schema.content_hashes(kept, kind) if kept.height
                  else pl.Series("_h", [], pl.String))  # again: 16 bytes a row less to hold
        kept = schema.assign_ids(kept, hashes, occurrence.slice(offset, kept.height), kind)
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
    if offset != occurrence.len():
        raise SchemaError(f"{where}: the output changed while it was being written")
    result.rows_out = offset
    return result


def _first_pass(sources: list[Path], kind: str, target: pl.Schema,
                batch_rows: int) -> tuple[pl.Series, bool]:
    """Each kept row's occurrence number among rows with its content (0 for the first), and
    whether any row's id will change (then the output carries `parent_id`).

    Held per row: the 64-bit content hash, and how the old id relates to it (equal, or the
    hash with a suffix `-k`), about 13 bytes, instead of the ids themselves."""
    wanted = [c for c in (*schema.CONTENT[kind], "id", DROP) if c in target]
    hashes, same, suffixes = [], [], []
    # coalesced: a row-local step leaves one small file per batch, and hashing pays a fixed
    # cost per call
    batches = parts.exact_batches(parts.iter_batches(sources, batch_rows, columns=wanted,
                                                     target=target), batch_rows)
    for batch in batches:
        if DROP in batch.columns:
            batch = batch.filter(pl.col(DROP).is_null())
        if not batch.height:
            continue
        frame = pl.DataFrame({"h": schema.content_hashes(batch, kind),
                              "old": batch["id"].cast(pl.String) if "id" in batch.columns
                              else pl.Series([None] * batch.height, dtype=pl.String)})
        numbered = pl.col("old").str.starts_with(pl.col("h") + "-")
        frame = frame.select(
            pl.col("h").str.to_integer(base=16, dtype=pl.UInt64),
            (pl.col("old") == pl.col("h")).fill_null(False).alias("same"),
            pl.when(numbered).then(pl.col("old").str.slice(17).str.to_integer(strict=False))
            .cast(pl.Int32).alias("suffix"))
        hashes.append(frame["h"])
        same.append(frame["same"])
        suffixes.append(frame["suffix"])
    if not hashes:
        return pl.Series("_occ", [], pl.Int64), False
    state = pl.DataFrame({"h": pl.concat(hashes), "same": pl.concat(same),
                          "suffix": pl.concat(suffixes)})
    del hashes, same, suffixes
    occurrence = state.select(pl.int_range(pl.len()).over("h").alias("_occ"))["_occ"]
    kept_id = pl.when(occurrence == 0).then(pl.col("same")).otherwise(
        pl.col("suffix") == pl.lit(occurrence))
    changed = "id" in target and bool(state.select((~kept_id.fill_null(False)).any()).item())
    return occurrence, changed
