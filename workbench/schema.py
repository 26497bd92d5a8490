"""Dataset kinds, their canonical columns, validation and stable content-hash ids."""

from __future__ import annotations

import hashlib
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa

from workbench.errors import SchemaError

Kind = Literal["instruction", "sft", "candidates", "preference"]
KINDS: tuple[str, ...] = ("instruction", "sft", "candidates", "preference")

MESSAGE = pl.Struct({"role": pl.String, "content": pl.String})
MESSAGES = pl.List(MESSAGE)

# Required columns and their types, per kind (extra columns are always carried along).
REQUIRED: dict[str, dict[str, pl.DataType]] = {
    "instruction": {"id": pl.String, "prompt": MESSAGES},
    "sft": {"id": pl.String, "prompt": MESSAGES, "response": pl.String},
    "candidates": {"id": pl.String, "prompt": MESSAGES, "responses": pl.List(pl.String)},
    "preference": {"id": pl.String, "prompt": MESSAGES, "chosen": pl.String, "rejected": pl.String},
}
# The columns that make a row what it is: the id hashes these.
CONTENT: dict[str, tuple[str, ...]] = {
    "instruction": ("prompt",),
    "sft": ("prompt", "response"),
    "candidates": ("prompt", "responses"),
    "preference": ("prompt", "chosen", "rejected"),
}
CONTENT_COLUMNS = tuple(dict.fromkeys(c for columns in CONTENT.values() for c in columns))
ROLES = ("system", "user", "assistant", "tool")


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise SchemaError(f"unknown kind {kind!r} (kinds: {', '.join(KINDS)})")
    return kind


def validate(frame: pl.DataFrame, kind: str, where: str = "dataset", ids: bool = True,
             offset: int = 0) -> None:
    """Raise a SchemaError naming the first missing or mistyped column, or the first bad row
    (numbered from `offset` when `frame` is one batch of a larger dataset)."""
    check_kind(kind)
    schema = frame.schema
    for column, dtype in REQUIRED[kind].items():
        if column == "id" and not ids:
            continue
        if column not in schema:
            raise SchemaError(
                f"{where}: column {column!r} is missing for kind {kind!r} "
                f"(columns: {', '.join(schema.names()) or 'none'})"
            )
        if not _compatible(schema[column], dtype):
            raise SchemaError(
                f"{where}: column {column!r} has type {schema[column]}, kind {kind!r} needs {dtype}"
            )
    if frame.height == 0:
        return
    bad = frame.select(
        (pl.int_range(pl.len()) + offset).alias("_row"),
        pl.col("id") if "id" in schema else pl.lit(None, pl.String).alias("id"),
        (pl.col("prompt").list.len() == 0).alias("empty"),
        (pl.col("prompt").list.last().struct.field("role") != "user").alias("not_user"),
    ).filter(pl.col("empty") | pl.col("not_user"))
    if bad.height:
        row = bad.row(0, named=True)
        problem = "is empty" if row["empty"] else "does not end with a user turn"
        raise SchemaError(
            f"{where}: row {row['_row']} (id {row['id']}): prompt {problem} ({bad.height} such rows)"
        )


def _compatible(found: pl.DataType, wanted: pl.DataType) -> bool:
    if wanted == MESSAGES:
        if not isinstance(found, pl.List) or not isinstance(found.inner, pl.Struct):
            return False
        fields = {f.name: f.dtype for f in found.inner.fields}
        return fields.get("role") == pl.String and fields.get("content") == pl.String
    return found == wanted


def messages_text(column: str | pl.Expr) -> pl.Expr:
    """A message list as one string ("role: content" lines), for hashing, search and dedup."""
    col = pl.col(column) if isinstance(column, str) else column
    return col.list.eval(
        pl.element().struct.field("role") + pl.lit(": ") + pl.element().struct.field("content")
    ).list.join("\n")


def as_text(frame_schema: pl.Schema, column: str) -> pl.Expr:
    """Any canonical column as text: message lists rendered, string lists joined."""
    dtype = frame_schema[column]
    if _compatible(dtype, MESSAGES):
        return messages_text(column)
    if isinstance(dtype, pl.List):
        return pl.col(column).cast(pl.List(pl.String)).list.join("\n")
    return pl.col(column).cast(pl.String)


def with_ids(frame: pl.DataFrame, kind: str) -> pl.DataFrame:
    """Set `id` to the content hash of the kind's columns, keeping a changed id as `parent_id`.

    Ids always identify content: a step that rewrites a row gives it a new id, so a label made
    on the old pair stays on the old pair. Identical rows get `hash-1`, `hash-2`, ... in order
    of appearance, so ids are unique within a version and stable across runs.
    """
    hashes = content_hashes(frame, kind)
    return assign_ids(frame, hashes, occurrences(hashes), kind)


def content_hashes(frame: pl.DataFrame, kind: str) -> pl.Series:
    """The 16-hex content hash of each row (the id before duplicates are numbered)."""
    return _sha256_hex(frame.select(canonical_content(frame.schema, kind).alias("k"))["k"])


def occurrences(hashes: pl.Series) -> pl.Series:
    """0 for the first row with a hash, 1 for the second, ... in order (over all batches)."""
    return pl.DataFrame({"_h": hashes}).select(
        pl.int_range(pl.len()).over("_h").alias("_occ"))["_occ"]


def assign_ids(frame: pl.DataFrame, hashes: pl.Series, occurrence: pl.Series,
               kind: str) -> pl.DataFrame:
    """`id` from a row's hash and occurrence (see `with_ids`); batches of a streamed dataset
    call this with their slice of the global hashes and occurrences."""
    new_id = (
        pl.when(pl.col("_occ") == 0)
        .then(pl.col("_h"))
        .otherwise(pl.col("_h") + pl.lit("-") + pl.col("_occ").cast(pl.String))
    )
    out = frame.with_columns(hashes.alias("_h"), occurrence.alias("_occ")).with_columns(
        new_id.alias("_new_id"))
    if "id" in frame.columns:
        old = pl.col("id").cast(pl.String)
        changed = old.is_null() | (old != pl.col("_new_id"))
        previous = pl.col("parent_id").cast(pl.String) if "parent_id" in frame.columns else None
        if previous is not None or out.select(changed.any()).item():
            parent = pl.when(changed).then(old).otherwise(previous)
            out = out.with_columns(parent.alias("parent_id"))
    out = out.with_columns(pl.col("_new_id").alias("id"))
    return canonical_order(out.drop("_h", "_occ", "_new_id"), kind)


def canonical_content(frame_schema: pl.Schema, kind: str) -> pl.Expr:
    """One string per row that encodes the kind's content columns unambiguously.

    Each value is written as `<byte length>:<text>` (null as `~`), lists with their length,
    and message fields are taken by name: the result does not depend on struct field order,
    on extra message fields, or on any library's JSON encoding, so the id hash is pinned.
    """
    parts: list[pl.Expr] = []
    for column in CONTENT[kind]:
        dtype = frame_schema[column]
        parts += [pl.lit(f"{column}="), _encode(pl.col(column), dtype), pl.lit(";")]
    return pl.concat_str(parts)


def _encode(value: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    if isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct):
        fields = {f.name for f in dtype.inner.fields}
        if not {"role", "content"} <= fields:
            raise SchemaError(f"message list without role/content fields ({dtype})")
        role, content = (pl.element().struct.field(f).cast(pl.String) for f in ("role", "content"))
        items = value.list.eval(pl.concat_str(_encode_text(role), _encode_text(content)))
        return _encode_list(value, items)
    if isinstance(dtype, pl.List):
        items = value.list.eval(_encode_text(pl.element().cast(pl.String)))
        return _encode_list(value, items)
    return _encode_text(value.cast(pl.String))


def _encode_text(text: pl.Expr) -> pl.Expr:
    return (text.str.len_bytes().cast(pl.String) + pl.lit(":") + text).fill_null(pl.lit("~"))


def _encode_list(value: pl.Expr, items: pl.Expr) -> pl.Expr:
    body = pl.lit("[") + value.list.len().cast(pl.String) + pl.lit("|") + items.list.join("")
    return (body + pl.lit("]")).fill_null(pl.lit("~"))


def canonical_order(frame: pl.DataFrame, kind: str) -> pl.DataFrame:
    """Canonical columns first (id, prompt, content), extras after in their own order."""
    first = [c for c in ("id", *CONTENT[kind]) if c in frame.columns]
    return frame.select([*first, *[c for c in frame.columns if c not in first]])


def _sha256_hex(keys: pl.Series) -> pl.Series:
    """The first 16 hex digits of each key's sha256 (as DuckDB's `sha256` gives them, which
    ids were first made with): hashlib over the keys' Arrow buffer, one call a row, at
    about 3x DuckDB's speed; null keys give null."""
    array = keys.cast(pl.String).rechunk().to_arrow()
    if not isinstance(array, pa.LargeStringArray):
        array = array.cast(pa.large_string())
    validity, offsets_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64)[
        array.offset:array.offset + len(array) + 1].tolist()
    data = memoryview(data_buffer) if data_buffer is not None else memoryview(b"")
    sha = hashlib.sha256
    digests = [sha(data[a:b]).hexdigest()[:16] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    out = pl.Series("_h", digests, pl.String)
    if validity is not None and array.null_count:
        out = pl.select(pl.when(pl.lit(keys.is_not_null())).then(out)).to_series().alias("_h")
    return out


def user(text: str | pl.Expr) -> pl.Expr:
    """A one-message prompt from a string column or expression."""
    content = pl.col(text) if isinstance(text, str) else text
    return pl.concat_list(
        pl.struct(pl.lit("user").alias("role"), content.cast(pl.String).alias("content"))
    )
