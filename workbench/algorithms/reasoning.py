"""Reasoning traces: a model's thinking kept apart from its answer.

A reply such as `<think>…</think>The answer is 4.` holds two things: the trace and the answer.
The workbench keeps the answer in the kind's text column (`response`, `responses`, `chosen`,
`rejected`) and the trace beside it (`reasoning`, a list parallel to `responses` for
candidates, `chosen_reasoning` / `rejected_reasoning` for pairs), null where a reply has
none. The answer is the content: ids hash it, never the trace (schema.CONTENT).

`split` recognises three shapes of reply, all at the start of the text (leading whitespace
allowed); anything else is an answer without a trace, left byte for byte as it was:

- closed: `<think>T</think>A`, the trace T and the answer A;
- unclosed: `<think>T` with no `</think>` (a reply cut off while thinking): trace T, answer "";
- stray close: `T</think>A` with no `<think>` before the `</think>`, as DeepSeek-R1-style
  chat templates produce, whose generation prompt already ends with `<think>`.

Only the first block counts: a second `<think>` later in the answer, or a tag in the middle
of a text that does not start with one, stays in the answer. The trace is stripped of
surrounding whitespace (an empty trace, as Qwen3 writes with thinking off, is null); the
answer loses the whitespace that follows `</think>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import polars as pl

OPEN, CLOSE = "<think>", "</think>"
EXPORT_MODES = ("keep", "strip", "inline")
ExportMode = Literal["keep", "strip", "inline"]

_CLOSED = r"(?s)^\s*<think>(.*?)</think>"
_OPENED = r"(?s)^\s*<think>(.*)$"
_BEFORE_CLOSE = r"(?s)^(.*?)</think>"


def split(text: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """(reasoning, answer) of a string expression; works inside `list.eval` too."""
    closed = text.str.extract(_CLOSED, 1)
    opened = text.str.extract(_OPENED, 1)
    before = text.str.extract(_BEFORE_CLOSE, 1)
    stray = before.is_not_null() & ~before.str.contains(OPEN, literal=True)
    after_close = text.str.splitn(CLOSE, 2).struct.field("field_1").str.strip_chars_start()
    trace = (pl.when(closed.is_not_null()).then(closed)
             .when(opened.is_not_null()).then(opened)
             .when(stray).then(before))
    answer = (pl.when(closed.is_not_null() | stray).then(after_close)
              .when(opened.is_not_null()).then(pl.lit(""))
              .otherwise(text))
    trace = trace.str.strip_chars()
    return pl.when(trace != "").then(trace), answer


def join(reasoning: pl.Expr, answer: pl.Expr) -> pl.Expr:
    """The trace back inside the text, `<think>\\nT\\n</think>\\n\\nA` (DeepSeek-R1's and
    Qwen3's layout); the answer alone where there is no trace."""
    inline = pl.lit(f"{OPEN}\n") + reasoning + pl.lit(f"\n{CLOSE}\n\n") + answer
    return pl.when(reasoning.is_not_null() & answer.is_not_null()).then(inline).otherwise(answer)


def split_texts(texts: Sequence[str | None]) -> tuple[list[str | None], list[str | None]]:
    """`split` over a Python list (generated replies): (traces, answers)."""
    column = pl.Series("t", list(texts), pl.String)
    trace, answer = split(pl.col("t"))
    out = pl.DataFrame({"t": column}).select(trace.alias("r"), answer.alias("a"))
    return out["r"].to_list(), out["a"].to_list()


def trace_column(text_column: str) -> str:
    """Where the trace of a text column lives: response -> reasoning, responses ->
    reasoning, chosen -> chosen_reasoning, rejected -> rejected_reasoning."""
    return "reasoning" if text_column in ("response", "responses") else f"{text_column}_reasoning"


TEXT_COLUMNS: dict[str, tuple[str, ...]] = {
    "instruction": (), "sft": ("response",), "candidates": ("responses",),
    "preference": ("chosen", "rejected")}


def split_columns(frame: pl.DataFrame, kind: str,
                  fields: dict[str, pl.Expr | pl.Series] | None = None) -> pl.DataFrame:
    """Move traces out of the kind's text columns into their trace columns.

    `fields` gives a trace read from elsewhere (an imported `reasoning_content` field) per
    text column; a trace column the frame already has counts as one. Such a trace wins over
    one inside the text, which fills in where it is null (a whole row's list for
    candidates); the in-text block leaves the answer either way. The kind's trace columns
    (both sides of a pair) are added once some row has a trace or one already exists; a
    text without any block is left byte for byte as it was."""
    fields = fields or {}
    columns = [c for c in TEXT_COLUMNS[kind] if c in frame.columns]
    answers, traces, any_trace = {}, {}, False
    for column in columns:
        target = trace_column(column)
        listed = isinstance(frame.schema[column], pl.List)
        trace, answer = split(pl.element() if listed else pl.col(column))
        if listed:
            trace, answer = (pl.col(column).list.eval(trace), pl.col(column).list.eval(answer))
        given = fields.get(column)
        if given is None and target in frame.columns:
            given = pl.col(target)
        if given is None and not _mentions_think(frame, column, listed):
            # the common case, found by a literal scan instead of three regexes
            traces[target] = pl.Series(target, [None] * frame.height,
                                       pl.List(pl.String) if listed else pl.String)
            continue
        if given is not None:
            dtype = pl.List(pl.String) if listed else pl.String
            trace = pl.coalesce(pl.lit(given) if isinstance(given, pl.Series) else given,
                                trace).cast(dtype)
        found = frame.select(trace.alias("t"), answer.alias("a"),
                             (answer != pl.col(column)).any().alias("changed"))
        if found["changed"][0]:  # an empty block (`<think></think>A`) leaves A, no trace
            answers[column] = found["a"].alias(column)
        traces[target] = found["t"].alias(target)
        any_trace = any_trace or target in frame.columns or bool(
            found["t"].list.eval(pl.element().is_not_null()).list.any().any() if listed
            else found["t"].is_not_null().any())
    return frame.with_columns(*answers.values(), *(traces.values() if any_trace else ()))


def _mentions_think(frame: pl.DataFrame, column: str, listed: bool) -> bool:
    hit = (pl.col(column).list.eval(pl.element().str.contains("think>", literal=True)).list.any()
           if listed else pl.col(column).str.contains("think>", literal=True))
    return bool(frame.select(hit.any()).item())


def for_export(frame: pl.DataFrame, kind: str, mode: str) -> tuple[pl.DataFrame, int]:
    """A dataset's rows as an export writes them, and how many rows have a trace.

    keep: the answer in the text column, the trace in its trace column; strip: the answer
    only, trace columns gone; inline: the trace back inside the text (`join`), trace columns
    gone. Any `<think>` block still inside a text (rows made before traces were split) is
    split off first, so no mode leaves one in an answer it did not put there."""
    if mode not in EXPORT_MODES:
        raise ValueError(f"unknown reasoning mode {mode!r} (modes: {', '.join(EXPORT_MODES)})")
    frame = split_columns(frame, kind)
    pairs = [(c, trace_column(c)) for c in TEXT_COLUMNS[kind]
             if c in frame.columns and trace_column(c) in frame.columns]
    if not pairs:
        return frame, 0
    present = [pl.col(t).list.eval(pl.element().is_not_null()).list.any()
               if isinstance(frame.schema[t], pl.List) else pl.col(t).is_not_null()
               for _, t in pairs]
    traced = int(frame.select(pl.any_horizontal(present).fill_null(False).sum()).item())
    if mode == "inline":
        frame = frame.with_columns(join(pl.col(t), pl.col(c)).alias(c) for c, t in pairs
                                   if not isinstance(frame.schema[c], pl.List))
    if mode != "keep":
        frame = frame.drop([t for _, t in pairs])
    return frame, traced
