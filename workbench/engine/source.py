"""A step's rows as they are stored: Parquet files, or a view of some rows of them.

A step that keeps its rows' content (`keeps_content`: filters, dedups, sample, split, steps
that add scores) need not write its rows again: its checkpoint can be a view, which holds
for each kept row its position in a base (the Parquet files of a dataset version or of an
earlier checkpoint) and the columns that are not content (`CONTENT` columns, `id` and
`parent_id` are the base's; every other column is the view's own). Reading a view streams
the base once, in order, and takes the rows at those positions, so a chain of such steps
writes positions and small columns instead of the whole dataset each time; the rows are
written in full once, when the version is published (or a step that needs files reads it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from workbench.engine import parts
from workbench.errors import WorkbenchError

ROW = "_wb_row"  # a view row's position in its base
BASE_ROWS = 10_000  # rows of the base read at a time


class NotAView(WorkbenchError):
    """A step's output cannot be a view of its input (rows changed, reordered, columns the
    base gives missing): the runner runs the step again writing its rows in full."""


@dataclass(frozen=True)
class Source:
    """`base`: Parquet files. `rows`: a view's files (ROW, ascending, and the view's own
    columns); none for plain files. `columns`: the view's columns in order."""

    base: tuple[Path, ...]
    rows: tuple[Path, ...] = ()
    columns: tuple[str, ...] = ()

    @classmethod
    def of(cls, path: Path) -> Source:
        """The plain Parquet files of a part folder or one file."""
        return cls(tuple(parts.files(path)))

    @property
    def is_view(self) -> bool:
        return bool(self.columns)

    def count(self) -> int:
        return sum(pq.ParquetFile(f).metadata.num_rows for f in self.rows or self.base)

    def schema(self) -> pl.Schema:
        base = parts.schema(list(self.base))
        if not self.is_view:
            return base
        own = parts.schema(list(self.rows))
        return pl.Schema({c: own[c] if c in own else base[c] for c in self.columns})

    def own_columns(self) -> list[str]:
        """The view's columns stored in its own files (not read from the base)."""
        return [c for c in parts.schema(list(self.rows)).names() if c != ROW]

    def exists(self) -> bool:
        return all(f.is_file() for f in (*self.base, *self.rows))

    def batches(self, rows: int, start: int = 0, positions: bool = False,
                columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
        """Batches of exactly `rows` rows (the last may be shorter) from row `start` on,
        conformed to `schema()`; with `positions`, each row's position in the base as ROW;
        `columns` reads only those (in the schema's order)."""
        target = self.schema()
        if columns is not None:
            target = pl.Schema({c: t for c, t in target.items() if c in columns})
        if not self.is_view:
            stream = parts.iter_batches(list(self.base), rows, columns=target.names(),
                                        target=target, start=start)
            offset = start
            for batch in parts.exact_batches(stream, rows):
                if positions:
                    batch = batch.with_columns(pl.int_range(offset, offset + batch.height,
                                                            dtype=pl.UInt64).alias(ROW))
                offset += batch.height
                yield batch
            return
        own = set(self.own_columns())
        from_base = [c for c in target.names() if c not in own]
        wanted = [ROW, *[c for c in target.names() if c in own]]
        stream = parts.exact_batches(
            parts.iter_batches(list(self.rows), rows, columns=wanted, start=start), rows)
        base = BaseReader(self.base, from_base) if from_base else None
        for view in stream:
            batch = view.drop(ROW) if base is None else base.take(
                view[ROW].to_numpy()).hstack(view.drop(ROW))
            batch = parts.conform(batch.select(target.names()), target)
            yield batch.with_columns(view[ROW]) if positions else batch

    def read_rows(self, start: int, rows: int, positions: bool = False) -> pl.DataFrame:
        """Rows start..start+rows (a worker's batch)."""
        return next(self.batches(rows, start=start, positions=positions),
                    pl.DataFrame(schema=self.schema()))

    def scan(self) -> pl.LazyFrame:
        """A lazy frame of the rows (a view's is a join: for steps that collect anyway)."""
        if not self.is_view:
            return parts.scan_files(list(self.base))
        own = self.own_columns()
        base = parts.schema(list(self.base))
        from_base = [c for c in self.columns if c not in own and c in base]
        indexed = pl.scan_parquet(list(self.base)).select(from_base).with_row_index(ROW)
        view = pl.scan_parquet(list(self.rows))
        joined = view.join(indexed.with_columns(pl.col(ROW).cast(pl.UInt64)), on=ROW,
                           how="left", maintain_order="left")
        return joined.select(list(self.columns))

    def positions(self, rows: int = 100_000) -> Iterator[np.ndarray]:
        """Each row's position in the base, a batch at a time (a plain source's are its row
        numbers)."""
        if not self.is_view:
            total = self.count()
            for start in range(0, total, rows):
                yield np.arange(start, min(start + rows, total), dtype=np.uint64)
            return
        for batch in parts.iter_batches(list(self.rows), rows, columns=[ROW]):
            yield batch[ROW].to_numpy()


class BaseReader:
    """Streams base files forward, taking rows at ascending positions."""

    def __init__(self, files: tuple[Path, ...], columns: list[str]) -> None:
        self.files, self.columns = list(files), columns
        self.full = parts.schema(self.files)
        self.stream: Iterator[pl.DataFrame] | None = None
        self.batch: pl.DataFrame | None = None
        self.offset = 0  # position of self.batch's first row

    def _advance(self, position: int) -> None:
        """Make self.batch the base batch that holds `position` (reading starts again there,
        skipping whole row groups, when it is far ahead)."""
        ahead = self.batch is not None and (
            position >= self.offset + self.batch.height + BASE_ROWS)
        if self.stream is None or ahead:
            self.stream = parts.iter_batches(self.files, BASE_ROWS, columns=self.columns,
                                             target=self._schema(), start=position)
            self.offset, self.batch = position, None
        while self.batch is None or position >= self.offset + self.batch.height:
            if self.batch is not None:
                self.offset += self.batch.height
            self.batch = next(self.stream, None)
            if self.batch is None:
                raise IndexError(f"position {position} is past the end of the view's base")

    def take(self, positions: np.ndarray) -> pl.DataFrame:
        pieces, i = [], 0
        while i < len(positions):
            self._advance(int(positions[i]))
            assert self.batch is not None
            end = self.offset + self.batch.height
            j = int(np.searchsorted(positions, end, "left"))
            local = (positions[i:j] - self.offset).astype(np.int64)
            if local[-1] - local[0] == j - i - 1:  # a run of rows: sliced, not copied
                pieces.append(self.batch.select(self.columns).slice(int(local[0]), j - i))
            else:
                pieces.append(self.batch.select(self.columns).gather(local))
            i = j
        if not pieces:
            return pl.DataFrame(schema=self._schema())
        return pieces[0] if len(pieces) == 1 else pl.concat(pieces)

    def _schema(self) -> pl.Schema:
        return pl.Schema({c: self.full[c] for c in self.columns})


def checkpoint_source(checkpoint: Path, meta: dict, root: Path) -> Source:
    """A finished checkpoint's kept rows: its parts (`data/`, also once a view was written
    out), or its view, whose base paths are kept relative to the workspace `root`."""
    data = checkpoint / "data"
    view = meta.get("view")
    if view is None or data.is_dir():
        return Source.of(data)
    return Source(tuple(root / p for p in view["base"]), tuple(parts.files(checkpoint / "rows")),
                  tuple(view["columns"]))


def view_meta(source: Source, columns: list[str], root: Path) -> dict:
    """What a view's meta.json keeps: its base (relative to the workspace) and columns."""
    base = [str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in source.base]
    return {"base": base, "columns": columns}


def materialize(source: Source, rows: int = 5000) -> Source:
    """A view's rows written out as parts in its checkpoint's `data/` (once; for steps and
    readers that need files); plain files as they are."""
    if not source.is_view:
        return source
    from workbench.store.atomic import atomic_dir

    data = source.rows[0].parent.parent / "data"
    try:
        if not data.is_dir():
            with atomic_dir(data) as tmp:
                written = 0
                for index, batch in enumerate(source.batches(rows)):
                    parts.write_part(batch, tmp, index)
                    written += 1
                if not written:
                    parts.write_part(pl.DataFrame(schema=source.schema()), tmp, 0)
    except OSError:
        if not data.is_dir():  # else another reader wrote it out first
            raise
    return Source.of(data)
