"""`pairs`: preference rows from scored candidates, or from a dataset's own answer against a
model's (SPIN).

- `best_worst` (Magpie-DPO, docs/methods.md §1.8): chosen = the highest-scored response, rejected =
  the lowest, first index on ties as Python's `list.index(max(...))` picks it.
- `all_pairs` (Curry-DPO, §7.2): with `anchor: best`, the best response against each worse
  one (R1, Rj); with `anchor: any`, every ordered pair with a higher and a lower score. Each
  pair gets `pair_rank` within its prompt, 1 = largest margin = easiest (stable ties: the
  reference order of j).
- `sft_vs_generated` (SPIN): the dataset's human response is chosen, the model's generation
  (column `generated`) rejected.

Each side's reasoning trace, where the rows have one (`reasoning`, parallel to `responses`;
for SPIN the response's trace and `<generated>_reasoning`), goes to `chosen_reasoning` /
`rejected_reasoning`. Scores, and the chosen == rejected check, concern the answers.

Ties are never paired: no row has equal scores, an all-equal row gives no pair, and no row
has chosen == rejected. Drops carry their reasons; `min_margin` keeps pairs whose score gap is
at least that.
"""

from __future__ import annotations

from typing import Literal

import polars as pl
from pydantic import Field

from workbench.transform import DROP, Context, StepConfig, transform


class PairsConfig(StepConfig):
    method: Literal["best_worst", "all_pairs", "sft_vs_generated"] = Field("best_worst")
    anchor: Literal["best", "any"] = Field("best", description="all_pairs: best vs each worse "
                                           "response (Curry-DPO), or every ordered pair")
    min_margin: float = Field(0.0, ge=0, description="smallest score gap kept (ties never pair)")
    generated: str = Field("generated", description="sft_vs_generated: the model's answer column")

    def accepted_kinds(self) -> tuple[str, ...]:
        """Checked before a run: scored candidates, or sft rows for sft_vs_generated."""
        return ("sft",) if self.method == "sft_vs_generated" else ("candidates",)


@transform("pairs", scope="row", consumes="any", produces="preference")
def pairs(frame: pl.LazyFrame, config: PairsConfig, ctx: Context) -> pl.LazyFrame:
    """Preference pairs from scored candidates (or sft rows with a generated answer)."""
    schema = frame.collect_schema()
    if config.method == "sft_vs_generated":
        if config.generated not in schema or "response" not in schema:
            raise ValueError(f"sft_vs_generated needs sft rows with a {config.generated!r} column")
        return _spin(frame, config)
    if "responses" not in schema or "scores" not in schema:
        raise ValueError("pairs needs candidates rows with `responses` and `scores` (run judge)")
    if config.method == "best_worst":
        return _best_worst(frame, config)
    return _all_pairs(frame, config)


def _best_worst(frame: pl.LazyFrame, config: PairsConfig) -> pl.LazyFrame:
    scores, responses = pl.col("scores"), pl.col("responses")
    best, worst = scores.list.arg_max(), scores.list.arg_min()
    out = frame.with_columns(
        responses.list.get(best, null_on_oob=True).alias("chosen"),
        responses.list.get(worst, null_on_oob=True).alias("rejected"),
        scores.list.max().alias("chosen_score"),
        scores.list.min().alias("rejected_score"),
        best.alias("chosen_index"),
        worst.alias("rejected_index"),
    ).with_columns((pl.col("chosen_score") - pl.col("rejected_score")).alias("margin"),
                   pl.lit("best_worst").alias("pair_method"), *_sides_traces(frame))
    return out.with_columns(_reasons(config).alias(DROP))


def _sides_traces(frame: pl.LazyFrame) -> list[pl.Expr]:
    """Each side's reasoning trace, from the candidates' `reasoning` list (after the
    `chosen_index`/`rejected_index` columns exist)."""
    if "reasoning" not in frame.collect_schema():
        return []
    return [pl.col("reasoning").list.get(pl.col(f"{side}_index"), null_on_oob=True)
            .alias(f"{side}_reasoning") for side in ("chosen", "rejected")]


def _all_pairs(frame: pl.LazyFrame, config: PairsConfig) -> pl.LazyFrame:
    """Explode candidates into (i, j) pairs with s_i > s_j; rank each prompt's pairs by margin."""
    base = frame.with_columns(pl.int_range(pl.len()).alias("_row"))
    slots = base.select("_row", pl.col("responses").alias("_text"), pl.col("scores").alias("_score"),
                        pl.int_ranges(pl.col("responses").list.len()).alias("_slot")
                        ).explode("_text", "_score", "_slot").drop_nulls("_score")
    if config.anchor == "best":  # Curry-DPO: R1 is the first best response of the row
        first_best = slots.sort("_row", "_score", "_slot", descending=[False, True, False]
                                ).group_by("_row", maintain_order=True).first()
        left = first_best
    else:
        left = slots
    pairs_ = left.join(slots, on="_row", suffix="_r").filter(pl.col("_score") > pl.col("_score_r"))
    pairs_ = pairs_.select(
        "_row", pl.col("_text").alias("chosen"), pl.col("_text_r").alias("rejected"),
        pl.col("_score").alias("chosen_score"), pl.col("_score_r").alias("rejected_score"),
        pl.col("_slot").alias("chosen_index"), pl.col("_slot_r").alias("rejected_index"),
    ).with_columns((pl.col("chosen_score") - pl.col("rejected_score")).alias("margin"))
    ordered = pairs_.sort("_row", "margin", "chosen_index", "rejected_index",
                          descending=[False, True, False, True])
    ranked = ordered.with_columns(pl.int_range(1, pl.len() + 1).over("_row").alias("pair_rank"),
                                  pl.lit(f"all_pairs:{config.anchor}").alias("pair_method"))
    rest = base.drop(*(c for c in ("chosen", "rejected", DROP) if c in base.collect_schema()))
    out = ranked.join(rest, on="_row", how="inner").sort("_row", "pair_rank")
    out = out.with_columns(_sides_traces(out))
    unpaired = (base.join(ranked.select("_row").unique(), on="_row", how="anti")
                .with_columns(pl.lit(None, pl.String).alias("chosen"),
                              pl.lit(None, pl.String).alias("rejected"),
                              pl.lit("no two responses with different scores").alias(DROP)))
    kept = out.with_columns(_reasons(config).alias(DROP))
    return pl.concat([kept, unpaired], how="diagonal_relaxed").sort("_row").drop("_row")


def _reasons(config: PairsConfig) -> pl.Expr:
    return (pl.when(pl.col("chosen_score").is_null() | pl.col("rejected_score").is_null())
            .then(pl.lit("no scored responses"))
            .when(pl.col("chosen_score") == pl.col("rejected_score"))
            .then(pl.lit("all scores equal: a tie is not a preference"))
            .when(pl.col("chosen") == pl.col("rejected"))
            .then(pl.lit("chosen equals rejected"))
            .when(pl.col("margin") < config.min_margin)
            .then(pl.lit(f"margin below {config.min_margin}")))


def _spin(frame: pl.LazyFrame, config: PairsConfig) -> pl.LazyFrame:
    generated = pl.col(config.generated)
    out = frame.with_columns(pl.col("response").alias("chosen"), generated.alias("rejected"),
                             pl.lit("sft_vs_generated").alias("pair_method"))
    schema = frame.collect_schema()
    generated_trace = f"{config.generated}_reasoning"
    if "reasoning" in schema or generated_trace in schema:
        out = out.with_columns(*(
            (pl.col(c) if c in schema else pl.lit(None, pl.String)).alias(f"{side}_reasoning")
            for side, c in (("chosen", "reasoning"), ("rejected", generated_trace))))
    reason = (pl.when(generated.is_null() | (generated.str.strip_chars() == ""))
              .then(pl.lit("no generated answer"))
              .when(pl.col("chosen").str.strip_chars() == generated.str.strip_chars())
              .then(pl.lit("chosen equals rejected")))
    return out.with_columns(reason.alias(DROP))
