"""Read JSONL, JSON, Parquet, CSV and HF datasets into a raw polars frame.

Errors name the file and the line (JSONL, CSV), record (JSON) or byte offset (bad UTF-8).
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import polars as pl

from workbench.errors import InputError

FORMATS = ("jsonl", "json", "parquet", "csv", "hf")


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


def read_raw(path: str | Path, fmt: str | None = None,
             csv_columns: list[str] | None = None) -> pl.DataFrame:
    """`csv_columns` names the columns of a headerless CSV file (e.g. MMLU)."""
    path = Path(path)
    if not path.exists():
        return _read_hub(str(path))
    fmt = fmt or detect_format(path)
    if fmt == "hf":
        return _read_hf_folder(path)
    if fmt == "parquet":
        try:
            return pl.read_parquet(path)
        except Exception as exc:
            raise InputError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from exc
    data = _read_bytes(path)
    if not data.strip():
        raise InputError(f"{path}: the file is empty")
    text = _decode(path, data)
    if fmt == "jsonl":
        return _read_jsonl(path, text)
    if fmt == "json":
        return _read_json(path, text)
    if fmt == "csv":
        return _read_csv(path, text, csv_columns)
    raise InputError(f"{path}: unsupported format {fmt!r} (formats: {', '.join(FORMATS)})")


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.name.lower().endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise InputError(f"{path}: broken gzip file ({exc})") from exc
    return raw


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(
            f"{path}, line {line}: invalid UTF-8 at byte offset {exc.start} "
            f"(byte 0x{data[exc.start]:02x})"
        ) from exc


def _read_jsonl(path: Path, text: str) -> pl.DataFrame:
    """Parse line by line so a broken line is reported with its number; polars builds the frame."""
    records: list[dict] = []
    line_numbers: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}, line {number}: invalid JSON ({exc.msg}, column {exc.colno})") from exc
        if not isinstance(record, dict):
            raise InputError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
        line_numbers.append(number)
    if not records:
        raise InputError(f"{path}: no records (only blank lines)")
    return _frame(path, records).with_columns(pl.Series("_line", line_numbers, pl.Int64))


def _read_json(path: Path, text: str) -> pl.DataFrame:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}, line {exc.lineno}: invalid JSON ({exc.msg}, column {exc.colno})") from exc
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
    return _frame(path, data).with_columns(pl.Series("_record", range(len(data)), pl.Int64))


def _frame(path: Path, records: list[dict]) -> pl.DataFrame:
    try:
        return pl.from_dicts(records, infer_schema_length=None)
    except Exception as exc:
        raise InputError(f"{path}: records do not share a consistent schema ({_first_line(exc)})") from exc


def _read_csv(path: Path, text: str, columns: list[str] | None) -> pl.DataFrame:
    try:
        frame = pl.read_csv(io.StringIO(text), infer_schema_length=0,  # all columns as text
                            has_header=columns is None, new_columns=columns)
    except Exception as exc:
        raise InputError(f"{path}: not a readable CSV file ({_first_line(exc)})") from exc
    if frame.height == 0:
        raise InputError(f"{path}: the CSV file has a header but no rows")
    # after the header; quoted fields may span lines, so this is the record's first line
    first = 1 if columns else 2
    return frame.with_columns((pl.int_range(pl.len()) + first).alias("_line"))


def _read_hf_folder(path: Path) -> pl.DataFrame:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:
        raise InputError(f"{path}: cannot load the HF dataset ({_first_line(exc)})") from exc
    return _from_hf(loaded)


def _read_hub(name: str) -> pl.DataFrame:
    looks_like_file = Path(name).suffix.lower() in (".jsonl", ".json", ".parquet", ".csv", ".gz")
    if name.count("/") != 1 or name.startswith((".", "/")) or looks_like_file:
        raise InputError(f"{name}: no such file or folder")
    import datasets

    try:
        loaded = datasets.load_dataset(name)
    except Exception as exc:
        raise InputError(
            f"{name}: no such file, and loading it from the Hugging Face Hub failed "
            f"({_first_line(exc)})"
        ) from exc
    return _from_hf(loaded)


def _from_hf(loaded: object) -> pl.DataFrame:
    import datasets

    if isinstance(loaded, datasets.DatasetDict):
        parts = [
            pl.from_arrow(split.data.table).with_columns(pl.lit(name).alias("split"))
            for name, split in loaded.items()
        ]
        frame = pl.concat(parts, how="diagonal_relaxed")
    else:
        frame = pl.from_arrow(loaded.data.table)
    assert isinstance(frame, pl.DataFrame)
    if frame.height == 0:
        raise InputError("the HF dataset has no rows")
    return frame.with_columns(pl.int_range(pl.len()).alias("_record"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
