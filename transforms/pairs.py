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
- `verified`: chosen = a response that passed `verify`, rejected = one of the same prompt that
  failed (columns `passed`, list per candidate); never two passing or two failing. `prefer`
  orders each side (shortest passing and longest failing first, or candidate order), and a
  prompt gives up to `pairs_per_prompt` pairs, best-ranked sides first. Lengths and sameness
  are the answers' unless `include_reasoning` adds each response's trace.

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
    method: Literal["best_worst", "all_pairs", "sft_vs_generated", "verified"] = Field(
        "best_worst")
    anchor: Literal["best", "any"] = Field("best", description="all_pairs: best vs each worse "
                                           "response (Curry-DPO), or every ordered pair")
    min_margin: float = Field(0.0, ge=0, description="smallest score gap kept (ties never pair)")
    generated: str = Field("generated", description="sft_vs_generated: the model's answer column")
    pairs_per_prompt: int = Field(1, ge=1, description="verified: most pairs made per prompt")
    prefer: Literal["shortest_passing_longest_failing", "first"] = Field(
        "shortest_passing_longest_failing",
        description="verified: which passing and failing responses pair first (shortest "
                    "passing with longest failing, or candidate order)")
    include_reasoning: bool = Field(
        False, description="verified: measure each response with its reasoning trace (the "
        "`reasoning` list) for `prefer`, and tell responses apart by trace too; by default "
        "only the answers count")

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
    if config.method == "verified":
        if "responses" not in schema or "passed" not in schema:
            raise ValueError("pairs: {method: verified} needs candidates rows with `responses` "
                             "and `passed` (run verify first)")
        return _verified(frame, config)
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


def _verified(frame: pl.LazyFrame, config: PairsConfig) -> pl.LazyFrame:
    """Cross passing with failing responses of each row; keep the `pairs_per_prompt` pairs
    whose sides rank best (sum of the two ranks, then the passing side's rank)."""
    base = frame.with_columns(pl.int_range(pl.len()).alias("_row"))
    schema = base.collect_schema()
    details = "verify_detail" in schema
    traced = config.include_reasoning and "reasoning" in schema
    slots = base.select(
        "_row", pl.col("responses").alias("_text"), pl.col("passed").alias("_passed"),
        *([pl.col("verify_detail").alias("_detail")] if details else []),
        *([pl.col("reasoning").alias("_trace")] if traced else []),
        pl.int_ranges(pl.col("responses").list.len()).alias("_slot"),
    ).explode("_text", "_passed", "_slot", *(["_detail"] if details else []),
              *(["_trace"] if traced else []))
    # what is measured and told apart: the answer, or (include_reasoning) trace and answer
    whole = (pl.concat_str(pl.col("_trace").fill_null(""), pl.lit("\n"), pl.col("_text"))
             if traced else pl.col("_text"))
    slots = (slots.drop_nulls(["_text", "_passed"]).with_columns(whole.alias("_whole"))
             .unique(["_row", "_whole"], keep="first", maintain_order=True)
             .with_columns(pl.col("_whole").str.len_chars().alias("_len")))
    shortest = config.prefer == "shortest_passing_longest_failing"
    passing = _ranked(slots.filter(pl.col("_passed")), ["_len", "_slot"] if shortest else ["_slot"],
                      [False, False] if shortest else [False])
    failing = _ranked(slots.filter(~pl.col("_passed")), ["_len", "_slot"] if shortest else ["_slot"],
                      [True, False] if shortest else [False])
    crossed = passing.join(failing, on="_row", suffix="_r").filter(
        pl.col("_whole") != pl.col("_whole_r"))
    picked = (crossed.sort("_row", pl.col("_rank") + pl.col("_rank_r"), "_rank", "_rank_r")
              .with_columns(pl.int_range(1, pl.len() + 1).over("_row").alias("pair_number"))
              .filter(pl.col("pair_number") <= config.pairs_per_prompt))
    pair_cols = picked.select(
        "_row", "pair_number", pl.col("_text").alias("chosen"), pl.col("_text_r").alias("rejected"),
        pl.col("_slot").alias("chosen_index"), pl.col("_slot_r").alias("rejected_index"),
        pl.lit(True).alias("chosen_passed"), pl.lit(False).alias("rejected_passed"),
        *([pl.col("_detail").alias("chosen_verify_detail"),
           pl.col("_detail_r").alias("rejected_verify_detail")] if details else []),
        pl.lit("verified").alias("pair_method"))
    if "pass_rate" not in schema:
        base = base.with_columns(pl.col("passed").list.eval(pl.element().cast(pl.Float64))
                                 .list.mean().alias("pass_rate"))
    rest = base.drop(*(c for c in ("chosen", "rejected", DROP) if c in schema))
    kept = pair_cols.join(rest, on="_row", how="inner").with_columns(
        pl.lit(None, pl.String).alias(DROP))
    kept = kept.with_columns(_sides_traces(kept))
    counts = slots.group_by("_row").agg(pl.col("_passed").sum().alias("_n_pass"),
                                        (~pl.col("_passed")).sum().alias("_n_fail"))
    reason = (pl.when(pl.col("_n_pass").fill_null(0) + pl.col("_n_fail").fill_null(0) == 0)
              .then(pl.lit("no verified responses"))
              .when(pl.col("_n_pass").fill_null(0) == 0).then(pl.lit("no response passed"))
              .when(pl.col("_n_fail").fill_null(0) == 0).then(pl.lit("no response failed"))
              .otherwise(pl.lit("chosen equals rejected")))
    unpaired = (rest.join(picked.select("_row").unique(), on="_row", how="anti")
                .join(counts, on="_row", how="left")
                .with_columns(pl.lit(None, pl.String).alias("chosen"),
                              pl.lit(None, pl.String).alias("rejected"), reason.alias(DROP))
                .drop("_n_pass", "_n_fail"))
    return (pl.concat([kept, unpaired], how="diagonal_relaxed")
            .sort("_row", "pair_number", nulls_last=True).drop("_row"))


def _ranked(side: pl.LazyFrame, by: list[str], descending: list[bool]) -> pl.LazyFrame:
    """`side`'s responses numbered 0, 1, ... within their row in the preferred order."""
    return side.sort("_row", *by, descending=[False, *descending]).with_columns(
        pl.int_range(pl.len()).over("_row").alias("_rank"))
