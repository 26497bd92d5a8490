"""Public preference and rating datasets, each as its dataset card describes it.

UltraFeedback (raw), HelpSteer2 (ratings and preferences), PKU-SafeRLHF, Chatbot Arena
conversations, Stanford SHP and Nectar. Source columns a conversion does not consume are kept.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from workbench.io.layout_base import (
    Check,
    Layout,
    after_last_user,
    hh_transcript,
    is_messages,
    marked_transcript,
    messages,
    struct_fields,
)
from workbench.schema import user


def _pick(first: pl.Expr, a: str, b: str) -> pl.Expr:
    return pl.when(first).then(pl.col(a)).otherwise(pl.col(b))


def _one_of(column: str, values: list, what: str) -> Check:
    col = pl.col(column)
    if isinstance(values[0], int):  # 1.0 or "1" (CSV) count as 1
        col = col.cast(pl.Float64, strict=False).cast(pl.Int64, strict=False)
    return (f"field {column!r} is not {what}", ~col.is_in(values).fill_null(False))


# UltraFeedback: instruction + completions [{model, response, overall_score, ...}] ------------
UF_FIELDS = {"response": ("responses", pl.List(pl.String)),
             "model": ("models", pl.List(pl.String)),
             "overall_score": ("scores", pl.List(pl.Float64)),
             "fine-grained_score": ("fine_grained_scores", pl.List(pl.Float64)),
             "principle": ("principles", pl.List(pl.String)),
             "custom_system_prompt": ("system_prompts", pl.List(pl.String)),
             "critique": ("critiques", pl.List(pl.String)),
             "annotations": ("annotations", None)}


def _ultrafeedback(frame: pl.DataFrame) -> pl.DataFrame:
    """Each completion's fields become aligned lists; a per-completion system prompt stays in
    `system_prompts` (it is not part of the shared prompt)."""
    present = struct_fields(frame.schema["completions"])
    exprs = [user("instruction").alias("prompt")]
    for field, (name, dtype) in UF_FIELDS.items():
        if field in present:
            values = pl.col("completions").list.eval(pl.element().struct.field(field))
            exprs.append((values.cast(dtype) if dtype is not None else values).alias(name))
    return frame.with_columns(exprs).drop("completions")


# HelpSteer2 ------------------------------------------------------------------------------------
HELPSTEER_ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
HELPSTEER_MARKERS = [(r"\n?<extra_id_1>User\n?", "user"), (r"\n?<extra_id_1>Assistant\n?", "assistant")]


def helpsteer_prompt(column: str) -> pl.Expr:
    """Multi-turn prompts hold earlier turns as '{user 1}\\n<extra_id_1>Assistant\\n{assistant 1}
    \\n<extra_id_1>User\\n{user 2}' (dataset card); single-turn prompts are plain text."""
    return marked_transcript(pl.col(column), HELPSTEER_MARKERS, first_role="user")


def _helpsteer2(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(helpsteer_prompt("prompt").alias("prompt"))


def _helpsteer2_preference(frame: pl.DataFrame) -> pl.DataFrame:
    """preference_strength -3..3: negative = response_1 better, 0 = about the same (a tie:
    kept with tie = true, response_1 as chosen), positive = response_2 better."""
    strength = pl.col("preference_strength").cast(pl.Int64)
    first = strength <= 0
    return frame.with_columns(
        helpsteer_prompt("prompt").alias("prompt"),
        _pick(first, "response_1", "response_2").alias("chosen"),
        _pick(first, "response_2", "response_1").alias("rejected"),
        strength.abs().cast(pl.Float64).alias("margin"),
        (strength == 0).alias("tie"),
    ).drop("response_1", "response_2")


# PKU-SafeRLHF ------------------------------------------------------------------------------------
def _pku(id_column: str) -> Callable[[pl.DataFrame], pl.DataFrame]:
    """chosen = response_{id}; the safety flags follow their responses as chosen_is_safe and
    rejected_is_safe (the source's is_response_N_safe columns stay too)."""
    def convert(frame: pl.DataFrame) -> pl.DataFrame:
        first = pl.col(id_column).cast(pl.Int64) == 0
        exprs = [messages("prompt", frame.schema["prompt"]).alias("prompt"),
                 _pick(first, "response_0", "response_1").alias("chosen"),
                 _pick(first, "response_1", "response_0").alias("rejected")]
        if {"is_response_0_safe", "is_response_1_safe"} <= set(frame.columns):
            exprs += [_pick(first, "is_response_0_safe", "is_response_1_safe").alias("chosen_is_safe"),
                      _pick(first, "is_response_1_safe", "is_response_0_safe").alias("rejected_is_safe")]
        return frame.with_columns(exprs).drop("response_0", "response_1")
    return convert


def _pku_checks(id_column: str) -> Callable[[pl.Schema], list[Check]]:
    return lambda schema: [_one_of(id_column, [0, 1], "0 or 1")]


# Chatbot Arena conversations -----------------------------------------------------------------------
ARENA_WINNERS = ["model_a", "model_b", "tie", "tie (bothbad)"]


def _arena(frame: pl.DataFrame) -> pl.DataFrame:
    """prompt = conversation_a up to its last user turn; chosen/rejected = the winner's and the
    loser's final replies. Ties stay (tie = true, a's reply as chosen); histories that differ
    between a and b keep a's and are flagged."""
    s = frame.schema
    prompt_a, reply_a = after_last_user(messages("conversation_a", s["conversation_a"]))
    prompt_b, reply_b = after_last_user(messages("conversation_b", s["conversation_b"]))
    b_wins = pl.col("winner") == "model_b"
    return frame.with_columns(
        prompt_a.alias("prompt"),
        pl.when(b_wins).then(reply_b).otherwise(reply_a).alias("chosen"),
        pl.when(b_wins).then(reply_a).otherwise(reply_b).alias("rejected"),
        _pick(b_wins, "model_b", "model_a").alias("chosen_model"),
        _pick(b_wins, "model_a", "model_b").alias("rejected_model"),
        pl.col("winner").str.starts_with("tie").alias("tie"),
        (pl.col("winner") == "tie (bothbad)").alias("both_bad"),
        pl.when(prompt_a != prompt_b).then(pl.lit(
            "earlier turns differ between conversation_a and conversation_b; the prompt is a's"
        )).alias("import_warning"),
    ).drop("conversation_a", "conversation_b")


def _arena_checks(schema: pl.Schema) -> list[Check]:
    ends = [(f"{c} does not end with an assistant reply",
             pl.col(c).list.last().struct.field("role") != "assistant")
            for c in ("conversation_a", "conversation_b")]
    return [_one_of("winner", ARENA_WINNERS, "model_a, model_b, tie or tie (bothbad)"), *ends]


# Stanford SHP --------------------------------------------------------------------------------------
def _shp(frame: pl.DataFrame) -> pl.DataFrame:
    """labels = 1: comment A is preferred; the comments' scores go with their side."""
    a_better = pl.col("labels").cast(pl.Int64) == 1
    exprs = [user("history").alias("prompt"),
             _pick(a_better, "human_ref_a", "human_ref_b").alias("chosen"),
             _pick(a_better, "human_ref_b", "human_ref_a").alias("rejected")]
    scores = {"score_a", "score_b"} <= set(frame.columns)
    if scores:
        exprs += [_pick(a_better, "score_a", "score_b").cast(pl.Float64).alias("chosen_score"),
                  _pick(a_better, "score_b", "score_a").cast(pl.Float64).alias("rejected_score")]
    out = frame.with_columns(exprs).drop("human_ref_a", "human_ref_b")
    return out.drop("score_a", "score_b") if scores else out


# Nectar ------------------------------------------------------------------------------------------
def _nectar(frame: pl.DataFrame) -> pl.DataFrame:
    """An hh-style transcript prompt ending in an empty 'Assistant:' turn (dropped); answers
    ranked 1 (best) to n become responses with `ranks` and `scores` = n + 1 - rank."""
    msgs = hh_transcript(pl.col("prompt"))
    last = msgs.list.last()
    open_turn = (last.struct.field("role") == "assistant") & (
        last.struct.field("content").str.strip_chars() == "")
    answers = pl.col("answers")
    ranks = answers.list.eval(pl.element().struct.field("rank")).cast(pl.List(pl.Int64))
    return frame.with_columns(
        pl.when(open_turn).then(msgs.list.head(msgs.list.len() - 1)).otherwise(msgs).alias("prompt"),
        answers.list.eval(pl.element().struct.field("answer")).cast(pl.List(pl.String)).alias("responses"),
        answers.list.eval(pl.element().struct.field("model")).cast(pl.List(pl.String)).alias("models"),
        ranks.alias("ranks"),
        ((answers.list.len() + 1).cast(pl.Float64) - ranks.cast(pl.List(pl.Float64))).alias("scores"),
    ).drop("answers")


def _nectar_checks(schema: pl.Schema) -> list[Check]:
    ranks = pl.col("answers").list.eval(pl.element().struct.field("rank"))
    return [("an answer has no rank", ranks.list.eval(pl.element().is_null()).list.any())]


LAYOUTS: tuple[Layout, ...] = (
    Layout("chatbot-arena", "preference",
           ("conversation_a", "conversation_b", "winner", "model_a", "model_b"), _arena,
           matches=lambda s: is_messages(s["conversation_a"]) and is_messages(s["conversation_b"]),
           checks=_arena_checks, aliases=("arena",)),
    Layout("pku-saferlhf", "preference", ("prompt", "response_0", "response_1", "better_response_id"),
           _pku("better_response_id"), checks=_pku_checks("better_response_id"),
           optional=("is_response_0_safe", "is_response_1_safe")),
    Layout("pku-saferlhf-safer", "preference",
           ("prompt", "response_0", "response_1", "safer_response_id"), _pku("safer_response_id"),
           checks=_pku_checks("safer_response_id"), detect=False,
           optional=("is_response_0_safe", "is_response_1_safe")),
    Layout("helpsteer2-preference", "preference",
           ("prompt", "response_1", "response_2", "preference_strength"), _helpsteer2_preference,
           checks=lambda s: [_one_of("preference_strength", [-3, -2, -1, 0, 1, 2, 3], "-3 to 3")]),
    Layout("shp", "preference", ("history", "human_ref_a", "human_ref_b", "labels"), _shp,
           optional=("score_a", "score_b"), checks=lambda s: [_one_of("labels", [0, 1], "0 or 1")],
           matches=lambda s: s["history"] == pl.String),
    Layout("nectar", "candidates", ("prompt", "answers"), _nectar, checks=_nectar_checks,
           matches=lambda s: s["prompt"] == pl.String
           and {"answer", "rank"} <= struct_fields(s["answers"])),
    Layout("ultrafeedback", "candidates", ("instruction", "completions"), _ultrafeedback,
           matches=lambda s: "response" in struct_fields(s["completions"])),
)
# after the generic candidates layout: its columns are prompt/response plus ratings
HELPSTEER2 = Layout("helpsteer2", "sft", ("prompt", "response", *HELPSTEER_ATTRIBUTES), _helpsteer2,
                    matches=lambda s: s["prompt"] == pl.String)
