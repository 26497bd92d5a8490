"""Reasoning traces in imported rows, in whichever common layout they come.

Found after a layout has converted a chunk (`with_traces`), in this order of precedence:

- a field on the reply's message: `reasoning_content` (DeepSeek's API, vLLM, Qwen3's chat
  template), `reasoning` (OpenRouter, newer vLLM) or `thinking` (gpt-oss's template), on the
  last message of a `messages`/`completion`/`response` list (sft) or of `chosen`/`rejected`
  lists (preference pairs);
- a top-level column: `reasoning_content` or `thinking` (sft), or the workbench's own
  `reasoning` / `chosen_reasoning` / `rejected_reasoning`;
- a `<think>` block at the start of the reply text (workbench.algorithms.reasoning.split).

The trace goes to the trace column, the reply keeps the answer only; the source columns the
trace came from are dropped. Traces of earlier assistant turns inside a prompt are not kept:
the prompt holds each message's role and content, as chat templates render past turns.
"""

from __future__ import annotations

import polars as pl

from workbench.algorithms.reasoning import TEXT_COLUMNS, split_columns, trace_column
from workbench.errors import InputError
from workbench.io.layout_base import struct_fields

TRACE_FIELDS = ("reasoning_content", "reasoning", "thinking")
# the raw columns whose last message is a text column's reply, per text column
REPLY_LISTS = {"response": ("messages", "completion", "response"),
               "chosen": ("chosen",), "rejected": ("rejected",)}
TOP_LEVEL = {"response": ("reasoning_content", "thinking")}


def with_traces(frame: pl.DataFrame, raw: pl.DataFrame, kind: str) -> pl.DataFrame:
    """`frame` (a converted chunk, row for row with `raw`) with traces moved to their columns."""
    given: dict[str, pl.Series] = {}
    moved: list[str] = []
    for column in TEXT_COLUMNS[kind]:
        target = trace_column(column)
        if target in frame.columns and not _is_text(frame.schema[target], column):
            raise InputError(f"column {target!r} has type {frame.schema[target]}; a reasoning "
                             f"trace must be text (rename it with --map {target}_original="
                             f"{target})")
        sources = [e for e in (_last_message_field(raw, c) for c in REPLY_LISTS.get(column, ()))
                   if e is not None]
        tops = [name for name in TOP_LEVEL.get(column, ()) if raw.schema.get(name) == pl.String]
        sources += [pl.col(name) for name in tops]
        if not sources:
            continue
        found = raw.select(pl.coalesce(sources).cast(pl.String).alias("t"))["t"]
        if target in frame.columns:
            found = frame.select(pl.coalesce(found, pl.col(target).cast(pl.String)).alias("t"))["t"]
        given[column] = found
        moved += [name for name in tops if name in frame.columns]
    return split_columns(frame.drop(moved), kind, given)


def _last_message_field(raw: pl.DataFrame, column: str) -> pl.Expr | None:
    """The first trace field of the last message of a message-list column, if it has one."""
    dtype = raw.schema.get(column)
    if not isinstance(dtype, pl.List):
        return None
    names = struct_fields(dtype)
    field = next((f for f in TRACE_FIELDS if f in names), None)
    if field is None:
        return None
    return pl.col(column).list.last().struct.field(field).cast(pl.String)


def _is_text(dtype: pl.DataType, column: str) -> bool:
    return dtype == (pl.List(pl.String) if column == "responses" else pl.String) or \
        dtype == pl.Null

