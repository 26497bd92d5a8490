"""`judge`: a score for every response, by one of five methods, and pairwise preference
judging that asks in both orders.

- `expected_score`: the judge's next-token distribution over "1".."N" after a rubric, turned
  into the expected rating (deita's formula, `workbench.algorithms.scores.expected_score`).
- `llm_json`: the judge writes JSON `{"score": .., "rationale": ..}` (schema-constrained where
  the backend can); bad JSON is retried once with a fresh sample, then the score is null with
  the reason counted.
- `reward_model`: a sequence-classification reward model (`backend: reward`, any local path).
- `density_ratio`: log π_strong(y|x) − log π_weak(y|x) (CDR, docs/methods.md §7.1), from two models
  or from one model under two system prompts.
- `llm_pairwise` (preference rows): which of two responses is better, asked with chosen as A
  and again with chosen as B; a verdict that follows the position is a recorded flip.

Scores land where the kind keeps them: `scores` (candidates, one per response), `score`
(sft), `chosen_score` / `rejected_score` (preference). Out-of-range or missing scores are
null, never invented, and counted by reason in the run log.

Every method judges the answer alone; `include_reasoning: true` shows the judge a reply's
reasoning trace (its `reasoning` column) in <think> tags before the answer.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Literal

import polars as pl
from pydantic import Field, model_validator

from workbench.algorithms.reasoning import join as join_trace
from workbench.algorithms.reasoning import trace_column
from workbench.transform import Context, ModelName, ModelStep, transform

RUBRIC = (
    "Please act as an impartial judge and rate the quality of the assistant's response to the "
    "user below. Consider helpfulness, relevance, accuracy, depth and clarity.\n\n"
    "[Conversation]\n{conversation}\n\n[Assistant's response]\n{response}\n\n"
    "Rate the response on a scale of 1 to {scale}, where 1 is very poor and {scale} is "
    "excellent. Answer with the number only."
)
JSON_RUBRIC = (
    "Please act as an impartial judge and evaluate the assistant's response to the user "
    "below for helpfulness, relevance, accuracy, depth and clarity.\n\n"
    "[Conversation]\n{conversation}\n\n[Assistant's response]\n{response}\n\n"
    'Reply with JSON only, in the form {{"rationale": "<one or two sentences>", "score": '
    "<an integer from 1 to {scale}>}}."
)
PAIRWISE = (
    "Please act as an impartial judge and decide which of two assistant responses answers "
    "the user better.\n\n[Conversation]\n{conversation}\n\n[Response A]\n{a}\n\n"
    "[Response B]\n{b}\n\nWhich response is better? Answer with the letter A or B only."
)


class JudgeConfig(ModelStep):
    method: Literal["expected_score", "llm_json", "reward_model", "density_ratio",
                    "llm_pairwise"] = Field("expected_score")
    model: ModelName = Field("default", description="the judge (or the strong model for density_ratio)")
    weak_model: ModelName | None = Field(None, description="density_ratio: the weak model")
    strong_system: str | None = Field(None, description="density_ratio with one model: system "
                                      "prompt of the 'strong' side")
    weak_system: str | None = Field(None, description="density_ratio with one model: system "
                                    "prompt of the 'weak' side")
    average: bool = Field(False, description="density_ratio: per response token (avg_drsow)")
    rendering: Literal["strong_template", "own_template"] = Field(
        "strong_template", description="density_ratio: strong_template renders each "
        "conversation once with the strong model's chat template and both models score that "
        "same string (as the reference); own_template lets each model render its own")
    skip_newline_tokens: bool = Field(True, description="density_ratio: leave tokens that are "
                                      "exactly a newline (or empty) out of the sums and the "
                                      "token count, as the reference does")
    scale: int = Field(5, ge=2, le=9, description="ratings 1..scale (single-token digits)")
    rubric: str | None = Field(None, description="prompt with {conversation}, {response}, {scale}")
    prefill: str = Field("", description="expected_score: text the judge's answer starts with")
    max_new_tokens: int = Field(192, ge=8, description="llm_json: judge output length")
    include_reasoning: bool = Field(False, description="judge a response's reasoning trace "
                                    "too, shown before its answer in <think> tags (default: "
                                    "the answer alone)")

    @model_validator(mode="after")
    def _density_sides(self) -> JudgeConfig:
        if self.method == "density_ratio" and self.weak_model is None and (
                self.strong_system is None or self.weak_system is None):
            raise ValueError("density_ratio needs weak_model, or strong_system and weak_system "
                             "for one model under two system prompts")
        return self


    def accepted_kinds(self) -> tuple[str, ...]:
        """Checked before a run: llm_pairwise judges pairs; the scores need responses."""
        if self.method == "llm_pairwise":
            return ("preference",)
        return ("sft", "candidates", "preference")

    def capabilities(self) -> tuple[str, ...]:
        """The backend capability this method calls (checked before a run)."""
        return ({"expected_score": "next_token_distribution", "llm_json": "generate",
                 "reward_model": "reward", "density_ratio": "logprobs",
                 "llm_pairwise": "next_token_distribution"}[self.method],)


@transform("judge", scope="row", consumes="any", produces="same", keeps_content=True)
def judge(frame: pl.LazyFrame, config: JudgeConfig, ctx: Context) -> pl.LazyFrame:
    """Score each response (or judge each pair in both orders) with the chosen method."""
    data = frame.collect()
    if config.method == "llm_pairwise":
        return _pairwise(data, config, ctx).lazy()
    items = _items(data, config.include_reasoning)
    scorer = {"expected_score": _expected, "llm_json": _llm_json, "reward_model": _reward,
              "density_ratio": _density}[config.method]
    present = items.filter(pl.col("response").is_not_null())
    scores, texts = scorer(present, config, ctx) if present.height else ([], [])
    judged = present.select("row", "slot").with_columns(
        pl.Series("score", scores, pl.Float64), pl.Series("judge_text", texts, pl.String))
    items = items.join(judged, on=["row", "slot"], how="left").sort("row", "slot")
    return _attach(data, items, keep_texts=any(t is not None for t in texts)).lazy()


# -- what is judged ------------------------------------------------------------------------

def _items(data: pl.DataFrame, include_reasoning: bool = False) -> pl.DataFrame:
    """One row per (dataset row, response slot) with the conversation and the response (its
    answer; with `include_reasoning`, its trace in <think> tags before it)."""
    rows = pl.int_range(pl.len()).alias("row")
    if "responses" in data.columns:
        flat = data.select(rows, "id", "prompt", pl.col("responses").alias("response"),
                           pl.int_ranges(pl.col("responses").list.len()).alias("slot"))
        flat = flat.explode("response", "slot").drop_nulls("slot")
        if include_reasoning and "reasoning" in data.columns:
            traces = data.select(rows, pl.col("reasoning").alias("trace"),
                                 pl.int_ranges(pl.col("reasoning").list.len()).alias("slot"))
            traces = traces.explode("trace", "slot").drop_nulls("slot")
            flat = flat.join(traces, on=["row", "slot"], how="left", maintain_order="left")
            flat = flat.with_columns(join_trace(pl.col("trace"), pl.col("response"))
                                     .alias("response")).drop("trace")
        return flat
    columns = (["chosen", "rejected"] if {"chosen", "rejected"} <= set(data.columns)
               else ["response"] if "response" in data.columns else [])
    if not columns:
        raise ValueError("judge needs responses, response, or chosen/rejected columns")
    parts = [data.select(rows, "id", "prompt", _judged(data, c, include_reasoning).alias("response"),
                         pl.lit(i, pl.Int64).alias("slot")) for i, c in enumerate(columns)]
    return pl.concat(parts).sort("row", "slot")


def _judged(data: pl.DataFrame, column: str, include_reasoning: bool) -> pl.Expr:
    """The text a judge sees for a reply column: the answer, or trace and answer."""
    trace = trace_column(column)
    if include_reasoning and trace in data.columns:
        return join_trace(pl.col(trace), pl.col(column))
    return pl.col(column)


def _conversation(prompt: list[dict[str, str]]) -> str:
    return "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in prompt)


def _rubric_messages(items: pl.DataFrame, template: str, scale: int,
                     prefill: str = "") -> list[list[dict[str, str]]]:
    out = []
    for prompt, response in zip(items["prompt"].to_list(), items["response"].to_list(),
                                strict=True):
        text = template.format(conversation=_conversation(prompt), response=response, scale=scale)
        messages = [{"role": "user", "content": text}]
        if prefill:
            messages.append({"role": "assistant", "content": prefill})
        out.append(messages)
    return out


def _keys(items: pl.DataFrame, tag: str) -> list[str]:
    return [f"{row_id}:{slot}:{tag}" for row_id, slot in
            zip(items["id"].to_list(), items["slot"].to_list(), strict=True)]


# -- methods -------------------------------------------------------------------------------

def _expected(items: pl.DataFrame, config: JudgeConfig,
              ctx: Context) -> tuple[list[float | None], list[str | None]]:
    from workbench.algorithms.scores import expected_score

    labels = [str(i) for i in range(1, config.scale + 1)]
    prompts = _rubric_messages(items, config.rubric or RUBRIC, config.scale, config.prefill)
    dists = ctx.call(config.model, "next_token_distribution", prompts, {"candidates": labels},
                     row_ids=_keys(items, "judge"), batch_size=config.batch_size)
    scores = [None if d is None else expected_score(d, labels, fallback=None) for d in dists]
    answered = sum(d is not None for d in dists)
    empty = sum(d is not None and s is None for d, s in zip(dists, scores, strict=True))
    ctx.count_fallbacks("judge expected_score: a rating digit outside the model's top-k "
                        "(score left empty)", empty, answered)
    return scores, [None] * len(scores)


SCORE_SCHEMA = {"type": "object", "properties": {"rationale": {"type": "string"},
                                                 "score": {"type": "integer"}},
                "required": ["rationale", "score"]}


def parse_judgement(text: str, scale: int) -> tuple[float | None, str | None, str | None]:
    """(score, rationale, problem) from a judge's JSON reply; tolerant of prose around it."""
    match = re.search(r"\{.*\}", text, flags=re.S)
    if not match:
        return None, None, "no JSON object in the judge's reply"
    try:
        data = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None, None, "unparseable JSON from the judge"
    if not isinstance(data, dict) or "score" not in data:
        return None, None, "judge JSON has no score"
    try:
        score = float(data["score"])
    except (TypeError, ValueError):
        return None, None, "judge score is not a number"
    if not 1 <= score <= scale:
        return None, None, f"judge score out of range 1..{scale}"
    rationale = data.get("rationale")
    return score, rationale if isinstance(rationale, str) else None, None


def _llm_json(items: pl.DataFrame, config: JudgeConfig,
              ctx: Context) -> tuple[list[float | None], list[str | None]]:
    from workbench.models.base import SamplingParams

    prompts = _rubric_messages(items, config.rubric or JSON_RUBRIC, config.scale)
    keys = _keys(items, "json")
    params = SamplingParams(max_new_tokens=config.max_new_tokens, json_schema=SCORE_SCHEMA,
                            seed=ctx.seed)
    first = ctx.call(config.model, "generate", prompts, params, row_ids=keys,
                     batch_size=config.batch_size)
    texts = [r[0].text if r else None for r in first]
    parsed = [parse_judgement(t, config.scale) if t is not None else (None, None, None)
              for t in texts]
    retry = [i for i, (p, t) in enumerate(zip(parsed, texts, strict=True))
             if t is not None and p[2] is not None]
    if retry:  # once more, sampled, so a greedy judge does not repeat the same bad reply
        again = SamplingParams(max_new_tokens=config.max_new_tokens, temperature=0.7,
                               json_schema=SCORE_SCHEMA, seed=ctx.seed)
        second = ctx.call(config.model, "generate", [prompts[i] for i in retry], again,
                          row_ids=[keys[i] for i in retry],
                          sample_ids=[f"{keys[i]}:retry" for i in retry],
                          batch_size=config.batch_size)
        for i, result in zip(retry, second, strict=True):
            if result is not None:
                texts[i] = result[0].text
                parsed[i] = parse_judgement(result[0].text, config.scale)
    for _, _, problem in parsed:
        if problem:
            ctx.count_nulled(f"score: {problem}")
    return [p[0] for p in parsed], texts


def _reward(items: pl.DataFrame, config: JudgeConfig,
            ctx: Context) -> tuple[list[float | None], list[str | None]]:
    conversations = [[*prompt, {"role": "assistant", "content": response}] for prompt, response
                     in zip(items["prompt"].to_list(), items["response"].to_list(), strict=True)]
    scores = ctx.call(config.model, "reward", conversations, row_ids=_keys(items, "reward"),
                      batch_size=config.batch_size)
    return scores, [None] * len(scores)


def _density(items: pl.DataFrame, config: JudgeConfig,
             ctx: Context) -> tuple[list[float | None], list[str | None]]:
    prompts = items["prompt"].to_list()
    responses = items["response"].to_list()
    shared = ctx.model(config.model) if config.rendering == "strong_template" else None

    def side(model: str, system: str | None) -> list[Any]:
        conv: list[Any] = [([{"role": "system", "content": system}, *p] if system else p)
                           for p in prompts]
        if shared is not None:  # one string for both models: the strong model's rendering
            conv = [shared.render(c) for c in conv]
        return ctx.call(model, "logprobs", list(zip(conv, responses, strict=True)),
                        row_ids=_keys(items, f"density:{model}"), batch_size=config.batch_size)

    strong = side(config.model, config.strong_system)
    weak = side(config.weak_model or config.model, config.weak_system)
    scores = []
    for s, w in zip(strong, weak, strict=True):
        if s is None or w is None:
            scores.append(None)
            continue
        (s_total, s_count), (w_total, _) = (_kept_sum(x, config.skip_newline_tokens)
                                            for x in (s, w))
        value = s_total - w_total
        scores.append(value / max(s_count, 1) if config.average else value)
    return scores, [None] * len(scores)


SKIPPED_TOKENS = frozenset({"\n", ""})  # the reference's mask, besides special tokens


def _kept_sum(result: Any, skip: bool) -> tuple[float, int]:
    """Sum and count of a continuation's token log-probs, without newline/empty tokens when
    `skip` (a raw response holds no template tokens, the reference's other exclusion)."""
    if not skip:
        return result.total, len(result.logprobs)
    kept = [lp for token, lp in zip(result.tokens, result.logprobs, strict=True)
            if token not in SKIPPED_TOKENS]
    return float(sum(kept)), len(kept)


def _attach(data: pl.DataFrame, items: pl.DataFrame, keep_texts: bool) -> pl.DataFrame:
    """Scores (and judge texts) back onto the rows, aligned with each row's responses."""
    if "responses" in data.columns:
        grouped = items.group_by("row", maintain_order=True).agg("score", "judge_text")
        per_row = pl.DataFrame({"row": range(data.height)}, schema={"row": pl.Int64}).join(
            grouped.with_columns(pl.col("row").cast(pl.Int64)), on="row", how="left")
        out = data.with_columns(per_row["score"].alias("scores"))
        return out.with_columns(per_row["judge_text"].alias("judge_texts")) if keep_texts else out
    names = (["chosen", "rejected"] if {"chosen", "rejected"} <= set(data.columns)
             else ["response"])
    cols = []
    for slot, name in enumerate(names):
        part = items.filter(pl.col("slot") == slot).sort("row")
        prefix = "" if name == "response" else f"{name}_"
        cols.append(part["score"].alias(f"{prefix}score"))
        if keep_texts:
            cols.append(part["judge_text"].alias(f"{prefix}judge_text"))
    return data.with_columns(cols)


def _pairwise(data: pl.DataFrame, config: JudgeConfig, ctx: Context) -> pl.DataFrame:
    """P(A better) with chosen shown as A, then as B; verdicts, and whether position won."""
    if not {"chosen", "rejected"} <= set(data.columns):
        raise ValueError("llm_pairwise judges preference rows (chosen/rejected)")
    convs = [_conversation(p) for p in data["prompt"].to_list()]
    chosen, rejected = (data.select(_judged(data, c, config.include_reasoning).alias("t"))["t"]
                        .to_list() for c in ("chosen", "rejected"))

    def ask(first: list[str], second: list[str], tag: str) -> list[float | None]:
        prompts = [[{"role": "user", "content": PAIRWISE.format(conversation=c, a=a, b=b)}]
                   for c, a, b in zip(convs, first, second, strict=True)]
        dists = ctx.call(config.model, "next_token_distribution", prompts,
                         {"candidates": ["A", "B"]},
                         row_ids=[f"{i}:{tag}" for i in data["id"].to_list()],
                         batch_size=config.batch_size)
        answered = [d for d in dists if d is not None]
        partial = sum(not (math.isfinite(d["A"]) and math.isfinite(d["B"])) for d in answered)
        ctx.count_fallbacks("llm_pairwise: 'A' or 'B' outside the model's top-k (P(A) read "
                            "as 0 or 1, or left empty when both are)", partial, len(answered))
        return [None if d is None else _p_first(d["A"], d["B"]) for d in dists]

    ab = ask(chosen, rejected, "pairwise:chosen_first")
    ba = ask(rejected, chosen, "pairwise:rejected_first")
    frame = data.with_columns(
        pl.Series("p_chosen_as_a", ab, pl.Float64),
        pl.Series("p_chosen_as_b", [None if x is None else 1.0 - x for x in ba], pl.Float64))
    first_says = pl.col("p_chosen_as_a") > 0.5
    second_says = pl.col("p_chosen_as_b") > 0.5
    return frame.with_columns(
        pl.when(first_says & second_says).then(pl.lit("chosen"))
        .when(~first_says & ~second_says).then(pl.lit("rejected"))
        .when(first_says.is_not_null() & second_says.is_not_null()).then(pl.lit("inconsistent"))
        .alias("judge_prefers"),
        (first_says != second_says).alias("position_flip"),
        ((pl.col("p_chosen_as_a") + pl.col("p_chosen_as_b")) / 2).alias("p_chosen"),
    )


def _p_first(a: float, b: float) -> float | None:
    """P(A) from the log-probs of "A" and "B", renormalised over the two."""
    if math.isinf(a) and math.isinf(b):
        return None
    return 1.0 / (1.0 + math.exp(min(b - a, 700.0)))
