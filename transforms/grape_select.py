"""`grape_select`: for each instruction, the candidate the base model finds most natural
(GRAPE, docs/methods.md §7.3).

s(x, y) = (1/|y|) Σ log p(y_t | x, y_<t) under the model you will fine-tune, prompt and
response tokenised together with the chat template you will train with; the highest s wins,
the first one on ties. Equivalently, the lowest per-token perplexity.
"""

from __future__ import annotations

import polars as pl
from pydantic import Field

from workbench.transform import (
    DROP,
    QUARANTINED,
    Context,
    ModelName,
    ModelStep,
    transform,
)


class GrapeConfig(ModelStep):
    model: ModelName = Field("default", description="the base model you will fine-tune")


@transform("grape_select", scope="row", consumes="candidates", produces="sft",
           needs=("logprobs",))
def grape_select(frame: pl.LazyFrame, config: GrapeConfig, ctx: Context) -> pl.LazyFrame:
    """Keep, per prompt, the response with the highest length-normalised log-likelihood."""
    data = frame.collect()
    flat = data.select(pl.int_range(pl.len()).alias("_row"), "id", "prompt", "responses",
                       pl.int_ranges(pl.col("responses").list.len()).alias("_slot")
                       ).explode("responses", "_slot").drop_nulls("_slot")
    items = list(zip(flat["prompt"].to_list(), flat["responses"].to_list(), strict=True))
    keys = [f"{i}:{s}:grape" for i, s in zip(flat["id"], flat["_slot"], strict=True)]
    results = ctx.call(config.model, "logprobs", items, row_ids=keys,
                       batch_size=config.batch_size)
    per_token = [None if r is None or not r.logprobs else r.total / len(r.logprobs)
                 for r in results]
    scored = flat.select("_row", "_slot").with_columns(pl.Series("_s", per_token, pl.Float64))
    grouped = scored.group_by("_row", maintain_order=True).agg(pl.col("_s").alias("grape_scores"))
    per_row = pl.DataFrame({"_row": range(data.height)}, schema={"_row": pl.UInt32}).join(
        grouped.with_columns(pl.col("_row").cast(pl.UInt32)), on="_row", how="left")
    best = pl.col("grape_scores").list.arg_max()
    out = data.with_columns(per_row["grape_scores"]).with_columns(
        pl.col("responses").list.get(best, null_on_oob=True).alias("response"),
        pl.col("grape_scores").list.max().alias("grape_score"),
        best.alias("grape_index"))
    failed = any(r is None for r in results)
    reason = (pl.when(pl.col("grape_score").is_null())
              .then(pl.lit(f"{QUARANTINED} (quarantined)" if failed else "no scorable response")))
    return out.with_columns(reason.alias(DROP)).lazy()
