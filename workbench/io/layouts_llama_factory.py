"""LLaMA-Factory's dataset formats (its data/README.md), and TRL's unpaired (KTO) layout.

alpaca: `instruction` + optional `input` (joined with a newline, as LLaMA-Factory does),
`output`, optional `system` and `history` ([user, assistant] pairs = earlier turns).
sharegpt: `conversations` of {from, value} with roles human/gpt/observation/function_call/system,
optional `system` and `tools` columns. OpenAI style: `messages` of {role, content}.
Each has an SFT, a preference (`chosen`/`rejected`) and a KTO (`kto_tag`) variant.
"""

from __future__ import annotations

import polars as pl

from workbench.io.layout_base import (
    Layout,
    bool_label,
    is_messages,
    message,
    messages,
    split_last_reply,
    struct_fields,
    system_prefix,
    text,
)
from workbench.schema import MESSAGES, user

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bing": "assistant", "bard": "assistant",
                  "model": "assistant", "function_call": "assistant", "observation": "tool",
                  "tool": "tool", "function": "tool", "system": "system"}
NO_MESSAGES = pl.lit([], dtype=MESSAGES)


# alpaca ----------------------------------------------------------------------------------
def _history(schema: pl.Schema) -> pl.Expr:
    """`history` = [[user, assistant], ...] as earlier turns; absent or empty gives none."""
    dtype = schema.get("history")
    if not (isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.List)
            and dtype.inner.inner == pl.String):
        return NO_MESSAGES
    pairs = pl.col("history").list.eval(pl.concat_list(
        message("user", pl.element().list.get(0, null_on_oob=True)),
        message("assistant", pl.element().list.get(1, null_on_oob=True)),
    ))
    return pairs.list.eval(pl.element().list.explode(keep_nulls=False, empty_as_null=False)
                           ).fill_null(NO_MESSAGES)


def alpaca_prompt(schema: pl.Schema) -> pl.Expr:
    """system, history turns, then `instruction` and a non-empty `input` joined by a newline."""
    current = pl.col("instruction")
    if "input" in schema:
        extra = pl.col("input").cast(pl.String).fill_null("")
        current = pl.when(extra.str.strip_chars() == "").then(current).otherwise(
            current + "\n" + extra)
    return system_prefix(pl.concat_list(_history(schema), user(current)), schema)


def _alpaca(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(alpaca_prompt(frame.schema).alias("prompt"),
                              pl.col("output").alias("response"))


def _alpaca_preference(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(alpaca_prompt(frame.schema).alias("prompt"))


def _alpaca_kto(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(alpaca_prompt(frame.schema).alias("prompt"),
                              pl.col("output").alias("response"),
                              bool_label("kto_tag", frame.schema["kto_tag"]).alias("label")
                              ).drop("kto_tag")


# message lists (sharegpt and OpenAI style) ----------------------------------------------------
def sharegpt_messages(column: str = "conversations") -> pl.Expr:
    return pl.col(column).list.eval(message(
        pl.element().struct.field("from").replace(SHAREGPT_ROLES),
        pl.element().struct.field("value"),
    ))


def conversation_to_sft(frame: pl.DataFrame, msgs: pl.Expr) -> pl.DataFrame:
    """prompt = every turn before the final reply, response = that reply.

    Tool use (function calls and observations after the last user turn) cannot end a prompt,
    which must end with a user turn: those turns move to `tool_turns` and the row is flagged
    in `import_warning`.
    """
    out = frame.with_columns(split_last_reply(msgs))
    before = pl.col("prompt")
    is_user = before.list.eval(pl.element().struct.field("role") == "user")
    cut = before.list.len() - is_user.list.reverse().list.arg_max().fill_null(0)
    between = before.list.slice(cut)
    has_tool = between.list.eval(pl.element().struct.field("role") == "tool").list.any()
    out = out.with_columns(
        pl.when(has_tool).then(before.list.head(cut)).otherwise(before).alias("prompt"),
        pl.when(has_tool).then(between).alias("tool_turns"),
        pl.when(has_tool).then(pl.lit("tool calls and results after the last user turn are "
                                      "in tool_turns, not in the prompt")).alias("import_warning"),
    )
    if out["tool_turns"].null_count() == out.height:
        out = out.drop("tool_turns", "import_warning")
    return out


def _sharegpt(frame: pl.DataFrame) -> pl.DataFrame:
    msgs = system_prefix(sharegpt_messages(), frame.schema)
    return conversation_to_sft(frame, msgs).drop("conversations")


def _sharegpt_preference(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(
        system_prefix(sharegpt_messages(), frame.schema).alias("prompt"),
        pl.col("chosen").struct.field("value").cast(pl.String).alias("chosen"),
        pl.col("rejected").struct.field("value").cast(pl.String).alias("rejected"),
    ).drop("conversations")


def _sharegpt_kto(frame: pl.DataFrame) -> pl.DataFrame:
    out = _sharegpt(frame)
    return out.with_columns(bool_label("kto_tag", frame.schema["kto_tag"]).alias("label")
                            ).drop("kto_tag")


def _chat_messages(frame: pl.DataFrame) -> pl.DataFrame:
    msgs = system_prefix(messages("messages", frame.schema["messages"]), frame.schema)
    return conversation_to_sft(frame, msgs).drop("messages")


def _kto(frame: pl.DataFrame) -> pl.DataFrame:
    """TRL unpaired preference (prompt/completion/label, strings or message lists), or a
    `messages` conversation with a `label` (LLaMA-Factory's kto_en_demo)."""
    s = frame.schema
    label = bool_label("label", s["label"]).alias("label")
    if "messages" in s and "completion" not in s:
        return _chat_messages(frame).with_columns(label)
    out = frame.with_columns(messages("prompt", s["prompt"]).alias("prompt"),
                             text("completion", s["completion"]).alias("response"), label)
    return out.drop("completion")


def _is_message_struct(dtype: pl.DataType | None) -> bool:
    return isinstance(dtype, pl.Struct) and {"from", "value"} <= struct_fields(dtype)


def _is_sharegpt(dtype: pl.DataType | None) -> bool:
    return isinstance(dtype, pl.List) and {"from", "value"} <= struct_fields(dtype)


def _kto_matches(schema: pl.Schema) -> bool:
    return schema["label"] == pl.Boolean and (
        is_messages(schema.get("messages")) or ("prompt" in schema and "completion" in schema))


ALPACA_OPTIONAL = ("input", "system", "history")
LAYOUTS: tuple[Layout, ...] = (
    Layout("sharegpt-preference", "preference", ("conversations", "chosen", "rejected"),
           _sharegpt_preference, optional=("system", "tools"),
           matches=lambda s: _is_message_struct(s["chosen"]) and _is_message_struct(s["rejected"])),
    Layout("sharegpt-kto", "sft", ("conversations", "kto_tag"), _sharegpt_kto,
           optional=("system", "tools"), booleans=("label",),
           matches=lambda s: _is_sharegpt(s["conversations"])),
    Layout("alpaca-preference", "preference", ("instruction", "chosen", "rejected"),
           _alpaca_preference, optional=ALPACA_OPTIONAL,
           matches=lambda s: s["chosen"] == pl.String and s["rejected"] == pl.String),
    Layout("alpaca-kto", "sft", ("instruction", "output", "kto_tag"), _alpaca_kto,
           optional=ALPACA_OPTIONAL, booleans=("label",)),
    Layout("kto", "sft", ("label",), _kto, matches=_kto_matches,
           optional=("messages", "prompt", "completion", "system"), booleans=("label",)),
)
CONVERSATIONS: tuple[Layout, ...] = (
    Layout("messages", "sft", ("messages",), _chat_messages, aliases=("openai",),
           matches=lambda s: is_messages(s["messages"]), optional=("system", "tools")),
    Layout("sharegpt", "sft", ("conversations",), _sharegpt, optional=("system", "tools"),
           matches=lambda s: _is_sharegpt(s["conversations"])),
)
ALPACA = Layout("alpaca", "sft", ("instruction", "output"), _alpaca, optional=ALPACA_OPTIONAL)
