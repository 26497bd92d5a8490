"""`workbench import`: a file or HF dataset in, a validated dataset version out, or nothing.

The source is read and converted a chunk at a time (`iter_load`) and given content-hash
ids as it streams past (`workbench.engine.finalize`), written into one file in a scratch folder
that becomes the version's file (`Workspace.publish_parts` links it), so memory holds a
chunk, not the file. The layout is detected on the first chunk; errors name the real line/record.
Reasoning traces, in whichever common layout they come, move to their own columns
(`layout_traces`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from workbench import schema
from workbench.engine import parts
from workbench.engine.crashpoints import crashpoint
from workbench.engine.diskfull import writing
from workbench.engine.finalize import DATA_DIR, finalize
from workbench.errors import InputError
from workbench.io import layouts
from workbench.io.layout_traces import with_traces
from workbench.io.read import CHUNK_ROWS, detect_format, iter_raw
from workbench.store.atomic import file_sha256
from workbench.workspace import DatasetVersion, Workspace, check_name

LOCATION_COLUMNS = ("_line", "_record")
Problem = tuple[str, int]  # ("line N: what is wrong", how many rows of the chunk)


@dataclass(frozen=True)
class Staged:
    """A source converted into a folder of parts (canonical columns, no ids yet)."""

    kind: str
    lineage: dict[str, Any]
    files: list[Path]


class Loading:
    """The converted canonical chunks of one source, without ids, read as they are iterated.

    Creating it reads the first chunk, so `kind` and `layout` are known before any rows are
    used; `lineage()` counts the rows converted so far, all of them once iterated. Each raw
    chunk is widened to the columns and types of the chunks before it (a key missing from,
    or null in, every row of a chunk reads as null of the type seen before), as one frame of
    the whole file would read. Iterate it once.
    """

    def __init__(self, path: str | Path, mapping: dict[str, str] | None = None,
                 layout: str | None = None, csv_columns: list[str] | None = None,
                 chunk_rows: int | None = CHUNK_ROWS, limit: int | None = None) -> None:
        self.path = Path(path)
        self.mapping = dict(mapping or {})
        self.rows = 0
        self._left = limit
        self._seen: pl.Schema | None = None
        self._sha256: Future[str] | None = None
        self._raw = iter_raw(self.path, csv_columns=csv_columns, chunk_rows=chunk_rows)
        self._ahead: pl.DataFrame | None = None
        first = next(self._raw, None)  # readers yield at least one frame, or raise
        if first is None:
            raise InputError(f"{self.path}: no rows")
        first = self._align(first)
        with _worded(self.path, "the columns"):
            self._first: pl.DataFrame | None = _prepare(first, self.mapping)
            self.layout = layouts.by_name(layout) if layout else layouts.detect(self._first)

    @property
    def kind(self) -> str:
        return self.layout.kind

    def __iter__(self) -> Iterator[pl.DataFrame]:
        chunk, self._first = self._first, None
        try:
            while chunk is not None:
                yield self._convert(chunk)
                raw = self._next_raw()
                if raw is not None:
                    with _worded(self.path, "the columns"):
                        chunk = _prepare(raw, self.mapping)
                else:
                    chunk = None
        finally:
            self._raw.close()

    def digest_ahead(self) -> None:
        """Start hashing the file on a thread of its own, while its rows are read."""
        if self._sha256 is None and self.path.is_file():
            self._sha256 = _digest_on_a_thread(self.path)

    def known_digest(self, sha256: str) -> None:
        """The file's digest, already computed by the caller (not hashed again)."""
        self._sha256 = Future()
        self._sha256.set_result(sha256)

    def lineage(self) -> dict[str, Any]:
        """Where the rows came from: the keys every import records."""
        self.digest_ahead()
        return {
            "source": str(self.path),
            "format": detect_format(self.path) if self.path.exists() else "hub",
            "layout": self.layout.name,
            "sha256": None if self._sha256 is None else self._sha256.result(),
            "mapping": self.mapping,
            "rows": self.rows,
        }

    # reading -------------------------------------------------------------------------------
    def _read(self) -> pl.DataFrame | None:
        """The next raw chunk within the limit, or None at the end."""
        if self._left == 0:
            return None
        raw = next(self._raw, None)
        return None if raw is None else self._align(raw)

    def _next_raw(self) -> pl.DataFrame | None:
        raw, self._ahead = self._ahead, None
        return raw if raw is not None else self._read()

    def _align(self, raw: pl.DataFrame) -> pl.DataFrame:
        """The rows within the limit, widened to the types of earlier chunks: a key missing
        from a chunk, null or `{}` in all its rows, reads as it would in one frame."""
        if self._left is not None:
            raw = raw.head(self._left)
            self._left -= raw.height
        if self._seen is not None and raw.schema != self._seen:
            try:
                raw = pl.concat([pl.DataFrame(schema=self._seen), raw], how="diagonal_relaxed")
            except pl.exceptions.PolarsError as exc:
                where = layouts.where(raw.row(0, named=True)) if raw.height else "a chunk"
                raise InputError(f"{self.path}: records do not share a consistent schema "
                                 f"(in the rows from {where} on: {_first_line(exc)})") from exc
        self._seen = raw.schema
        return raw

    def _more(self) -> bool:
        """Whether rows follow the current chunk (read ahead only to word an error)."""
        if self._ahead is None:
            try:
                self._ahead = self._read()
            except InputError:
                return True
        return self._ahead is not None and self._ahead.height > 0

    # converting ----------------------------------------------------------------------------
    def _convert(self, raw: pl.DataFrame) -> pl.DataFrame:
        """One raw chunk as canonical rows: the layout's row checks, its conversion, then
        the checks every kind needs; the first bad row is named by its line or record."""
        with _worded(self.path, f"as {self.layout.name} layout"):
            layouts.check_columns(self.layout, raw.schema)
            self._check(raw, self.layout.row_checks(raw.schema))
            frame = self.layout.convert(raw)
            self._check(frame, _row_checks(frame, self.layout))
            frame = with_traces(frame, raw, self.kind)
        frame = _without_empty_objects(frame.drop([c for c in frame.columns if c.startswith("_")]))
        schema.validate(frame, self.kind, where=str(self.path), ids=False, offset=self.rows)
        self.rows += frame.height
        return frame

    def _check(self, frame: pl.DataFrame, checks: list[tuple[str, pl.Expr]]) -> None:
        """Raise on the first row failing a check, with how many rows fail it: in the file
        when this is the last chunk, so far otherwise (the rest is not read)."""
        found = _first_problem(frame, checks)
        if found is None:
            return
        where, count = found
        if not self._more():
            raise _Located(f"{where} ({count} rows)" if count > 1 else where)
        raise _Located(f"{where} ({count} row{'s' if count > 1 else ''} so far)")


class _Located(Exception):
    """A bad row, worded '<line or record>: <problem>'; `_worded` adds the file."""


def _digest_on_a_thread(path: Path) -> Future[str]:
    """The file's sha256 from a daemon thread (an interrupted import does not wait for it)."""
    future: Future[str] = Future()

    def run() -> None:
        try:
            future.set_result(file_sha256(path))
        except BaseException as exc:  # handed to whoever asks for the digest
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True, name="file-sha256").start()
    return future


@contextlib.contextmanager
def _worded(path: Path, what: str) -> Iterator[None]:
    """Errors from preparing and converting a chunk, worded the way the CLI prints them."""
    try:
        yield
    except _Located as exc:
        raise InputError(f"{path}, {exc}") from None
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"{path}: cannot convert {what} ({_first_line(exc)})") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def iter_load(path: str | Path, mapping: dict[str, str] | None = None,
              layout: str | None = None, csv_columns: list[str] | None = None, *,
              chunk_rows: int | None = CHUNK_ROWS, limit: int | None = None) -> Loading:
    """Read and convert a source a chunk at a time (see `Loading`); `limit` keeps only the
    first rows. Nothing is staged: iterate it, or use `stage` to write parts."""
    return Loading(path, mapping, layout, csv_columns, chunk_rows, limit)


def stage(path: str | Path, folder: Path, mapping: dict[str, str] | None = None,
          layout: str | None = None, csv_columns: list[str] | None = None, *,
          chunk_rows: int | None = CHUNK_ROWS, limit: int | None = None) -> Staged:
    """Convert a source into `folder/part-NNNNNN.parquet`, one part per chunk, ready for
    `finalize(staged.files, staged.kind, ...)`. On an error the parts written so far stay:
    the caller owns `folder` and removes it."""
    loading = iter_load(path, mapping, layout, csv_columns, chunk_rows=chunk_rows, limit=limit)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for index, chunk in enumerate(loading):
        files.append(folder / parts.PART.format(index))
        # read twice by finalize, then deleted: lz4 writes and reads in about half zstd's time
        chunk.write_parquet(files[-1], compression="lz4", statistics=False)
    return Staged(loading.kind, loading.lineage(), files)


def load(path: str | Path, mapping: dict[str, str] | None = None, layout: str | None = None,
         csv_columns: list[str] | None = None, *,
         chunk_rows: int | None = CHUNK_ROWS) -> tuple[pl.DataFrame, str, dict]:
    """Read and convert a source into one frame; returns (canonical frame with ids, kind,
    lineage of the source). The whole frame is in memory: `import_path` streams instead."""
    loading = iter_load(path, mapping, layout, csv_columns, chunk_rows=chunk_rows)
    chunks = list(loading)
    frame = chunks[0] if len(chunks) == 1 else pl.concat(chunks, how="diagonal_relaxed")
    schema.validate(frame, loading.kind, where=str(loading.path), ids=False)
    return schema.with_ids(frame, loading.kind), loading.kind, loading.lineage()


def import_path(
    workspace: Workspace,
    path: str | Path,
    name: str,
    mapping: dict[str, str] | None = None,
    layout: str | None = None,
    csv_columns: list[str] | None = None,
    *,
    chunk_rows: int | None = CHUNK_ROWS,
) -> DatasetVersion:
    """Convert, finalize and publish a source as the next version of `name`, all or nothing:
    the converted chunks stream into finalize (the next chunk is read meanwhile), whose
    parts live in a scratch folder of the workspace that is always removed."""
    check_name(name)
    staging = workspace.cache_dir / "tmp"
    with writing(staging, f"staging {path}"), workspace.scratch() as scratch:
        loading = iter_load(path, mapping, layout, csv_columns, chunk_rows=chunk_rows)
        loading.digest_ahead()
        finalize(lambda: parts.prefetch(iter(loading)), loading.kind, scratch / "final",
                 where=str(path), batch_rows=chunk_rows or CHUNK_ROWS, one_file=True)
        crashpoint("import.staged")
        return workspace.publish_parts(name, scratch / "final" / DATA_DIR, loading.kind,
                                       lineage={"import": loading.lineage()})


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


def _without_empty_objects(frame: pl.DataFrame) -> pl.DataFrame:
    """Parquet cannot store an object without fields, which is how `{}` reads before any row
    has filled the object in: such a column becomes null, such a field of an object is left
    out (later chunks that have its fields bring it back, null here)."""
    fixes = []
    for name, dtype in frame.schema.items():
        if _has_empty_struct(dtype):
            fixed = _drop_empty(pl.col(name), dtype)
            fixes.append((pl.lit(None) if fixed is None else fixed).alias(name))
    return frame.with_columns(fixes) if fixes else frame


def _drop_empty(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr | None:
    """`expr` without its objects that have no fields; None when it is one, or a list of them."""
    if not _has_empty_struct(dtype):
        return expr
    if isinstance(dtype, pl.Struct):
        fields = [(f.name, _drop_empty(expr.struct.field(f.name), f.dtype)) for f in dtype.fields]
        kept = [e.alias(name) for name, e in fields if e is not None]
        return pl.when(expr.is_not_null()).then(pl.struct(kept)) if kept else None
    if isinstance(dtype, pl.List):
        inner = _drop_empty(pl.element(), dtype.inner)
        return None if inner is None else expr.list.eval(inner)
    return None


def _has_empty_struct(dtype: pl.DataType) -> bool:
    if isinstance(dtype, pl.Struct):
        return not dtype.fields or any(_has_empty_struct(f.dtype) for f in dtype.fields)
    if isinstance(dtype, pl.List | pl.Array):
        return _has_empty_struct(dtype.inner)
    return False


def _first_problem(frame: pl.DataFrame, checks: list[tuple[str, pl.Expr]]) -> Problem | None:
    """('line N: problem', rows failing it) for the first check that some row fails."""
    location = [c for c in LOCATION_COLUMNS if c in frame.columns]
    for problem, expr in checks:
        bad = frame.select(*location, expr.fill_null(True).alias("_bad")).filter("_bad")
        if bad.height:
            return f"{layouts.where(bad.row(0, named=True))}: {problem}", bad.height
    return None


def _row_checks(frame: pl.DataFrame, layout: layouts.Layout) -> list[tuple[str, pl.Expr]]:
    """Converted rows whose required fields are null or malformed."""
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
    checks += _finite_checks(frame.schema)
    if "_reply_role" in frame.columns:
        checks.append(("the last message is not an assistant reply",
                       pl.col("_reply_role") != "assistant"))
    return checks


def _finite_checks(columns: pl.Schema) -> list[tuple[str, pl.Expr]]:
    """Float fields (and lists of them) holding NaN or ±Infinity (JSON's `NaN`, `Infinity`,
    or a number too large for a float such as 1e400): an import error, since no score,
    margin or sort means anything with them and `--json` output could not hold them."""
    checks = []
    for name, dtype in columns.items():
        if name.startswith("_"):
            continue
        if dtype.is_float():
            bad = ~pl.col(name).is_finite()
        elif isinstance(dtype, pl.List) and dtype.inner.is_float():
            bad = pl.col(name).list.eval(~pl.element().is_finite()).list.any()
        else:
            continue
        checks.append((f"field {name!r} is not a finite number (NaN, Infinity, or too large "
                       "for a float, e.g. 1e400)", bad.fill_null(False)))
    return checks
