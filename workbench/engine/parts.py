"""Data as folders of Parquet parts, read and written a batch at a time.

Step checkpoints and staged imports are folders of `part-NNNNNN.parquet` files, so no step
ever concatenates its output in memory; readers stream them with one pyarrow reader.
"""

from __future__ import annotations

import functools
import os
import shutil
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from queue import Full, Queue
from typing import TYPE_CHECKING, Any, TypeVar

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from workbench.engine.source import Source

ROW_GROUP = 10_000  # rows per row group of a published version
LAYOUT_KEY, LAYOUT = b"workbench", b"published-layout"
T = TypeVar("T")
U = TypeVar("U")
PART = "part-{:06d}.parquet"
# checkpoint files: zstd was as fast to write as lz4 here and 2.7x smaller; uncompressed
# writes 3-4x faster, for scratch files read once (an import's parts)
CODEC = "zstd"


def files(path: Path) -> list[Path]:
    """The Parquet files of a part folder (in order), or the one file `path` is."""
    if path.is_dir():
        return sorted(path.glob("*.parquet"))
    return [path]


def scan(path: Path) -> pl.LazyFrame:
    """A lazy frame over a part folder or a file; parts may differ in nullable extra columns.

    Parts that share one schema (every checkpoint: finalize conforms them) are one scan; a
    concat of a thousand scans made polars start a thread per file."""
    return scan_files(files(path))


def scan_files(found: list[Path]) -> pl.LazyFrame:
    """A lazy frame over Parquet files (see `scan`)."""
    if len(found) == 1 or len({_file_schema(f) for f in found}) == 1:
        return pl.scan_parquet(found)
    return pl.concat([pl.scan_parquet(f) for f in found], how="diagonal_relaxed")


def schema(sources: list[Path]) -> pl.Schema:
    """The schema all parts share once widened (a column that is all null in one part)."""
    distinct = list(dict.fromkeys(_file_schema(f) for f in sources))
    if len(distinct) == 1:
        return pl.Schema(distinct[0])
    frames = [pl.DataFrame(schema=dict(s)) for s in distinct]
    return pl.concat(frames, how="diagonal_relaxed").schema


def file_schema(path: Path) -> pl.Schema:
    """One file's schema, from its footer."""
    return pl.Schema(_file_schema(path))


def _file_schema(path: Path) -> tuple:
    """A file's schema from its footer, hashable ((name, type) pairs); footers are read
    once per file version (a step asks for its input's schema many times)."""
    stat = path.stat()
    return _footer_schema(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4096)
def _footer_schema(path: Path, mtime_ns: int, size: int) -> tuple:
    return tuple(pl.read_parquet_schema(path).items())


def count(path: Path) -> int:
    """Rows, from the Parquet footers only."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files(path))


def conform(batch: pl.DataFrame, target: pl.Schema) -> pl.DataFrame:
    """`batch` with exactly the columns and types of `target` (missing columns as nulls)."""
    if batch.schema == target:
        return batch
    empty = pl.DataFrame(schema=target)
    return pl.concat([empty, batch], how="diagonal_relaxed").select(target.names())


def iter_batches(sources: list[Path], rows: int, columns: list[str] | None = None,
                 target: pl.Schema | None = None, start: int = 0) -> Iterator[pl.DataFrame]:
    """Batches of at most `rows` rows, file by file, in order, from row `start` on (whole
    files and row groups before it are skipped unread); `target` conforms each batch.

    Row groups of at most `SMALL_GROUP` rows (every file the workbench writes) are read one
    at a time by polars, which decodes them 2-3x faster than pyarrow's batch reader here;
    larger ones stream through pyarrow, so memory never holds a large row group."""
    keep = None if target is None else target if columns is None else pl.Schema(
        {c: t for c, t in target.items() if c in columns})
    for source in sources:
        # pre_buffer (pyarrow's default) keeps every row group read so far: 600 MB more
        # after 1M rows of 2.4 kB; without it memory stays flat
        reader = pq.ParquetFile(source, pre_buffer=False, buffer_size=1 << 20)
        meta = reader.metadata
        if start >= meta.num_rows:
            start -= meta.num_rows
            continue
        first, skipped = 0, 0
        while start >= meta.row_group(first).num_rows:
            start -= meta.row_group(first).num_rows
            skipped += meta.row_group(first).num_rows
            first += 1
        present = reader.schema_arrow.names
        wanted = None if columns is None else [c for c in columns if c in present]
        groups = range(first, meta.num_row_groups)
        if all(meta.row_group(g).num_rows <= SMALL_GROUP for g in groups):
            frames = _polars_groups(source, meta, groups, skipped, wanted, rows)
        else:
            frames = _arrow_batches(reader, groups, wanted, rows)
        for batch in frames:
            if start:
                if start >= batch.height:
                    start -= batch.height
                    continue
                batch, start = batch.slice(start), 0
            yield batch if keep is None else conform(batch, keep)


SMALL_GROUP = 65_536


def _polars_groups(source: Path, meta: Any, groups: range, offset: int,
                   columns: list[str] | None, rows: int) -> Iterator[pl.DataFrame]:
    scan = pl.scan_parquet(source)
    if columns is not None:
        scan = scan.select(columns)
    for group in groups:
        n = meta.row_group(group).num_rows
        frame = scan.slice(offset, n).collect()
        offset += n
        for at in range(0, n, rows):
            yield frame.slice(at, rows)


def _arrow_batches(reader: pq.ParquetFile, groups: range, columns: list[str] | None,
                   rows: int) -> Iterator[pl.DataFrame]:
    for record_batch in reader.iter_batches(batch_size=rows, row_groups=list(groups),
                                            columns=columns):
        batch = pl.from_arrow(pa.Table.from_batches([record_batch]))
        assert isinstance(batch, pl.DataFrame)
        yield batch


def read_rows(sources: list[Path], start: int, rows: int) -> pl.DataFrame:
    """Rows start..start+rows of the concatenated files (a worker's batch)."""
    return next(exact_batches(iter_batches(sources, rows, start=start), rows),
                pl.DataFrame(schema=schema(sources)))


def exact_batches(batches: Iterable[pl.DataFrame], rows: int) -> Iterator[pl.DataFrame]:
    """Re-cut a stream of batches into batches of exactly `rows` rows (the last may be
    shorter), so batch N always holds the same rows whatever the files' row groups are."""
    pending: list[pl.DataFrame] = []
    held = 0
    for batch in batches:
        while batch.height:
            take = min(rows - held, batch.height)
            pending.append(batch.slice(0, take))
            held += take
            batch = batch.slice(take)
            if held == rows:
                yield pl.concat(pending, how="diagonal_relaxed")
                pending, held = [], 0
    if held:
        yield pl.concat(pending, how="diagonal_relaxed")


def write_part(frame: pl.DataFrame, folder: Path, index: int, codec: str = CODEC) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / PART.format(index)
    write(frame, path, codec)
    return path


def write(frame: pl.DataFrame, path: Path, codec: str = CODEC) -> None:
    """A checkpoint's file (no column statistics: nothing filters checkpoints by them)."""
    frame.write_parquet(path, compression=codec, statistics=False)


def concat_to_file(sources: list[Path] | Source, target_path: Path, rows: int = ROW_GROUP) -> int:
    """Stream parts (or a view of them) into one Parquet file (a published version) under
    their shared schema; one file already laid out so (`FileWriter`) is linked, not copied."""
    from workbench.engine.source import Source

    source = sources if isinstance(sources, Source) else Source(tuple(sources))
    target = source.schema()
    if _publishable(source, target):
        try:
            os.link(source.base[0], target_path)
        except OSError:
            shutil.copyfile(source.base[0], target_path)
        return source.count()
    # polars pulls the batches and compresses on its threads (a pyarrow writer compresses
    # on one: 5.2 -> 4.7 s for 1M rows of 2.4 kB, memory flat)
    from polars.io.plugins import register_io_source

    def batches(with_columns: list[str] | None, predicate: pl.Expr | None,
                n_rows: int | None, batch_size: int | None) -> Iterator[pl.DataFrame]:
        left = n_rows
        for batch in source.batches(rows):
            if with_columns is not None:
                batch = batch.select(with_columns)
            if predicate is not None:
                batch = batch.filter(predicate)
            if left is not None:
                batch, left = batch.head(left), left - min(left, batch.height)
            yield batch
            if left == 0:
                return

    register_io_source(batches, schema=target).sink_parquet(
        target_path, compression="zstd", row_group_size=rows)
    return source.count()


def _publishable(source: Source, target: pl.Schema) -> bool:
    if source.is_view or len(source.base) != 1:
        return False
    metadata = pq.read_schema(source.base[0]).metadata or {}
    return metadata.get(LAYOUT_KEY) == LAYOUT and file_schema(source.base[0]) == target


class FileWriter:
    """Batches into one Parquet file laid out as a published version is: zstd, row groups of
    `ROW_GROUP` rows, under one schema; `mark` notes the layout in the file, so that
    publishing it links the file instead of writing it again."""

    def __init__(self, path: Path, columns: pl.Schema, mark: bool = True) -> None:
        self.columns = columns
        self.arrow = pl.DataFrame(schema=columns).to_arrow().schema
        stored = self.arrow.with_metadata({LAYOUT_KEY: LAYOUT}) if mark else self.arrow
        self.writer = pq.ParquetWriter(path, stored, compression="zstd")

    def write(self, frame: pl.DataFrame) -> None:
        self.writer.write_table(frame.to_arrow().cast(self.arrow), row_group_size=ROW_GROUP)

    def close(self) -> None:
        self.writer.close()

    def __enter__(self) -> FileWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Writes:
    """Writes run in order on one background thread, at most `depth` waiting: compressing
    a batch (pyarrow and polars release the GIL) overlaps with making the next one. An error
    in a write is raised by the next `submit` or by `wait`; use it as a context manager so
    that a caller's error still waits for the writes already queued."""

    def __init__(self, depth: int = 1) -> None:
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="writes")
        self.pending: deque[Future[Any]] = deque()
        self.depth = depth

    def submit(self, function: Callable[..., Any], *args: Any) -> None:
        while len(self.pending) >= self.depth:
            self.pending.popleft().result()
        self.pending.append(self.pool.submit(function, *args))

    def wait(self) -> None:
        while self.pending:
            self.pending.popleft().result()

    def __enter__(self) -> Writes:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.wait()
            else:  # the caller's error wins; queued writes still finish before it leaves
                for future in self.pending:
                    future.exception()
        finally:
            self.pool.shutdown(wait=True)


def map_ahead(function: Callable[[T], U], items: Iterable[T], workers: int = 2) -> Iterator[U]:
    """`function` over `items` on `workers` threads, in order, with at most `workers` items
    taken ahead (memory holds a few batches, not the stream)."""
    with ThreadPoolExecutor(workers) as pool:
        pending: deque[Future[U]] = deque()
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def prefetch(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """`items`, produced by a background thread up to `depth` ahead: reading and decoding
    Parquet (pyarrow, polars) and what the consumer does with it (compressing, polars
    expressions) both release the GIL, so on two cores they overlap. An error in the
    producer is raised here; leaving early stops it."""
    queue: Queue[tuple[bool, Any]] = Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        queue.put((True, item), timeout=0.1)
                        break
                    except Full:
                        continue
                if stop.is_set():
                    return
            queue.put((False, None))
        except BaseException as exc:  # handed to the consumer
            queue.put((False, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:  # a generator's `finally` runs here, in its own thread
                close()

    thread = threading.Thread(target=produce, daemon=True, name="prefetch")
    thread.start()
    try:
        while True:
            more, item = queue.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()  # a producer waiting on a full queue sees it within 0.1 s
        thread.join()
