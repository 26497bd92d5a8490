"""Read JSONL, JSON, Parquet, CSV and HF datasets as raw polars frames, a chunk at a time.

`iter_raw` yields frames of bounded size, each with the absolute location of its rows
(`_line` for JSONL and CSV, `_record` for JSON, Parquet and HF), so an import holds one
chunk, not the file; `read_raw` is the same stream as one frame. Chunks infer their own
types (a field all null in one chunk, text in the next): consumers widen them at the end.

Errors name the file and the line (JSONL, CSV), record (JSON) or byte offset (bad UTF-8).
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from workbench.errors import InputError

FORMATS = ("jsonl", "json", "parquet", "csv", "hf")
CHUNK_ROWS = 20_000  # rows per chunk at most
CHUNK_BYTES = 16 << 20  # and about this many bytes of JSON Lines (a longer line is one chunk)
NDJSON_FAST_PATH = True  # polars' NDJSON reader first; the line parser where it fails
BOM = b"\xef\xbb\xbf"
MAX_DEPTH = 32  # lists and objects within a record's field; chat data needs about 4
_BRACKETS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')  # strings are skipped whole
# polars reads a lone UTF-16 surrogate escape as garbage where json.loads keeps it (and the
# frame then refuses it): such chunks go to the line parser, so the result does not depend
# on the path taken
_SURROGATE = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])"
                        rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F]")


def detect_format(path: Path) -> str:
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            return "hf"
        raise InputError(f"{path}: a folder, but not a Hugging Face save_to_disk folder")
    name = path.name.lower().removesuffix(".gz")
    for suffix, fmt in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "json"),
                        (".parquet", "parquet"), (".csv", "csv")):
        if name.endswith(suffix):
            return fmt
    raise InputError(f"{path}: unknown file type (use .jsonl, .json, .parquet, .csv or an HF folder)")


def iter_raw(path: str | Path, fmt: str | None = None, csv_columns: list[str] | None = None,
             chunk_rows: int | None = CHUNK_ROWS,
             chunk_bytes: int | None = CHUNK_BYTES) -> Iterator[pl.DataFrame]:
    """Raw frames of at most `chunk_rows` rows (None: no limit), in file order, at least one.

    JSON Lines and CSV are read in chunks, JSON Lines also bounded by `chunk_bytes`; Parquet
    a batch at a time; a JSON document and HF datasets are loaded whole (their formats allow
    nothing else) and then cut. `csv_columns` names the columns of a headerless CSV file.
    """
    path = Path(path)
    if not path.exists():
        yield from _hf_chunks(_load_hub(str(path)), chunk_rows)
        return
    fmt = fmt or detect_format(path)
    if fmt == "jsonl":
        yield from _jsonl_chunks(path, chunk_rows, chunk_bytes)
    elif fmt == "json":
        yield from _slices(_read_json(path, _whole_text(path)), chunk_rows)
    elif fmt == "csv":
        yield from _csv_chunks(path, csv_columns, chunk_rows)
    elif fmt == "parquet":
        yield from _parquet_chunks(path, chunk_rows)
    elif fmt == "hf":
        yield from _hf_chunks(_load_hf_folder(path), chunk_rows)
    else:
        raise InputError(f"{path}: unsupported format {fmt!r} (formats: {', '.join(FORMATS)})")


def read_raw(path: str | Path, fmt: str | None = None,
             csv_columns: list[str] | None = None) -> pl.DataFrame:
    """The whole source as one frame (JSON Lines parsed in one go, so types are inferred over
    every row); `csv_columns` names the columns of a headerless CSV file (e.g. MMLU)."""
    chunks = list(iter_raw(path, fmt, csv_columns, chunk_rows=None, chunk_bytes=None))
    return chunks[0] if len(chunks) == 1 else pl.concat(chunks, how="diagonal_relaxed")


# bytes: gzip, blocks of lines, UTF-8 -------------------------------------------------------
def _blocks(path: Path, size: int | None) -> Iterator[bytes]:
    """The file's bytes (decompressed when it ends in .gz) in blocks of about `size` bytes
    that end at a line end; None reads it whole."""
    gz = path.name.lower().endswith(".gz")
    with gzip.open(path, "rb") if gz else open(path, "rb") as stream:
        while True:
            try:
                block = stream.read(size or -1)
                if block and not block.endswith(b"\n"):
                    block += stream.readline()
            except (OSError, EOFError, zlib.error) as exc:
                if not gz:
                    raise
                raise InputError(f"{path}: broken gzip file ({exc})") from exc
            if not block:
                return
            yield block


def _decode(path: Path, data: bytes, first_line: int = 1, offset: int = 0) -> str:
    """`data` as text; a bad byte is named by its line and its offset in the file (`data`
    starts at line `first_line`, byte `offset` of the decompressed file)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = first_line + data.count(b"\n", 0, exc.start)
        raise InputError(
            f"{path}, line {line}: invalid UTF-8 at byte offset {offset + exc.start} "
            f"(byte 0x{data[exc.start]:02x})"
        ) from exc


def _whole_text(path: Path) -> str:
    data = b"".join(_blocks(path, None))
    if not data.strip():
        raise InputError(f"{path}: the file is empty")
    skip = len(BOM) if data.startswith(BOM) else 0
    return _decode(path, data[skip:], offset=skip)


def _check_text(path: Path) -> None:
    """Stream the whole file, raising on a broken gzip stream or bad UTF-8 (a block at a
    time, so it costs no memory); for naming what a reader only says failed."""
    line, offset = 1, 0
    for block in _blocks(path, 1 << 20):
        _decode(path, block, line, offset)
        line, offset = line + block.count(b"\n"), offset + len(block)


def _is_blank(path: Path) -> bool:
    """Whether the file holds nothing but whitespace (it reads only until it finds text)."""
    return all(block.isspace() for block in _blocks(path, 1 << 16))


# JSON Lines -------------------------------------------------------------------------------
def _jsonl_chunks(path: Path, rows: int | None, size: int | None) -> Iterator[pl.DataFrame]:
    line, offset = 1, 0
    content = records = False
    for block in _blocks(path, size):
        if offset == 0 and block.startswith(BOM):  # a byte-order mark is not part of the text
            block, offset = block[len(BOM):], len(BOM)
        for piece in _pieces(block, rows):
            if piece and not piece.isspace():
                content = True
                frame = _parse_jsonl(path, piece, line, offset)
                if frame is not None:
                    records = True
                    yield frame
            line, offset = line + piece.count(b"\n"), offset + len(piece)
    if not content:
        raise InputError(f"{path}: the file is empty")
    if not records:
        raise InputError(f"{path}: no records (only blank lines)")


def _pieces(block: bytes, rows: int | None) -> Iterator[bytes]:
    """`block` cut after every `rows` lines."""
    if rows is None or block.count(b"\n") + (not block.endswith(b"\n")) <= rows:
        yield block
        return
    start = 0
    while start < len(block):
        end = start
        for _ in range(rows):
            end = block.find(b"\n", end) + 1
            if end == 0:
                end = len(block)
                break
        yield block[start:end]
        start = end


def _parse_jsonl(path: Path, piece: bytes, first_line: int, offset: int) -> pl.DataFrame | None:
    """The records of some lines, with `_line`; None when every line is blank."""
    frame = _read_ndjson(piece, first_line) if NDJSON_FAST_PATH else None
    if frame is None:
        frame = _parse_lines(path, piece, first_line, offset)
    if frame is not None and _nesting(frame.schema) > MAX_DEPTH:
        raise _too_deep(path, _decode(path, piece, first_line, offset), first_line, 1)
    return frame


def _read_ndjson(piece: bytes, first_line: int) -> pl.DataFrame | None:
    """polars' NDJSON reader on the lines, or None wherever its result could differ from the
    line parser's (which then names the bad line, or reads what polars refuses, e.g. NaN)."""
    if (b"\\ud" in piece or b"\\uD" in piece) and _SURROGATE.search(piece):
        return None
    try:
        frame = pl.read_ndjson(piece, infer_schema_length=None)
    except (Exception, pl.exceptions.PanicException):
        return None
    numbers = _record_lines(piece, first_line, frame.height)
    if numbers is None or _coerced(frame, numbers, piece, first_line):
        return None
    return frame.with_columns(numbers)


def _coerced(frame: pl.DataFrame, numbers: pl.Series, piece: bytes, first_line: int) -> bool:
    """Whether polars turned a JSON list or object into text: it does so where a key holds
    text in some lines and a list or object in others, which the line parser refuses. Only
    the lines whose text starts like a list or object are parsed again to tell."""
    text = [name for name, dtype in frame.schema.items() if dtype == pl.String]
    if not text:
        return False
    suspect = pl.any_horizontal(pl.col(text).str.starts_with("[") | pl.col(text).str.starts_with("{"))
    suspects = numbers.filter(frame.select(suspect.fill_null(False)).to_series())
    if suspects.is_empty():
        return False
    lines = piece.split(b"\n")
    for number in suspects:
        try:
            record = json.loads(lines[number - first_line])
        except ValueError:
            return True
        if any(isinstance(record.get(name), list | dict) for name in text):
            return True
    return False


def _record_lines(piece: bytes, first_line: int, rows: int) -> pl.Series | None:
    """The line numbers of the non-blank lines of `piece`, if there are `rows` of them."""
    lines = piece.count(b"\n") + (not piece.endswith(b"\n"))
    if rows == lines:
        return pl.Series("_line", range(first_line, first_line + lines), pl.Int64)
    numbers = [number for number, text in enumerate(piece.split(b"\n"), start=first_line)
               if text and not text.isspace()]
    return pl.Series("_line", numbers, pl.Int64) if len(numbers) == rows else None


def _parse_lines(path: Path, piece: bytes, first_line: int, offset: int) -> pl.DataFrame | None:
    """Parse line by line so a broken line is reported with its number; polars builds the frame."""
    records: list[dict] = []
    numbers: list[int] = []
    for number, line in enumerate(_decode(path, piece, first_line, offset).split("\n"),
                                  start=first_line):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}, line {number}: invalid JSON ({exc.msg}, column {exc.colno})") from exc
        except RecursionError:
            raise _too_deep(path, line, number, 1) from None
        if not isinstance(record, dict):
            raise InputError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
        numbers.append(number)
    if not records:
        return None
    return _frame(path, records).with_columns(pl.Series("_line", numbers, pl.Int64))


# JSON -------------------------------------------------------------------------------------
def _read_json(path: Path, text: str) -> pl.DataFrame:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}, line {exc.lineno}: invalid JSON ({exc.msg}, column {exc.colno})") from exc
    except RecursionError:
        raise _too_deep(path, text, 1, 3) from None
    holder = 3 if isinstance(data, dict) else 2  # the array (in an object) and the record
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise InputError(f"{path}: expected a JSON array of records (or an object holding one)")
        data = lists[0]
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON array of records, got {type(data).__name__}")
    if not data:
        raise InputError(f"{path}: the JSON array is empty")
    for index, record in enumerate(data):
        if not isinstance(record, dict):
            raise InputError(f"{path}, record {index}: expected an object, got {type(record).__name__}")
    frame = _frame(path, data)
    if _nesting(frame.schema) > MAX_DEPTH:
        raise _too_deep(path, text, 1, holder)
    return frame.with_columns(pl.Series("_record", range(len(data)), pl.Int64))


def _nesting(schema: pl.Schema | dict) -> int:
    """How deep lists and objects nest in a record's fields (a list of text is 1)."""
    def depth(dtype: pl.DataType) -> int:
        if isinstance(dtype, pl.Struct):
            return 1 + max((depth(f.dtype) for f in dtype.fields), default=0)
        if isinstance(dtype, pl.List | pl.Array):
            return 1 + depth(dtype.inner)
        return 0

    return max((depth(dtype) for dtype in schema.values()), default=0)


def _too_deep(path: Path, text: str, first_line: int, holders: int) -> InputError:
    """The error for JSON nested deeper than MAX_DEPTH inside its record, naming the line
    where it first goes deeper; `holders` counts the levels around a record (the record's
    own object, and the array and object holding it in a JSON document)."""
    depth, limit, where = 0, MAX_DEPTH + holders, len(text)
    for token in _BRACKETS.finditer(text):
        mark = token.group()
        if mark in "[{":
            depth += 1
            if depth > limit:
                where = token.start()
                break
        elif mark in "]}":
            depth -= 1
    line = first_line + text.count("\n", 0, where)
    return InputError(f"{path}, line {line}: JSON nested more than {MAX_DEPTH} levels deep "
                      "in a record")


def _frame(path: Path, records: list[dict]) -> pl.DataFrame:
    try:
        return pl.from_dicts(records, infer_schema_length=None)
    except Exception as exc:
        raise InputError(f"{path}: records do not share a consistent schema ({_first_line(exc)})") from exc


def _slices(frame: pl.DataFrame, rows: int | None) -> Iterator[pl.DataFrame]:
    if rows is None or frame.height <= rows:
        yield frame
    else:
        yield from frame.iter_slices(rows)


# CSV and Parquet: polars' streaming engine --------------------------------------------------
def _csv_chunks(path: Path, columns: list[str] | None, rows: int | None) -> Iterator[pl.DataFrame]:
    if _is_blank(path):
        raise InputError(f"{path}: the file is empty")
    _check_header(path, columns)
    scan = pl.scan_csv(path, infer_schema=False,  # all columns as text
                       has_header=columns is None, new_columns=columns, glob=False)
    # each record's physical first line: quoted fields may span lines
    lines = _RecordLines(path, header=columns is None)
    seen = 0
    for frame in _guarded(_batches(scan, rows), lambda exc: _csv_error(path, exc, columns)):
        yield frame.with_columns(pl.Series("_line", lines.take(frame.height), pl.Int64))
        seen += frame.height
    if seen == 0:
        raise InputError(f"{path}: the CSV file has a header but no rows")


def _check_header(path: Path, columns: list[str] | None) -> None:
    """A column named twice is an error (polars would rename the second `NAME_duplicated_0`
    and the import would silently use the first)."""
    if columns is None:
        gz = path.name.lower().endswith(".gz")
        try:
            with (gzip.open(path, "rt", encoding="utf-8-sig", newline="") if gz else
                  open(path, encoding="utf-8-sig", newline="")) as stream:
                columns = next(csv.reader(stream), [])
        except (UnicodeDecodeError, OSError, EOFError, zlib.error, csv.Error):
            return  # the reader names what is wrong with the file
        where = "the header"
    else:
        where = "--columns"
    first: dict[str, int] = {}
    for number, name in enumerate(columns, start=1):
        if name in first:
            raise InputError(f"{path}: {where} names column {name!r} twice (columns "
                             f"{first[name]} and {number}); rename one")
        first[name] = number


class _RecordLines:
    """The physical line on which each CSV record starts, read a block at a time: a line end
    outside double quotes ends a record (an escaped quote `""` toggles twice)."""

    def __init__(self, path: Path, header: bool) -> None:
        self._blocks = _blocks(path, 1 << 20)
        self._starts: list[np.ndarray] = []
        self._ready = 0
        self._line = 1  # the line the next block starts on
        self._quoted = False  # whether the next block starts inside quotes
        self._next = 1  # the line the next record starts on
        self._skip = 1 if header else 0
        self._ended = False

    def take(self, n: int) -> np.ndarray:
        """The start lines of the next `n` records."""
        while self._ready < n and not self._ended:
            block = next(self._blocks, None)
            if block is None:  # a last record without a line end
                self._add(np.array([self._next], np.int64))
                self._ended = True
            else:
                self._scan(block)
        found = np.concatenate(self._starts) if self._starts else np.empty(0, np.int64)
        if len(found) < n:  # cannot happen for a file polars read; keep counting anyway
            extra = np.arange(n - len(found), dtype=np.int64) + (found[-1] + 1 if len(found)
                                                                    else self._next)
            found = np.concatenate([found, extra])
        self._starts, self._ready = [found[n:]], len(found) - n
        return found[:n]

    def _scan(self, block: bytes) -> None:
        data = np.frombuffer(block, np.uint8)
        quotes = np.flatnonzero(data == ord('"'))
        ends = np.flatnonzero(data == ord("\n"))
        outside = (np.searchsorted(quotes, ends) + self._quoted) % 2 == 0  # quotes before
        lines = self._line + np.flatnonzero(outside)  # the lines these records end on
        if len(lines):
            self._add(np.concatenate([[self._next], lines[:-1] + 1]).astype(np.int64))
            self._next = int(lines[-1]) + 1
        self._line += len(ends)
        self._quoted = bool((len(quotes) + self._quoted) % 2)

    def _add(self, starts: np.ndarray) -> None:
        if self._skip:
            starts, self._skip = starts[self._skip:], self._skip - min(self._skip, len(starts))
        self._starts.append(starts)
        self._ready += len(starts)


def _csv_error(path: Path, exc: BaseException, columns: list[str] | None) -> InputError:
    """polars says only that a CSV file is unreadable: name a broken gzip stream, the line
    of a bad byte, or the first line whose record has another number of fields."""
    try:
        _check_text(path)
    except InputError as found:
        return found
    ragged = _ragged_record(path, columns)
    if ragged is not None:
        return InputError(f"{path}, line {ragged[0]}: {ragged[1]} fields where the header has "
                          f"{ragged[2]}")
    return InputError(f"{path}: not a readable CSV file ({_first_line(exc)})")


def _ragged_record(path: Path, columns: list[str] | None) -> tuple[int, int, int] | None:
    """(first line, fields, fields wanted) of the first record whose field count differs
    from the header's; Python's csv module, on the error path only."""
    gz = path.name.lower().endswith(".gz")
    with (gzip.open(path, "rt", encoding="utf-8-sig", newline="") if gz else
          open(path, encoding="utf-8-sig", newline="")) as stream:
        reader = csv.reader(stream)
        wanted, start = (len(columns), 1) if columns else (None, 1)
        for record in reader:
            if wanted is None:
                wanted = len(record)
            elif record and len(record) != wanted:
                return start, len(record), wanted
            start = reader.line_num + 1
    return None


def _parquet_chunks(path: Path, rows: int | None) -> Iterator[pl.DataFrame]:
    scan = pl.scan_parquet(path, glob=False)
    record, chunks = 0, 0
    for frame in _guarded(_batches(scan, rows), lambda exc: _parquet_error(path, exc)):
        yield frame.with_columns((pl.int_range(pl.len()) + record).alias("_record"))
        record, chunks = record + frame.height, chunks + 1
    if chunks == 0:  # an empty file still has columns
        try:
            empty = scan.head(0).collect()
        except pl.exceptions.PolarsError as exc:
            raise _parquet_error(path, exc) from exc
        yield empty.with_columns(pl.lit(None, pl.Int64).alias("_record"))


def _parquet_error(path: Path, exc: BaseException) -> InputError:
    return InputError(f"{path}: not a readable Parquet file ({_first_line(exc)})")


def _batches(scan: pl.LazyFrame, rows: int | None) -> Iterator[pl.DataFrame]:
    if rows is None:
        yield scan.collect()
    else:
        yield from scan.collect_batches(chunk_size=rows)


def _guarded(frames: Iterator[pl.DataFrame],
             error: Callable[[Exception], InputError]) -> Iterator[pl.DataFrame]:
    """`frames`, with a polars failure while reading turned into `error(exc)`."""
    frames = iter(frames)
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            return
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise error(exc) from exc
        yield frame


# Hugging Face datasets ---------------------------------------------------------------------
def _load_hf_folder(path: Path) -> Any:
    import datasets

    try:
        return datasets.load_from_disk(str(path))
    except Exception as exc:
        raise InputError(f"{path}: cannot load the HF dataset ({_first_line(exc)})") from exc


def _load_hub(name: str) -> Any:
    looks_like_file = Path(name).suffix.lower() in (".jsonl", ".json", ".parquet", ".csv", ".gz")
    if name.count("/") != 1 or name.startswith((".", "/")) or looks_like_file:
        raise InputError(f"{name}: no such file or folder")
    import datasets

    try:
        return datasets.load_dataset(name)
    except Exception as exc:
        raise InputError(
            f"{name}: no such file, and loading it from the Hugging Face Hub failed "
            f"({_first_line(exc)})"
        ) from exc


def _hf_chunks(loaded: Any, rows: int | None) -> Iterator[pl.DataFrame]:
    """A dataset's Arrow table (memory-mapped) a batch at a time; the splits of a
    DatasetDict one after another, each row tagged with its `split`."""
    import datasets

    splits = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [(None, loaded)]
    record = 0
    for name, split in splits:
        table: pa.Table = split.data.table
        batches = table.to_batches(max_chunksize=rows) if rows else [table]
        for batch in batches:
            frame = pl.from_arrow(pa.Table.from_batches([batch]) if rows else batch)
            assert isinstance(frame, pl.DataFrame)
            if name is not None:
                frame = frame.with_columns(pl.lit(name).alias("split"))
            yield frame.with_columns((pl.int_range(pl.len()) + record).alias("_record"))
            record += frame.height
    if record == 0:
        raise InputError("the HF dataset has no rows")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__

