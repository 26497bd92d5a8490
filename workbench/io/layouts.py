"""Recognise the common public layouts and map them onto the canonical kinds.

A layout names the columns it reads and tests their types; the first layout in `LAYOUTS`
that fits the file wins, so specific layouts (a named dataset's columns) come before generic
ones (`prompt`/`response`). Column names match case-insensitively: `Instruction` is read as
`instruction`. `--map canonical=column` renames columns first for anything else, and
`--layout NAME` skips detection.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from workbench.errors import InputError
from workbench.io import layouts_llama_factory as llama_factory
from workbench.io import layouts_public as public
from workbench.io.layout_base import (
    Layout,
    after_last_user,
    hh_transcript,
    is_messages,
    messages,
    struct_fields,
    text,
    where,
)
from workbench.schema import user

__all__ = ["LAYOUTS", "Layout", "by_name", "detect", "normalise_columns", "where"]


# TRL preference, standard or conversational, explicit or implicit prompt --------------------
SCORE_NAMES = {"score_chosen": "chosen_score", "score_rejected": "rejected_score"}


def _trl_preference(frame: pl.DataFrame) -> pl.DataFrame:
    """UltraFeedback-binarized's `score_chosen`/`score_rejected` become the canonical
    `chosen_score`/`rejected_score`."""
    s = frame.schema
    if "prompt" in s:
        prompt = messages("prompt", s["prompt"])
    elif is_messages(s["chosen"]):  # implicit prompt: everything before the final reply
        prompt = messages("chosen", s["chosen"]).list.head(pl.col("chosen").list.len() - 1)
    else:
        raise InputError("standard preference rows need a 'prompt' column")
    out = frame.with_columns(
        prompt.alias("prompt"),
        text("chosen", s["chosen"]).alias("chosen"),
        text("rejected", s["rejected"]).alias("rejected"),
    )
    return out.rename({k: v for k, v in SCORE_NAMES.items() if k in s and v not in s})


# hh-rlhf transcripts -------------------------------------------------------------------------
def _hh_rlhf(frame: pl.DataFrame) -> pl.DataFrame:
    """TRL's hh-rlhf recipe: prompt = chosen transcript up to its last Human turn; chosen and
    rejected = each transcript's reply after its last Human turn. A few transcripts are
    malformed (an inline "Human:" without the blank line, so two replies follow the last
    turn, or rejected diverging earlier): they are kept, with the replies joined, and flagged
    in `import_warning`."""
    out = frame.with_columns(hh_transcript(pl.col("chosen")).alias("_c"),
                             hh_transcript(pl.col("rejected")).alias("_r"))
    no_user = out.filter(
        ~pl.col("_c").list.eval(pl.element().struct.field("role") == "user").list.any()
        | (pl.col("_c").list.last().struct.field("role") != "assistant")
        | (pl.col("_r").list.last().struct.field("role") != "assistant")
    )
    if no_user.height:
        raise InputError(f"{where(no_user.row(0, named=True))}: hh-rlhf transcript lacks a "
                         "Human turn or a final Assistant turn")
    prompt, chosen = after_last_user(pl.col("_c"))
    rejected_prompt, rejected = after_last_user(pl.col("_r"))
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
    exprs = [messages(source, s[source]).alias("prompt")]
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


def _candidates_match(s: pl.Schema) -> bool:
    if "prompt" not in s and "instruction" not in s:
        return False
    if "completions" in s:
        return "completion" in struct_fields(s["completions"])
    return "responses" in s


# single prompt plus reply ----------------------------------------------------------------------
def _self_instruct(frame: pl.DataFrame) -> pl.DataFrame:
    """Self-Instruct seed tasks: the first instance's input and output."""
    first = pl.col("instances").list.first()
    inp = first.struct.field("input").fill_null("")
    prompt_text = pl.when(inp.str.strip_chars() == "").then(pl.col("instruction")).otherwise(
        pl.col("instruction") + "\n\n" + inp)
    return frame.with_columns(user(prompt_text).alias("prompt"),
                              first.struct.field("output").alias("response"))


def _prompt_reply(prompt_col: str, reply_col: str) -> Callable[[pl.DataFrame], pl.DataFrame]:
    def convert(frame: pl.DataFrame) -> pl.DataFrame:
        s = frame.schema
        out = frame.with_columns(messages(prompt_col, s[prompt_col]).alias("prompt"),
                                 text(reply_col, s[reply_col]).alias("response"))
        return out.drop(reply_col) if reply_col != "response" else out
    return convert


def _instruction_only(column: str) -> Callable[[pl.DataFrame], pl.DataFrame]:
    def convert(frame: pl.DataFrame) -> pl.DataFrame:
        dtype = frame.schema[column]
        if column == "turns":  # MT-Bench: later turns depend on earlier answers; keep turn 1
            return frame.with_columns(user(pl.col("turns").list.first()).alias("prompt"))
        return frame.with_columns(messages(column, dtype).alias("prompt"))
    return convert


HH_RLHF = Layout("hh-rlhf", "preference", ("chosen", "rejected"), _hh_rlhf,
                 detect=False)  # detected by content, see _looks_like_hh
TRL_PREFERENCE = Layout(
    "trl-preference", "preference", ("chosen", "rejected"), _trl_preference,
    matches=lambda s: "prompt" in s or is_messages(s["chosen"]),
    optional=("prompt", "score_chosen", "score_rejected"))

# Order matters: the first that fits wins.
LAYOUTS: tuple[Layout, ...] = (
    *public.LAYOUTS,
    *llama_factory.LAYOUTS,
    TRL_PREFERENCE,
    Layout("candidates", "candidates", (), _candidates, matches=_candidates_match,
           optional=("prompt", "instruction", "responses", "completions", "rewards_armorm")),
    public.HELPSTEER2,
    *llama_factory.CONVERSATIONS,
    Layout("self-instruct", "sft", ("instruction", "instances"), _self_instruct),
    llama_factory.ALPACA,
    Layout("prompt-response", "sft", ("prompt", "response"), _prompt_reply("prompt", "response")),
    Layout("prompt-completion", "sft", ("prompt", "completion"),
           _prompt_reply("prompt", "completion")),
    Layout("question-answer", "sft", ("question", "answer"), _prompt_reply("question", "answer")),
    Layout("prompt", "instruction", ("prompt",), _instruction_only("prompt")),
    Layout("instruction", "instruction", ("instruction",), _instruction_only("instruction")),
    Layout("turns", "instruction", ("turns",), _instruction_only("turns")),
    HH_RLHF,
)
# Every column name some layout reads: these match case-insensitively.
KNOWN_COLUMNS = frozenset({"id", *(c for layout in LAYOUTS for c in (*layout.needs, *layout.optional))})


def normalise_columns(raw: pl.DataFrame) -> pl.DataFrame:
    """Rename `Instruction`, `CHOSEN`, ... to the lower-case names layouts read.

    Two columns whose names differ only by case are an error when layouts read that name:
    which one is meant cannot be guessed (rename one with --map first).
    """
    renames: dict[str, str] = {}
    seen: dict[str, str] = {}
    for column in raw.columns:
        lower = column.lower()
        if lower not in KNOWN_COLUMNS:
            continue
        if lower in seen:
            raise InputError(
                f"columns {seen[lower]!r} and {column!r} differ only by case; rename one "
                f"with --map (e.g. --map {lower}_2={column})")
        seen[lower] = column
        if column != lower:
            renames[column] = lower
    return raw.rename(renames) if renames else raw


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
        if layout.detect and layout.fits(schema):
            return layout
    raise InputError(
        f"no known layout matches the columns {', '.join(columns)}; expected e.g. "
        "prompt/chosen/rejected, chosen/rejected transcripts, prompt/response, "
        "instruction/input/output, messages, conversations, prompt; "
        "or map yours with --map prompt=COLUMN --map response=COLUMN "
        "or name a layout with --layout"
    )


def by_name(name: str) -> Layout:
    for layout in LAYOUTS:
        if name in (layout.name, *layout.aliases):
            return layout
    raise InputError(f"unknown layout {name!r} (layouts: {', '.join(names())})")


def names() -> list[str]:
    return [layout.name for layout in LAYOUTS]


def check_columns(layout: Layout, schema: pl.Schema) -> None:
    """A layout named with --layout must find its columns; say which are missing."""
    missing = [c for c in layout.needs if c not in schema]
    if missing:
        columns = ", ".join(c for c in schema.names() if not c.startswith("_"))
        raise InputError(f"layout {layout.name} needs the column(s) {', '.join(missing)} "
                         f"(columns: {columns}); use --map {missing[0]}=COLUMN")
