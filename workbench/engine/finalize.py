"""From a step's raw output to a checkpoint: kept rows with ids, dropped rows, counts.

A pure function of the output, run the same way whichever executor made it, in one
streaming pass: each batch's dropped rows are split off, its kept rows are validated, given
ids and written as a part. Rows of a step that keeps its rows' content (`keeps_content`)
keep their ids, unhashed (a few rows of every part are hashed to check it). Otherwise ids
are content hashes, and duplicates are numbered in order across batches from a sorted array
of the hashes seen so far (`Numbering`, 8 bytes a row). Parts written before a later batch
widened the columns (a `parent_id` first needed there, a column that first appears in a
later chunk of an import) are rewritten at the end, so every part has the same schema.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from workbench import schema
from workbench.engine import parts
from workbench.engine.source import ROW, NotAView
from workbench.transform import DROP

DATA_DIR = "data"
DROPPED_DIR = "dropped"
ROWS_DIR = "rows"  # a view's positions and own columns
CHECKED_PER_PART = 8  # rows of each part whose content is hashed when ids are kept
CHECK_EVERY = 10  # a view's streamed batches: every tenth is checked

Batches = Callable[[], Iterable[pl.DataFrame]]  # each call streams the output again


@dataclass
class Finalized:
    rows_out: int
    dropped: dict[str, int] = field(default_factory=dict)
    columns: list[str] = field(default_factory=list)
    ids: str = "hashed"  # "kept": the input's ids, unhashed; "hashed": content hashes


class _NotContentIds(Exception):
    """A row whose id is not its content's hash turned up where ids were to be kept."""


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


def finalize(sources: list[Path] | Batches, kind: str, out: Path, where: str,
             batch_rows: int = 10_000, keep_ids: bool = False,
             columns: pl.Schema | None = None, codec: str = parts.CODEC,
             one_file: bool = False) -> Finalized:
    """Write `out/data/part-*.parquet` (and `out/dropped/` when rows were dropped).

    `sources`: the output's Parquet files, or a function that streams its batches (each
    call from the start; `columns` is then the output's schema, for an output without
    rows). `keep_ids`: the rows keep the ids they carry (a `keeps_content` step); should a
    checked row's id not be its content hash (a dataset published with ids of its own),
    every row is hashed instead, as without it. `codec`: the parts' compression. `one_file`:
    the kept rows go into one file laid out for publishing (`parts.FileWriter`), which
    publishing links instead of writing again, for as long as the batches share columns
    (parts follow, and the file is rewritten with the rest, when they widen)."""
    if callable(sources):
        stream = sources

        def batches() -> Iterable[pl.DataFrame]:
            return parts.exact_batches(stream(), batch_rows)
    else:  # conformed to the schema the files share once widened: no part to rewrite
        files = list(sources)
        columns = parts.schema(files)

        def batches() -> Iterable[pl.DataFrame]:
            return parts.exact_batches(parts.iter_batches(files, batch_rows, target=columns),
                                       batch_rows)
    if keep_ids:
        try:
            return _write(batches, kind, out, where, columns, codec, one_file, keep=True)
        except _NotContentIds:
            for folder in (DATA_DIR, DROPPED_DIR):
                shutil.rmtree(out / folder, ignore_errors=True)
    return _write(batches, kind, out, where, columns, codec, one_file, keep=False)


def _write(batches: Batches, kind: str, out: Path, where: str, columns: pl.Schema | None,
           codec: str, one_file: bool, keep: bool) -> Finalized:
    result = Finalized(0, ids="kept" if keep else "hashed")
    single: parts.FileWriter | None = None  # `one_file`, while the batches share columns
    numbering = Numbering()
    changed = False  # some row's id changed: every part then carries `parent_id`
    written: list[Path] = []
    offset = dropped_parts = 0
    with parts.Writes() as writes:  # a batch compresses while the next is hashed
        for index, batch in enumerate(batches()):
            kept, dropped, counts = split_drops(batch)
            if index == 0:  # missing or mistyped columns are named before any row
                schema.validate(pl.DataFrame(schema=kept.schema), kind, where=where, ids=False)
            for reason, n in counts.items():
                result.dropped[reason] = result.dropped.get(reason, 0) + n
            if dropped is not None:
                writes.submit(parts.write, dropped,
                              _part_path(out / DROPPED_DIR, dropped_parts))
                dropped_parts += 1
            schema.validate(kept, kind, where=where, ids=False, offset=offset)
            if keep:
                _check_ids(kept, kind)
                kept = schema.canonical_order(kept, kind)
            else:
                kept, changed_here = _hashed_ids(kept, kind, numbering)
                changed = changed or changed_here
                if changed and "parent_id" not in kept.columns:
                    kept = kept.with_columns(pl.lit(None, pl.String).alias("parent_id"))
            if one_file and index == 0:
                written.append(_part_path(out / DATA_DIR, 0))
                single = parts.FileWriter(written[0], kept.schema)
            if single is not None and kept.schema != single.columns:  # wider: parts from here
                writes.submit(single.close)
                single = None
            if single is not None:
                writes.submit(single.write, kept)
            elif kept.height or index == 0:
                written.append(_part_path(out / DATA_DIR, index))
                writes.submit(parts.write, kept, written[-1], codec)
            offset += kept.height
        if single is not None:
            writes.submit(single.close)
    if not written:  # no batch at all: an empty part keeps the schema
        empty = pl.DataFrame(schema={c: t for c, t in (columns or {}).items() if c != DROP})
        schema.validate(empty, kind, where=where, ids=False)
        if "id" not in empty.columns:
            empty = empty.with_columns(pl.lit(None, pl.String).alias("id"))
        written.append(parts.write_part(schema.canonical_order(empty, kind), out / DATA_DIR, 0,
                                        codec))
    result.columns = _conform(written, codec)
    result.rows_out = offset
    return result


def _part_path(folder: Path, index: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder / parts.PART.format(index)


def _check_ids(kept: pl.DataFrame, kind: str) -> None:
    if not ids_are_content(kept, kind):
        raise _NotContentIds


def ids_are_content(frame: pl.DataFrame, kind: str, rows: int = CHECKED_PER_PART) -> bool:
    """Whether `rows` rows spread over `frame` carry ids that start with their content hash
    (not so: a mis-declared `keeps_content`, or ids from elsewhere)."""
    if not frame.height:
        return True
    if "id" not in frame.columns or any(c not in frame.columns for c in schema.CONTENT[kind]):
        return False
    step = max(1, frame.height // rows)
    sample = frame.gather_every(step).head(rows)
    if DROP in sample.columns:  # a step may do what it likes to rows it drops
        sample = sample.filter(pl.col(DROP).is_null())
    hashes = schema.content_hashes(sample, kind)
    ids = sample["id"].cast(pl.String)
    return bool((ids.str.slice(0, 16) == hashes).fill_null(False).all())


def _hashed_ids(kept: pl.DataFrame, kind: str,
                numbering: Numbering) -> tuple[pl.DataFrame, bool]:
    """The batch with content-hash ids (duplicates numbered across batches) and whether an
    id changed; a changed id is kept as `parent_id` (see `schema.with_ids`)."""
    hashes = (schema.content_hashes(kept, kind) if kept.height
              else pl.Series("_h", [], pl.String))
    occurrence = numbering.number(hashes.str.to_integer(base=16, dtype=pl.UInt64).to_numpy())
    new_id = pl.when(pl.col("_occ") == 0).then(pl.col("_h")).otherwise(
        pl.col("_h") + pl.lit("-") + pl.col("_occ").cast(pl.String))
    out = kept.with_columns(hashes.alias("_h"), pl.Series("_occ", occurrence, pl.Int64)
                            ).with_columns(new_id.alias("_new_id"))
    changed = False
    if "id" in kept.columns:
        old = pl.col("id").cast(pl.String)
        moved = old.is_null() | (old != pl.col("_new_id"))
        changed = bool(out.select(moved.any()).item())
        if changed or "parent_id" in kept.columns:
            previous = (pl.col("parent_id").cast(pl.String) if "parent_id" in kept.columns
                        else pl.lit(None, pl.String))
            out = out.with_columns(pl.when(moved).then(old).otherwise(previous)
                                   .alias("parent_id"))
    out = out.with_columns(pl.col("_new_id").alias("id")).drop("_h", "_occ", "_new_id")
    return schema.canonical_order(out, kind), changed


def _conform(written: list[Path], codec: str) -> list[str]:
    """Rewrite the parts whose schema differs from the one they share once widened (columns
    that appeared in a later batch), a batch at a time; the shared columns."""
    target = parts.schema(written)
    for path in written:
        if parts.file_schema(path) != target:
            moved = path.with_suffix(".old")
            path.rename(moved)
            with parts.FileWriter(path, target, mark=False) as writer:
                for batch in parts.iter_batches([moved], parts.ROW_GROUP, target=target):
                    writer.write(batch)
            moved.unlink()
    return target.names()


class Numbering:
    """Occurrence numbers of row hashes in order over a stream of batches: 0 for a hash's
    first row, 1 for its second... The hashes seen are held sorted (8 bytes a row), in a
    large array and a small recent one merged into it now and then."""

    def __init__(self) -> None:
        self.main = np.empty(0, dtype=np.uint64)
        self.recent = np.empty(0, dtype=np.uint64)

    def number(self, hashes: np.ndarray) -> np.ndarray:
        hashes = np.asarray(hashes, dtype=np.uint64)
        before = np.zeros(len(hashes), dtype=np.int64)
        for seen in (self.main, self.recent):
            if len(seen):
                before += (np.searchsorted(seen, hashes, "right")
                           - np.searchsorted(seen, hashes, "left"))
        within = pl.DataFrame({"h": hashes}).select(
            pl.int_range(pl.len()).over("h").alias("k"))["k"].to_numpy()
        self.recent = np.sort(np.concatenate([self.recent, hashes]), kind="stable")
        if len(self.recent) > max(65_536, len(self.main) // 8):
            self.main = np.sort(np.concatenate([self.main, self.recent]), kind="stable")
            self.recent = np.empty(0, dtype=np.uint64)
        return before + within


def finalize_view(batches: Batches, kind: str, out: Path, base: tuple[Path, ...],
                  batch_rows: int, check: bool = True, columns: list[str] | None = None,
                  aside: tuple[Path, ...] = ()) -> Finalized:
    """Write a view's checkpoint: `out/rows/part-*.parquet` (each kept row's position in
    the `base` files, `source.ROW`, and the columns that are not the base's: all but the
    kind's content columns, `id` and `parent_id`) and `out/dropped/` (dropped rows whole).

    `batches` stream the step's output with ROW. Its kept rows keep their ids, so nothing
    is hashed but a few rows now and then (`check`; a row step checks its batches as they
    are made, `executors.thin`, and its kept rows' content is null here). `columns`, the
    output's columns in order, says that the batches come without the content columns (a
    stream that never read them): dropped rows then take them from the rows the step put
    aside whole (`positional.Aside`), else from the base. Raises
    `NotAView` when the output cannot be one: no rows, columns the base must give missing,
    positions out of order, or a checked row changed."""
    result = Finalized(0, ids="kept")
    base_schema = parts.schema(list(base))
    from_base = [c for c in (*schema.CONTENT[kind], "id", "parent_id") if c in base_schema]
    own: list[str] | None = None
    fill: _Fill | None = None
    last = -1
    dropped_parts = 0
    for index, batch in enumerate(parts.exact_batches(batches(), batch_rows)):
        kept, dropped, counts = split_drops(batch)
        present = [c for c in kept.columns if c != ROW]
        if own is None:
            result.columns = present if columns is None else [
                c for c in columns if c not in (DROP, ROW)]
            needed = (*schema.CONTENT[kind], "id")
            if ROW not in kept.columns or any(c not in result.columns for c in needed) or (
                    columns is not None and any(c in present for c in schema.CONTENT[kind])):
                raise NotAView("the output lacks the base's columns, or makes them")
            own = [c for c in result.columns if c not in from_base]
            target = kept.select(ROW, *own).schema
            if columns is not None:
                fill = _Fill(base, [c for c in from_base if c not in present], columns, aside)
        elif present != (result.columns if columns is None else
                         [c for c in result.columns if c in present]):
            raise NotAView("the output's columns changed between batches")
        rows = kept[ROW]
        if rows.len() and (rows[0] <= last or not rows.is_sorted()):
            raise NotAView("the output's rows are not in their input's order")
        last = rows[-1] if rows.len() else last
        if check and index % CHECK_EVERY == 0 and not ids_are_content(kept, kind):
            raise NotAView("its rows changed")
        for reason, n in counts.items():
            result.dropped[reason] = result.dropped.get(reason, 0) + n
        if dropped is not None:
            whole = dropped.drop(ROW) if fill is None else fill(dropped)
            parts.write_part(whole, out / DROPPED_DIR, dropped_parts)
            dropped_parts += 1
        if kept.height or index == 0:
            parts.write_part(parts.conform(kept.select(ROW, *own), target), out / ROWS_DIR,
                             index)
        result.rows_out += kept.height
    if own is None:
        raise NotAView("the output has no batches")
    return result


class _Fill:
    """Dropped rows of a stream that never read the base's columns, made whole: from the
    rows the step put aside (in the same order), else from the base."""

    def __init__(self, base: tuple[Path, ...], missing: list[str], order: list[str],
                 aside: tuple[Path, ...]) -> None:
        from workbench.engine.source import BaseReader

        self.base, self.missing = base, missing
        self.reader = BaseReader(base, missing) if missing else None
        self.order = [c for c in order if c != ROW]
        have = parts.schema(list(aside)).names() if aside else []
        self.aside = (parts.iter_batches(list(aside), 10_000)
                      if aside and all(c in have for c in missing) else None)
        self.pending: list[pl.DataFrame] = []

    def __call__(self, dropped: pl.DataFrame) -> pl.DataFrame:
        if self.missing:
            dropped = dropped.hstack(self._take(dropped[ROW]))
        return dropped.select(self.order)

    def _take(self, rows: pl.Series) -> pl.DataFrame:
        if self.aside is not None:
            found = self._next(rows.len())
            if found is not None and found[ROW].equals(rows, check_names=False):
                return found.select(self.missing)
            self.aside = None  # not the rows dropped after all: from the base from here
        assert self.reader is not None
        return self.reader.take(rows.to_numpy())

    def _next(self, n: int) -> pl.DataFrame | None:
        """The next `n` rows put aside."""
        assert self.aside is not None
        held = sum(f.height for f in self.pending)
        while held < n:
            more = next(self.aside, None)
            if more is None:
                return None
            self.pending.append(more)
            held += more.height
        joined = pl.concat(self.pending) if len(self.pending) > 1 else self.pending[0]
        self.pending = [joined.slice(n)] if joined.height > n else []
        return joined.head(n)
