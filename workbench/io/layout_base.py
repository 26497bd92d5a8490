"""What a layout is, and the polars expressions layouts share to build message lists.

A layout names the columns it reads (`needs`, `optional`), a finer test on their types
(`matches`), checks on raw rows that name a bad field (`checks`), and a conversion to one
of the canonical kinds. Everything here is a polars expression: no Python loop per row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from workbench.errors import InputError
from workbench.schema import MESSAGES, _compatible, user

Check = tuple[str, pl.Expr]


@dataclass(frozen=True)
class Layout:
    name: str
    kind: str
    needs: tuple[str, ...]
    convert: Callable[[pl.DataFrame], pl.DataFrame]
    matches: Callable[[pl.Schema], bool] | None = None
    optional: tuple[str, ...] = ()
    checks: Callable[[pl.Schema], list[Check]] | None = None
    booleans: tuple[str, ...] = ()  # output flags every row must set (a KTO label)
    aliases: tuple[str, ...] = ()
    detect: bool = True  # False: used only when named with --layout

    def fits(self, schema: pl.Schema) -> bool:
        """Whether rows with this schema are in this layout (column names, then types)."""
        return all(c in schema for c in self.needs) and (self.matches is None or self.matches(schema))

    def row_checks(self, schema: pl.Schema) -> list[Check]:
        return self.checks(schema) if self.checks else []


def struct_fields(dtype: pl.DataType | None) -> set[str]:
    """Field names of a struct, or of a list's struct elements; empty for anything else."""
    if isinstance(dtype, pl.List):
        dtype = dtype.inner
    return {f.name for f in dtype.fields} if isinstance(dtype, pl.Struct) else set()


def is_messages(dtype: pl.DataType | None) -> bool:
    return dtype is not None and (_compatible(dtype, MESSAGES) or (
        isinstance(dtype, pl.List) and {"role", "content"} <= struct_fields(dtype)))


def message(role: str | pl.Expr, content: pl.Expr) -> pl.Expr:
    role_expr = pl.lit(role) if isinstance(role, str) else role
    return pl.struct(role_expr.cast(pl.String).alias("role"), content.cast(pl.String).alias("content"))


def messages(column: str, dtype: pl.DataType) -> pl.Expr:
    """A string column becomes one user message; a message list keeps only role/content."""
    if dtype == pl.String:
        return user(column)
    if is_messages(dtype):
        return pl.col(column).list.eval(
            message(pl.element().struct.field("role"), pl.element().struct.field("content")))
    raise InputError(f"column {column!r} has type {dtype}: expected a string or a message list")


def text(column: str, dtype: pl.DataType) -> pl.Expr:
    """Assistant text from a string, or from the last message of a message list."""
    if dtype == pl.String:
        return pl.col(column)
    if is_messages(dtype):
        return pl.col(column).list.last().struct.field("content").cast(pl.String)
    raise InputError(f"column {column!r} has type {dtype}: expected a string or a message list")


def with_system(prompt: pl.Expr, system: pl.Expr) -> pl.Expr:
    """Put a system message first when the row has a non-empty system prompt."""
    first = pl.concat_list(message("system", system))
    return pl.when(system.fill_null("").str.strip_chars() != "").then(
        pl.concat_list(first, prompt)).otherwise(prompt)


def system_prefix(prompt: pl.Expr, schema: pl.Schema) -> pl.Expr:
    """LLaMA-Factory's optional `system` column, when the file has one."""
    return with_system(prompt, pl.col("system")) if schema.get("system") == pl.String else prompt


def marked_transcript(source: pl.Expr, markers: list[tuple[str, str]],
                      first_role: str | None = None) -> pl.Expr:
    """A transcript string split into messages at role markers (regex, role).

    Text before the first marker belongs to `first_role`, or is dropped when that is None.
    """
    marked = source
    for pattern, role in markers:
        marked = marked.str.replace_all(pattern, f"\x1e{role}\x1f")
    if first_role is not None:
        marked = pl.lit(f"\x1e{first_role}\x1f") + marked
    parts = marked.str.split("\x1e").list.eval(pl.element().filter(pl.element().str.contains("\x1f")))
    return parts.list.eval(message(
        pl.element().str.split_exact("\x1f", 1).struct.field("field_0"),
        pl.element().str.split_exact("\x1f", 1).struct.field("field_1")))


HH_MARKERS = [(r"\n\nHuman: ?", "user"), (r"\n\nAssistant: ?", "assistant")]


def hh_transcript(source: pl.Expr) -> pl.Expr:
    """'\\n\\nHuman: ...\\n\\nAssistant: ...' as messages; a leading 'Human:' needs no blank line."""
    return marked_transcript(source.str.replace(r"^Human:", "\n\nHuman:"), HH_MARKERS)


def roles(msgs: pl.Expr) -> pl.Expr:
    return msgs.list.eval(pl.element().struct.field("role"))


def after_last_user(msgs: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """(messages up to and including the last user turn, the assistant text after it)."""
    is_user = msgs.list.eval(pl.element().struct.field("role") == "user")
    cut = msgs.list.len() - is_user.list.reverse().list.arg_max()
    reply = msgs.list.slice(cut).list.eval(pl.element().struct.field("content")).list.join("\n\n")
    return msgs.list.head(cut), reply


def split_last_reply(msgs: pl.Expr) -> list[pl.Expr]:
    """prompt = all but the last message, response = the last one's text (its role is checked)."""
    return [
        msgs.list.head(msgs.list.len() - 1).alias("prompt"),
        msgs.list.last().struct.field("content").alias("response"),
        msgs.list.last().struct.field("role").alias("_reply_role"),
    ]


def bool_label(column: str, dtype: pl.DataType) -> pl.Expr:
    """A KTO label as a boolean: booleans as they are, 'true'/'false' and 1/0 understood,
    anything else null (and reported by the importer)."""
    col = pl.col(column)
    if dtype == pl.Boolean:
        return col
    if dtype == pl.String:
        lowered = col.str.strip_chars().str.to_lowercase()
        return (pl.when(lowered.is_in(["true", "1"])).then(True)
                .when(lowered.is_in(["false", "0"])).then(False).otherwise(None))
    if dtype.is_integer():
        return pl.when(col == 1).then(True).when(col == 0).then(False).otherwise(None)
    raise InputError(f"column {column!r} has type {dtype}: expected a boolean label")


def where(row: dict) -> str:
    if row.get("_line") is not None:
        return f"line {row['_line']}"
    if row.get("_record") is not None:
        return f"record {row['_record']}"
    return "a row"
