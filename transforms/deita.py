"""deita (docs/methods.md §3): complexity and quality scores, then the score-first Repr Filter.

`deita_score` asks a causal LM for the next token after deita's scorer prompts and takes the
expected value over "1".."6" (one forward pass per prompt, `next_token_distribution`, never
`generate().scores`, whose processed logits depend on the generation config). The digits are
read at their token ids after the prompt (workbench.models.candidates: with Mistral's v1
tokenizer, deita's 28740, 28750, 28770, 28781, 28782, 28784). A digit a server leaves out of
its top-k gives deita's 3.0, counted in the run log; past `failures: max_fallback_rate` the
step stops. The
`hkust-nlp/deita-*-scorer` models are what the prompts were trained for; any causal LM runs
them (the embedded model by default). Multi-turn rows are scored per user turn, each turn on
its own with no history, as deita's ShareGPT loader does.

`deita_select` sorts by score (descending, stable: ties keep input order; deita's pandas sort
is unstable) and keeps a row unless its cosine similarity with a kept row is > threshold,
stopping at the budget (`workbench.algorithms.diversity`).
"""

from __future__ import annotations

import string
from typing import Literal

import numpy as np
import polars as pl
from pydantic import Field

from transforms.embed import encoder_column
from workbench.algorithms.diversity import (
    NOT_REACHED,
    SELECTED,
    SIMILAR,
    embedding_matrix,
    greedy_select,
)
from workbench.algorithms.scores import DIGITS_1_6, expected_score, falls_back
from workbench.transform import (
    DROP,
    QUARANTINED,
    Context,
    ModelName,
    ModelStep,
    StepConfig,
    transform,
)

# deita's Llama_Scorer templates, character for character (two spaces after the query, a
# leading space before " #Question#", a space before "\n##Quality", a trailing space).
COMPLEXITY_TEMPLATE = ("You are a helpful assistant. Please identify the complexity score of "
                       "the following user query. \n##Query: {instruction}  \n##Complexity: ")
QUALITY_TEMPLATE = ("You are a helpful assistant. Please identify the quality score of the "
                    "Response corresponding to the Question. \n #Question#:\n{instruction}\n"
                    "#Response#:\n{output} \n##Quality: ")


class DeitaScoreConfig(ModelStep):
    model: ModelName = Field("default", description="a causal LM under `models:` (a deita scorer "
                       "where it loads, else any, e.g. the embedded model)")
    scores: list[Literal["complexity", "quality"]] = Field(
        ["complexity", "quality"], min_length=1,
        description="which scores; deita_score multiplies them per turn and sums over turns")
    response: str = Field("response", description="column of the answer to the last user "
                          "turn; rows without one score that turn with an empty response")
    batch_size: int = Field(16, ge=1, description="prompts per model call")


@transform("deita_score", scope="row", needs=("next_token_distribution",),
           keeps_content=True)
def deita_score(frame: pl.LazyFrame, config: DeitaScoreConfig, ctx: Context) -> pl.LazyFrame:
    """Adds per-turn lists `complexity_scores`, `quality_scores`, the last turn's
    `complexity_score`, `quality_score`, and `deita_score` = Σ_t c_t · q_t."""
    data = frame.collect()
    turns = _turns(data, config.response)
    ids = data["id"].to_list()
    row_ids = [ids[r] for r in turns["_row"].to_list()]
    values: dict[str, list[float | None]] = {}
    for name in config.scores:
        template = COMPLEXITY_TEMPLATE if name == "complexity" else QUALITY_TEMPLATE
        prompts = turns.select(_fill(template)).to_series().to_list()
        results = ctx.call(config.model, "next_token_distribution",
                           prompts, {"candidates": list(DIGITS_1_6)},
                           row_ids=row_ids, batch_size=config.batch_size)
        values[name] = [None if r is None else expected_score(r) for r in results]
        answered = [r for r in results if r is not None]
        ctx.count_fallbacks(f"deita_score {name}: a digit outside the model's top-k, scored "
                            "3.0 (deita's fallback)",
                            sum(falls_back(r) for r in answered), len(answered))
    scored = turns.select("_row", *[pl.Series(f"{k}_scores", v, pl.Float64)
                                    for k, v in values.items()])
    product = pl.lit(1.0)
    for name in config.scores:
        product = product * pl.col(f"{name}_scores")
    per_row = (
        scored.with_columns(product.alias("_product"))
        .group_by("_row", maintain_order=True)
        .agg(*[pl.col(f"{k}_scores") for k in config.scores],
             *[pl.col(f"{k}_scores").last().alias(f"{k}_score") for k in config.scores],
             pl.col("_product").sum().alias("deita_score"),
             pl.col("_product").is_null().any().alias("_failed"))
    )
    out = (data.with_row_index("_row").with_columns(pl.col("_row").cast(pl.Int64))
           .join(per_row, on="_row", how="left").drop("_row"))
    reason = pl.when(pl.col("_failed")).then(pl.lit(f"{QUARANTINED} (quarantined)"))
    if DROP in out.columns:
        reason = pl.coalesce(pl.col(DROP), reason)
    out = out.with_columns(reason.alias(DROP),
                           pl.when(~pl.col("_failed")).then(pl.col("deita_score")))
    return out.drop("_failed").lazy()


def _fill(template: str) -> pl.Expr:
    """`template.format(instruction=..., output=...)` over columns, as one polars expression."""
    parts: list[pl.Expr] = []
    for literal, field, _, _ in string.Formatter().parse(template):
        if literal:
            parts.append(pl.lit(literal))
        if field:
            parts.append(pl.col(field))
    return pl.concat_str(parts)


def _turns(data: pl.DataFrame, response: str) -> pl.DataFrame:
    """One row per user turn: (instruction, output), the output being the assistant message
    that follows it, the `response` column for the last turn, or "" (deita's rule)."""
    final = (pl.col(response).cast(pl.String) if response in data.columns
             else pl.lit(None, pl.String))
    messages = (
        data.select(pl.int_range(pl.len(), dtype=pl.Int64).alias("_row"), "prompt",
                    final.alias("_final"))
        .explode("prompt")
        .select("_row", "_final", pl.col("prompt").struct.field("role"),
                pl.col("prompt").struct.field("content"))
        .filter(pl.col("role").is_in(["user", "assistant"]))
    )
    after = pl.col("role").shift(-1).over("_row")
    is_last = pl.int_range(pl.len()).over("_row") == pl.len().over("_row") - 1
    output = (pl.when(after == "assistant").then(pl.col("content").shift(-1).over("_row"))
              .when(is_last).then(pl.col("_final")))
    return (messages.with_columns(output.fill_null("").alias("output"))
            .filter(pl.col("role") == "user")
            .select("_row", pl.col("content").fill_null("").alias("instruction"), "output"))


class DeitaSelectConfig(StepConfig):
    score: str = Field("deita_score", description="numeric column, higher first")
    embedding: str = Field("embedding", description="vector column (from `embed`)")
    threshold: float = Field(0.9, ge=-1, le=1,
                             description="reject a row iff its cosine with a kept row is > this")
    budget: int = Field(-1, ge=-1, description="rows to keep; -1 for no cap")
    batch_size: int = Field(1, ge=1, description="deita's batch rule: a row is also rejected "
                            "when > threshold with an earlier row of its batch, kept or not")


def _representation(data: pl.DataFrame, embedding: str) -> str:
    """How the vectors were made, as the `embed` step recorded it: τ means something else
    for a sentence encoder than for deita's CLM states (docs/methods.md §3.3)."""
    column = encoder_column(embedding)
    if column not in data.columns:
        return f"unknown ({embedding!r} was not made by an embed step)"
    made = data[column].drop_nulls().unique(maintain_order=True).to_list()
    return " + ".join(made) if made else "unknown"


@transform("deita_select", scope="global", keeps_content=True)
def deita_select(frame: pl.LazyFrame, config: DeitaSelectConfig, ctx: Context) -> pl.LazyFrame:
    """The selected rows in selection order; every other row is dropped with its reason, the
    row that excluded it (`duplicate_of`) and their cosine (`similarity`)."""
    data = frame.collect()
    for column in (config.score, config.embedding):
        if column not in data.columns:
            raise ValueError(f"no column {column!r} (columns: {', '.join(data.columns)})")
    if not data.schema[config.score].is_numeric():
        raise ValueError(f"column {config.score!r} holds {data.schema[config.score]}, "
                         "not numbers (deita_score sums the per-turn products)")
    order = (data.select(pl.int_range(pl.len()).alias("i"), pl.col(config.score).alias("s"))
             .sort("s", descending=True, nulls_last=True, maintain_order=True)["i"].to_numpy())
    vectors = embedding_matrix(data[config.embedding], config.embedding)[order]
    chosen = greedy_select(vectors, config.threshold, config.budget, config.batch_size)
    similar = f"deita_select: cosine > {config.threshold:g} with a selected row"
    over = f"deita_select: beyond the budget of {config.budget} rows"
    twin = np.where(chosen.twin >= 0, order[np.maximum(chosen.twin, 0)], -1)
    positions = np.concatenate([chosen.order, np.flatnonzero(chosen.status != SELECTED)])
    ctx.report({
        "selected": len(chosen.order), "similar": int((chosen.status == SIMILAR).sum()),
        "beyond_budget": int((chosen.status == NOT_REACHED).sum()),
        "threshold": config.threshold, "budget": config.budget,
        "representation": _representation(data, config.embedding),
    })
    status, twin = pl.Series(chosen.status[positions]), twin[positions]
    twin_id = data["id"].gather(np.maximum(twin, 0))
    return data[order[positions]].with_columns(  # selected first, in selection order
        pl.when(pl.Series(twin >= 0)).then(twin_id).alias("duplicate_of"),
        pl.Series("similarity", chosen.similarity[positions], pl.Float64).fill_nan(None),
        pl.when(status == SIMILAR).then(pl.lit(similar))
        .when(status == NOT_REACHED).then(pl.lit(over)).alias(DROP),
    ).lazy()
