"""Attach per-row values computed in memory (a rank, the id a row duplicates) to a dataset
that streams: the values are matched to rows by position, batch by batch, so the rows
themselves never sit in memory. A global step then holds 8-30 bytes a row, not the row.

Under the runner (`ctx.input` set) the result is a `BatchStream` over the input (Parquet
files, or a view of some rows of them) that the runner finalizes as it streams past;
elsewhere (a notebook, a test) it is a plain polars plan. Polars' streaming engine was
measured to grow with the data here (715 MB for `with_row_index` over 1M rows against
273 MB at 100k), so the runner path avoids it; `select` computes a step's per-row keys the
same way, a batch at a time over the columns they need.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from workbench.engine import parts
from workbench.engine.source import Source
from workbench.transform import Context

POSITION = "_wb_position"
Step = Callable[[pl.DataFrame, int], pl.DataFrame]


@dataclass(frozen=True)
class BatchStream:
    """A step's input and per-batch functions `(batch, first row's position) -> batch`, with
    the few frame methods global steps use after attaching."""

    source: Source
    steps: tuple[Step, ...] = ()
    rows: int = 10_000
    aside: tuple[Path, ...] = ()  # rows the step drops, whole, by position (`Aside`)

    def pipe(self, step: Step) -> BatchStream:
        return BatchStream(self.source, (*self.steps, step), self.rows, self.aside)

    def with_columns(self, *exprs: pl.Expr) -> BatchStream:
        return self.pipe(lambda batch, _: batch.with_columns(*exprs))

    def filter(self, *predicates: pl.Expr | str) -> BatchStream:
        return self.pipe(lambda batch, _: batch.filter(*predicates))

    def drop(self, *columns: str) -> BatchStream:
        return self.pipe(lambda batch, _: batch.drop(*columns))

    def batches(self, positions: bool = False,
                columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
        """The output, batch by batch (the runner finalizes it as it streams past); with
        `positions`, each row's position in the input's base rides along as `source.ROW`;
        `columns` reads only those of the input (the runner leaves out a view's content
        columns, which a step's functions then must not need: polars says which they
        named, and the runner reads the batches whole)."""
        offset = 0
        for batch in self.source.batches(self.rows, positions=positions, columns=columns):
            height = batch.height
            for step in self.steps:
                batch = step(batch, offset)
            offset += height
            yield batch

    def sink_parts(self, folder: Path) -> None:
        """One part per batch."""
        for index, batch in enumerate(self.batches()):
            parts.write_part(batch, folder, index)

    def collect(self) -> pl.DataFrame:
        return pl.concat(list(self.batches()), how="diagonal_relaxed")

    def lazy(self) -> pl.LazyFrame:
        return self.collect().lazy()

    def collect_schema(self) -> pl.Schema:
        """The output's columns, from the steps run on no rows (nothing is read)."""
        batch = pl.DataFrame(schema=self.source.schema())
        for step in self.steps:
            batch = step(batch, 0)
        return batch.schema


def attach(frame: pl.LazyFrame, values: pl.Series, name: str, ctx: Context,
           aside: Aside | None = None) -> pl.LazyFrame | BatchStream:
    """`frame` with `values[i]` as column `name` on row i (len(values) = rows of `frame`,
    which must be the step's input as given). `aside`: the rows the step will drop, put
    aside whole while it read them (the runner then need not read the input again)."""
    if ctx.input is not None:
        files = aside.close() if aside is not None else ()
        return BatchStream(ctx.input, aside=files).pipe(
            lambda batch, offset: batch.with_columns(
                values.slice(offset, batch.height).alias(name)))
    looked_up = pl.col(POSITION).map_batches(lambda p: values.gather(p).alias(name),
                                            return_dtype=values.dtype, is_elementwise=True)
    return frame.with_row_index(POSITION).with_columns(looked_up.alias(name)).drop(POSITION)


def height(frame: pl.LazyFrame, ctx: Context | None = None) -> int:
    """Rows of the step's input (from Parquet footers under the runner)."""
    if ctx is not None and ctx.input is not None:
        return ctx.input.count()
    return frame.select(pl.len()).collect().item()


def batches(ctx: Context, exprs: tuple[pl.Expr | str, ...],
            columns: list[str]) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """(input batch with `columns` and each row's position, `batch.select(*exprs)`), in
    order: polars computes outside the GIL, two batches at once while the next ones are
    read."""
    assert ctx.input is not None
    names = {n for e in exprs for n in ([e] if isinstance(e, str) else e.meta.root_names())}
    wanted = sorted(names | set(columns))
    return parts.map_ahead(lambda batch: (batch, batch.select(*exprs)), parts.prefetch(
        ctx.input.batches(10_000, positions=True, columns=wanted)))


def attach_sparse(frame: pl.LazyFrame, positions: np.ndarray, values: pl.Series, name: str,
                  ctx: Context, aside: Aside | None = None) -> BatchStream:
    """Under the runner: `values[k]` as column `name` on the row at `positions[k]`
    (ascending), null elsewhere; memory holds only those rows' values (see `attach`)."""
    assert ctx.input is not None
    files = aside.close() if aside is not None else ()

    def step(batch: pl.DataFrame, offset: int) -> pl.DataFrame:
        lo, hi = np.searchsorted(positions, [offset, offset + batch.height])
        column = pl.repeat(None, batch.height, dtype=values.dtype, eager=True).alias(name)
        if hi > lo:
            column = column.scatter(positions[lo:hi] - offset, values.slice(lo, hi - lo))
        return batch.with_columns(column)

    return BatchStream(ctx.input, aside=files).pipe(step)


def values_at(ctx: Context, positions: np.ndarray, column: str) -> pl.Series:
    """The input's `column` at `positions` (ascending), read a batch at a time."""
    assert ctx.input is not None
    found, offset = [], 0
    for batch in ctx.input.batches(10_000, columns=[column]):
        lo, hi = np.searchsorted(positions, [offset, offset + batch.height])
        if hi > lo:
            found.append(batch[column].gather(positions[lo:hi] - offset))
        offset += batch.height
    dtype = ctx.input.schema()[column]
    return pl.concat(found) if found else pl.Series(column, [], dtype)


class FirstSeen:
    """For rows streamed in order, the position of the first row with the same key: the
    keys seen are held sorted with their first row (16 bytes a distinct key), in a large
    array and a small recent one merged into it now and then."""

    def __init__(self) -> None:
        self.keys = [np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.uint64)]
        self.first = [np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)]
        self.rows = 0

    def add(self, keys: np.ndarray) -> np.ndarray:
        """Each key's first row, for the next `len(keys)` rows."""
        keys = np.asarray(keys, dtype=np.uint64)
        here = np.arange(self.rows, self.rows + len(keys), dtype=np.int64)
        # the batch's distinct keys, sorted (so the look-ups below walk the arrays in order),
        # and each one's first row in the batch
        distinct, at_first, which = np.unique(keys, return_index=True, return_inverse=True)
        first = here[at_first]
        for seen, seen_first in zip(self.keys, self.first, strict=True):
            if len(seen):
                at = np.searchsorted(seen, distinct).clip(max=len(seen) - 1)
                first = np.where(seen[at] == distinct, seen_first[at], first)
        new = first >= self.rows  # first seen in this batch
        self.keys[1], self.first[1] = _merged(self.keys[1], self.first[1], distinct[new],
                                              first[new])
        first = first[which.reshape(-1)]
        if len(self.keys[1]) > max(65_536, len(self.keys[0]) // 4):
            self.keys[0], self.first[0] = _merged(self.keys[0], self.first[0], self.keys[1],
                                                  self.first[1])
            self.keys[1] = np.empty(0, dtype=np.uint64)
            self.first[1] = np.empty(0, dtype=np.int64)
        self.rows += len(keys)
        return first


def _merged(keys: np.ndarray, first: np.ndarray, more_keys: np.ndarray,
            more_first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted `keys` with `more_keys` (none of them in `keys`) put in place: a linear merge
    (only the smaller array is sorted)."""
    order = np.argsort(more_keys, kind="stable")
    more_keys, more_first = more_keys[order], more_first[order]
    at = np.searchsorted(keys, more_keys) + np.arange(len(more_keys))
    rest = np.ones(len(keys) + len(more_keys), dtype=bool)
    rest[at] = False
    out_keys = np.empty(len(rest), dtype=keys.dtype)
    out_first = np.empty(len(rest), dtype=first.dtype)
    out_keys[at], out_first[at] = more_keys, more_first
    out_keys[rest], out_first[rest] = keys, first
    return out_keys, out_first


class Aside:
    """Rows a global step will drop, put aside whole (with their positions) as it reads its
    input, written to its temporary folder at once (a filtered batch still holds the
    batch's text buffers): the rows it keeps then stream past without their content."""

    def __init__(self, ctx: Context) -> None:
        self.path = ctx.temp_dir / "aside.parquet" if ctx.temp_dir is not None else None
        self.writer: parts.FileWriter | None = None

    def add(self, rows: pl.DataFrame) -> None:
        if self.path is None or not rows.height:
            return
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = parts.FileWriter(self.path, rows.schema, mark=False)
        self.writer.write(rows)

    def close(self) -> tuple[Path, ...]:
        if self.writer is None:
            return ()
        self.writer.close()
        assert self.path is not None
        return (self.path,)


def select(frame: pl.LazyFrame, ctx: Context, *exprs: pl.Expr | str) -> pl.DataFrame:
    """`frame.select(*exprs)` collected: under the runner a batch at a time over the
    columns the expressions name (the input may be a view), else by polars' streaming
    engine."""
    if ctx.input is None:
        return frame.select(*exprs).collect(engine="streaming")
    names = {n for e in exprs for n in (
        [e] if isinstance(e, str) else e.meta.root_names())}
    # polars computes outside the GIL: two batches at once while the next ones are read
    chunks = list(parts.map_ahead(lambda batch: batch.select(*exprs), parts.prefetch(
        ctx.input.batches(10_000, columns=sorted(names)))))
    if not chunks:
        return frame.head(0).select(*exprs).collect()
    return pl.concat(chunks)
