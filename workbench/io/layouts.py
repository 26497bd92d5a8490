"""Recognise the common public layouts and map them onto the canonical kinds.

Each layout is a pair (test on the column names, polars conversion). The first layout whose
test passes wins; `--map canonical=column` renames columns first for anything else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from workbench.errors import InputError
from workbench.schema import MESSAGES, _compatible, user

SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "chatgpt": "assistant", "bing": "assistant",
                  "bard": "assistant", "model": "assistant", "system": "system", "user": "user",
                  "assistant": "assistant", "tool": "tool", "function": "tool"}


@dataclass(frozen=True)
class Layout:
    name: str
    kind: str
    matches: Callable[[pl.Schema], bool]
    convert: Callable[[pl.DataFrame], pl.DataFrame]


def _is_messages(dtype: pl.DataType) -> bool:
    return _compatible(dtype, MESSAGES) or (
        isinstance(dtype, pl.List)
        and isinstance(dtype.inner, pl.Struct)
        and {"role", "content"} <= {f.name for f in dtype.inner.fields}
    )


def _messages(column: str, dtype: pl.DataType) -> pl.Expr:
    """A string column becomes one user message; a message list keeps only role/content."""
    if dtype == pl.String:
        return user(column)
    if _is_messages(dtype):
        return pl.col(column).list.eval(
            pl.struct(
                pl.element().struct.field("role").cast(pl.String),
                pl.element().struct.field("content").cast(pl.String),
            )
        )
    raise InputError(f"column {column!r} has type {dtype}: expected a string or a message list")


def _text(column: str, dtype: pl.DataType) -> pl.Expr:
    """Assistant text from a string, or from the last message of a message list."""
    if dtype == pl.String:
        return pl.col(column)
    if _is_messages(dtype):
        return pl.col(column).list.last().struct.field("content").cast(pl.String)
    raise InputError(f"column {column!r} has type {dtype}: expected a string or a message list")


# TRL preference, standard or conversational, explicit or implicit prompt --------------------
def _trl_preference(frame: pl.DataFrame) -> pl.DataFrame:
    s = frame.schema
    if "prompt" in s:
        prompt = _messages("prompt", s["prompt"])
    elif _is_messages(s["chosen"]):  # implicit prompt: everything before the final reply
        prompt = _messages("chosen", s["chosen"]).list.head(pl.col("chosen").list.len() - 1)
    else:
        raise InputError("standard preference rows need a 'prompt' column")
    return frame.with_columns(
        prompt.alias("prompt"),
        _text("chosen", s["chosen"]).alias("chosen"),
        _text("rejected", s["rejected"]).alias("rejected"),
    )


# hh-rlhf transcripts -------------------------------------------------------------------------
def _transcript(column: str) -> pl.Expr:
    """'\\n\\nHuman: ...\\n\\nAssistant: ...' as messages, in polars string ops."""
    marked = (
        pl.col(column)
        .str.replace_all(r"\n\nHuman: ?", "\x1euser\x1f")
        .str.replace_all(r"\n\nAssistant: ?", "\x1eassistant\x1f")
    )
    parts = marked.str.split("\x1e").list.eval(
        pl.element().filter(pl.element().str.contains("\x1f"))
    )
    return parts.list.eval(
        pl.struct(
            pl.element().str.split_exact("\x1f", 1).struct.field("field_0").alias("role"),
            pl.element().str.split_exact("\x1f", 1).struct.field("field_1").alias("content"),
        )
    )


def _after_last_user(column: str) -> tuple[pl.Expr, pl.Expr]:
    """(messages up to and including the last user turn, the assistant text after it)."""
    msgs = pl.col(column)
    is_user = msgs.list.eval(pl.element().struct.field("role") == "user")
    cut = msgs.list.len() - is_user.list.reverse().list.arg_max()
    reply = msgs.list.slice(cut).list.eval(pl.element().struct.field("content")).list.join("\n\n")
    return msgs.list.head(cut), reply


def _hh_rlhf(frame: pl.DataFrame) -> pl.DataFrame:
    """TRL's hh-rlhf recipe: prompt = chosen transcript up to its last Human turn; chosen and
    rejected = each transcript's reply after its last Human turn. A few transcripts are
    malformed (an inline "Human:" without the blank line, so two replies follow the last
    turn, or rejected diverging earlier): they are kept, with the replies joined, and flagged
    in `import_warning`."""
    out = frame.with_columns(_transcript("chosen").alias("_c"), _transcript("rejected").alias("_r"))
    no_user = out.filter(
        ~pl.col("_c").list.eval(pl.element().struct.field("role") == "user").list.any()
        | (pl.col("_c").list.last().struct.field("role") != "assistant")
        | (pl.col("_r").list.last().struct.field("role") != "assistant")
    )
    if no_user.height:
        where = _where(no_user.row(0, named=True))
        raise InputError(f"{where}: hh-rlhf transcript lacks a Human turn or a final Assistant turn")
    prompt, chosen = _after_last_user("_c")
    rejected_prompt, rejected = _after_last_user("_r")
    return out.with_columns(
        prompt.alias("prompt"),
        chosen.alias("chosen"),
        rejected.alias("rejected"),
        pl.when(prompt != rejected_prompt)
        .then(pl.lit("rejected transcript differs from chosen before the last turn"))
        .when((prompt.list.len() != pl.col("_c").list.len() - 1)
              | (rejected_prompt.list.len() != pl.col("_r").list.len() - 1))
        .then(pl.lit("several replies after the last Human turn were joined"))
        .alias("import_warning"),
    ).drop("_c", "_r")


def _looks_like_hh(frame: pl.DataFrame) -> bool:
    s = frame.schema
    if s.get("chosen") != pl.String or s.get("rejected") != pl.String or "prompt" in s:
        return False
    return bool(frame["chosen"].head(20).str.starts_with("\n\nHuman:").any())


# candidates (several responses per prompt) ---------------------------------------------------
def _candidates(frame: pl.DataFrame) -> pl.DataFrame:
    s = frame.schema
    source = "prompt" if "prompt" in s else "instruction"
    exprs = [_messages(source, s[source]).alias("prompt")]
    if "completions" in s:  # open-instruct: [{model, completion}]
        exprs.append(pl.col("completions").list.eval(pl.element().struct.field("completion"))
                     .alias("responses"))
        exprs.append(pl.col("completions").list.eval(pl.element().struct.field("model"))
                     .alias("models"))
    else:
        exprs.append(pl.col("responses").cast(pl.List(pl.String)))
    if "rewards_armorm" in s:  # magpie: [{score}]
        exprs.append(pl.col("rewards_armorm").list.eval(pl.element().struct.field("score"))
                     .cast(pl.List(pl.Float64)).alias("scores"))
    out = frame.with_columns(exprs)
    return out.drop("completions") if "completions" in s else out


# message lists -------------------------------------------------------------------------------
def _split_last_reply(messages: pl.Expr) -> list[pl.Expr]:
    return [
        messages.list.head(messages.list.len() - 1).alias("prompt"),
        messages.list.last().struct.field("content").alias("response"),
        messages.list.last().struct.field("role").alias("_reply_role"),
    ]


def _chat_messages(frame: pl.DataFrame) -> pl.DataFrame:
    messages = _messages("messages", frame.schema["messages"])
    return frame.with_columns(_split_last_reply(messages)).drop("messages")


def _sharegpt_messages() -> pl.Expr:
    return pl.col("conversations").list.eval(
        pl.struct(
            pl.element().struct.field("from").replace(SHAREGPT_ROLES).alias("role"),
            pl.element().struct.field("value").cast(pl.String).alias("content"),
        )
    )


def _sharegpt(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(_split_last_reply(_sharegpt_messages())).drop("conversations")


# single prompt plus reply ----------------------------------------------------------------------
def _alpaca_prompt(schema: pl.Schema) -> pl.Expr:
    """Alpaca joins instruction and input with a blank line; an empty input adds nothing."""
    text = pl.col("instruction")
    if "input" in schema:
        extra = pl.col("input").fill_null("")
        text = pl.when(extra.str.strip_chars() == "").then(text).otherwise(text + "\n\n" + extra)
    prompt = user(text)
    if "system" in schema:
        system = pl.concat_list(pl.struct(pl.lit("system").alias("role"),
                                          pl.col("system").alias("content")))
        prompt = pl.when(pl.col("system").fill_null("") != "").then(
            pl.concat_list(system, prompt)).otherwise(prompt)
    return prompt


def _alpaca(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(_alpaca_prompt(frame.schema).alias("prompt"),
                              pl.col("output").alias("response"))


def _self_instruct(frame: pl.DataFrame) -> pl.DataFrame:
    """Self-Instruct seed tasks: the first instance's input and output."""
    first = pl.col("instances").list.first()
    inp = first.struct.field("input").fill_null("")
    text = pl.when(inp.str.strip_chars() == "").then(pl.col("instruction")).otherwise(
        pl.col("instruction") + "\n\n" + inp)
    return frame.with_columns(user(text).alias("prompt"),
                              first.struct.field("output").alias("response"))


def _prompt_reply(prompt_col: str, reply_col: str) -> Callable[[pl.DataFrame], pl.DataFrame]:
    def convert(frame: pl.DataFrame) -> pl.DataFrame:
        s = frame.schema
        out = frame.with_columns(_messages(prompt_col, s[prompt_col]).alias("prompt"),
                                 _text(reply_col, s[reply_col]).alias("response"))
        return out.drop(reply_col) if reply_col != "response" else out
    return convert


def _instruction_only(column: str) -> Callable[[pl.DataFrame], pl.DataFrame]:
    def convert(frame: pl.DataFrame) -> pl.DataFrame:
        dtype = frame.schema[column]
        if column == "turns":  # MT-Bench: later turns depend on earlier answers; keep turn 1
            return frame.with_columns(user(pl.col("turns").list.first()).alias("prompt"))
        return frame.with_columns(_messages(column, dtype).alias("prompt"))
    return convert


def _has(*columns: str) -> Callable[[pl.Schema], bool]:
    return lambda schema: all(c in schema for c in columns)


LAYOUTS: tuple[Layout, ...] = (
    Layout("trl-preference", "preference",
           lambda s: _has("chosen", "rejected")(s) and ("prompt" in s or _is_messages(s["chosen"])),
           _trl_preference),
    Layout("candidates", "candidates",
           lambda s: ("prompt" in s or "instruction" in s) and ("responses" in s or "completions" in s),
           _candidates),
    Layout("messages", "sft", _has("messages"), _chat_messages),
    Layout("sharegpt", "sft", _has("conversations"), _sharegpt),
    Layout("self-instruct", "sft", _has("instruction", "instances"), _self_instruct),
    Layout("alpaca", "sft", _has("instruction", "output"), _alpaca),
    Layout("prompt-response", "sft", _has("prompt", "response"), _prompt_reply("prompt", "response")),
    Layout("prompt-completion", "sft", _has("prompt", "completion"),
           _prompt_reply("prompt", "completion")),
    Layout("question-answer", "sft", _has("question", "answer"), _prompt_reply("question", "answer")),
    Layout("prompt", "instruction", _has("prompt"), _instruction_only("prompt")),
    Layout("instruction", "instruction", _has("instruction"), _instruction_only("instruction")),
    Layout("turns", "instruction", _has("turns"), _instruction_only("turns")),
)
HH_RLHF = Layout("hh-rlhf", "preference", lambda s: True, _hh_rlhf)


def detect(frame: pl.DataFrame) -> Layout:
    if _looks_like_hh(frame):
        return HH_RLHF
    schema = frame.schema
    columns = [c for c in schema.names() if not c.startswith("_")]
    if ("chosen" in schema) != ("rejected" in schema):
        missing = "rejected" if "chosen" in schema else "chosen"
        raise InputError(f"column {missing!r} is missing for preference rows "
                         f"(columns: {', '.join(columns)})")
    for layout in LAYOUTS:
        if layout.matches(schema):
            return layout
    raise InputError(
        f"no known layout matches the columns {', '.join(columns)}; expected e.g. "
        "prompt/chosen/rejected, chosen/rejected transcripts, prompt/response, "
        "instruction/input/output, messages, conversations, prompt; "
        "or map yours with --map prompt=COLUMN --map response=COLUMN"
    )


def by_name(name: str) -> Layout:
    for layout in (*LAYOUTS, HH_RLHF):
        if layout.name == name:
            return layout
    names = ", ".join(layout.name for layout in (*LAYOUTS, HH_RLHF))
    raise InputError(f"unknown layout {name!r} (layouts: {names})")


def _where(row: dict) -> str:
    if row.get("_line") is not None:
        return f"line {row['_line']}"
    if row.get("_record") is not None:
        return f"record {row['_record']}"
    return "a row"
