"""Agreement between annotators, and between people and the AI judge.

Inputs are long frames of judgements: one row per (item, rater) with a nominal `value`
(for pairs: the decision chosen / rejected / tie / both_bad, which does not depend on the
side each person was shown). Everything is polars group-bys, no loop per item.

- Cohen's kappa for each pair of raters, over the items both judged.
- Fleiss' kappa over items with two or more raters (Fleiss 1971; items may have different
  numbers of raters: each item's agreement is averaged, category shares pooled).
- Krippendorff's alpha, nominal, which uses every pairable item and any missing pattern.
- People against the judge: the judge is one more rater whose decision comes from the
  dataset's `chosen_score`/`rejected_score` (or, for rankings of candidates, `scores`).

A kappa or alpha is NaN where it is undefined (expected agreement of 1: everyone used one
category).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from workbench.workspace import Workspace

JUDGE = "AI judge"


def _frame(values: pl.DataFrame, item: str, rater: str, value: str) -> pl.DataFrame:
    return values.select(pl.col(item).cast(pl.String).alias("item"),
                         pl.col(rater).cast(pl.String).alias("rater"),
                         pl.col(value).cast(pl.String).alias("value")).drop_nulls()


def cohen_kappa(first: Sequence[Any], second: Sequence[Any]) -> float:
    """Cohen's kappa of two raters' judgements of the same items, in order."""
    if len(first) != len(second):
        raise ValueError("cohen_kappa: both raters must judge the same items")
    frame = pl.DataFrame({"item": list(range(len(first))) * 2,
                          "rater": ["1"] * len(first) + ["2"] * len(second),
                          "value": [str(v) for v in [*first, *second]]})
    table = pairwise_kappa(frame)
    return float(table["kappa"][0]) if table.height else float("nan")


def pairwise_kappa(values: pl.DataFrame, item: str = "item", rater: str = "rater",
                   value: str = "value") -> pl.DataFrame:
    """Cohen's kappa for each pair of raters over the items both judged:
    rater_1, rater_2, items, agreement (observed share), kappa."""
    d = _frame(values, item, rater, value)
    pairs = (d.join(d, on="item", suffix="_2").filter(pl.col("rater") < pl.col("rater_2")))
    key = ["rater", "rater_2"]
    observed = pairs.group_by(key).agg(pl.len().alias("items"),
                                       (pl.col("value") == pl.col("value_2")).mean()
                                       .alias("agreement"))
    first = pairs.group_by(*key, "value").len().rename({"len": "n1"})
    second = (pairs.group_by(*key, "value_2").len()
              .rename({"len": "n2", "value_2": "value"}))
    expected = (first.join(second, on=[*key, "value"])
                .group_by(key).agg((pl.col("n1") * pl.col("n2")).sum().alias("_both")))
    return (observed.join(expected, on=key, how="left")
            .with_columns((pl.col("_both").fill_null(0) / pl.col("items") ** 2).alias("_pe"))
            .with_columns(pl.when(pl.col("_pe") < 1)
                          .then((pl.col("agreement") - pl.col("_pe")) / (1 - pl.col("_pe")))
                          .otherwise(float("nan")).alias("kappa"))
            .select(pl.col("rater").alias("rater_1"), "rater_2", "items", "agreement", "kappa")
            .sort("rater_1", "rater_2"))


def _counts(values: pl.DataFrame, item: str, rater: str, value: str) -> pl.DataFrame:
    """Per item and category, how many raters chose it; items with 2+ raters only."""
    d = _frame(values, item, rater, value)
    counts = d.group_by("item", "value").len()
    return counts.with_columns(pl.col("len").sum().over("item").alias("m")).filter(
        pl.col("m") >= 2)


def fleiss_kappa(values: pl.DataFrame, item: str = "item", rater: str = "rater",
                 value: str = "value") -> float:
    """Fleiss' kappa over the items judged by two or more raters."""
    return fleiss_kappa_counts(_counts(values, item, rater, value))


def fleiss_kappa_counts(counts: pl.DataFrame) -> float:
    """Fleiss' kappa from (item, value, len) category counts per item (`m`: raters of the
    item, added when missing)."""
    if "m" not in counts.columns:
        counts = counts.with_columns(pl.col("len").sum().over("item").alias("m"))
    if counts.height == 0:
        return float("nan")
    per_item = (counts.group_by("item")
                .agg(((pl.col("len") ** 2).sum() - pl.col("m").first())
                     / (pl.col("m").first() * (pl.col("m").first() - 1))))
    p_bar = per_item["len"].mean()
    shares = counts.group_by("value").agg(pl.col("len").sum()).with_columns(
        pl.col("len") / pl.col("len").sum())
    p_e = float((shares["len"] ** 2).sum())
    return float("nan") if p_e >= 1 else (float(p_bar) - p_e) / (1 - p_e)  # type: ignore[arg-type]


def krippendorff_alpha(values: pl.DataFrame, item: str = "item", rater: str = "rater",
                       value: str = "value") -> float:
    """Krippendorff's alpha for nominal values: 1 - (n - 1) * D_o / D_e over the coincidence
    matrix of pairable items (those with 2+ values)."""
    counts = _counts(values, item, rater, value)
    if counts.height == 0:
        return float("nan")
    observed = (counts.group_by("item")
                .agg(((pl.col("m").first() ** 2 - (pl.col("len") ** 2).sum())
                      / (pl.col("m").first() - 1)).alias("d"))["d"].sum())
    totals = counts.group_by("value").agg(pl.col("len").sum())["len"]
    n = float(totals.sum())
    expected = n * n - float((totals ** 2).sum())
    return float("nan") if expected == 0 else 1 - (n - 1) * float(observed) / expected


# the judge --------------------------------------------------------------------------------
def judge_decisions(ws: Workspace, ref: str, row_ids: Sequence[str] | None = None) -> pl.DataFrame:
    """The AI judge's decision per pair (row_id, decision) from chosen_score/rejected_score:
    chosen when it scored the chosen reply higher, rejected when lower, tie when equal.
    Empty when the dataset has no such scores. Reads only the needed columns (and rows)."""
    version = ws.resolve(ref)
    if not {"chosen_score", "rejected_score"} <= set(version.columns):
        return pl.DataFrame(schema={"row_id": pl.String, "decision": pl.String})
    frame = ws.scan(version.ref).select("id", "chosen_score", "rejected_score")
    if row_ids is not None:
        frame = frame.filter(pl.col("id").is_in(list(row_ids)))
    diff = pl.col("chosen_score").cast(pl.Float64) - pl.col("rejected_score").cast(pl.Float64)
    return frame.select(pl.col("id").alias("row_id"),
                        pl.when(diff > 0).then(pl.lit("chosen")).when(diff < 0)
                        .then(pl.lit("rejected")).when(diff == 0).then(pl.lit("tie"))
                        .alias("decision")).drop_nulls().collect()


def judge_agreement(people: pl.DataFrame, judge: pl.DataFrame, item: str = "row_id",
                    rater: str = "annotator", value: str = "decision") -> pl.DataFrame:
    """Each person against the judge on the items both judged: annotator, items, agreement,
    kappa. `judge` has the item and value columns."""
    both = pl.concat([_frame(people, item, rater, value),
                      judge.select(pl.col(item).cast(pl.String).alias("item"),
                                   pl.lit(JUDGE).alias("rater"),
                                   pl.col(value).cast(pl.String).alias("value"))])
    table = pairwise_kappa(both)
    with_judge = table.filter((pl.col("rater_1") == JUDGE) | (pl.col("rater_2") == JUDGE))
    return with_judge.select(
        pl.when(pl.col("rater_1") == JUDGE).then(pl.col("rater_2")).otherwise(pl.col("rater_1"))
        .alias("annotator"), "items", "agreement", "kappa").sort("annotator")


# rankings ---------------------------------------------------------------------------------
def ranking_pairs(rankings: pl.DataFrame, ranks: str = "ranks") -> pl.DataFrame:
    """Rankings of candidates as pairwise judgements: one row per (row, response i < j both
    ranked, rater) with value `first` (i ranked better), `second` or `tie`; item is
    "row_id:i:j". Works for the judge too, given `scores` turned into ranks."""
    long = (rankings.select("row_id", "annotator", pl.col(ranks).alias("r"))
            .with_columns(pl.int_ranges(pl.col("r").list.len()).alias("i"))
            .explode("r", "i").drop_nulls("r"))
    pairs = long.join(long, on=["row_id", "annotator"], suffix="_2").filter(
        pl.col("i") < pl.col("i_2"))
    return pairs.select(
        pl.format("{}:{}:{}", "row_id", "i", "i_2").alias("item"),
        pl.col("annotator").alias("rater"),
        pl.when(pl.col("r") < pl.col("r_2")).then(pl.lit("first"))
        .when(pl.col("r") > pl.col("r_2")).then(pl.lit("second")).otherwise(pl.lit("tie"))
        .alias("value"))


def judge_rankings(ws: Workspace, ref: str, row_ids: Sequence[str]) -> pl.DataFrame:
    """The judge's `scores` of a candidates dataset as ranks (1 is best, equal scores tie)."""
    version = ws.resolve(ref)
    if "scores" not in version.columns:
        return pl.DataFrame(schema={"row_id": pl.String, "annotator": pl.String,
                                    "ranks": pl.List(pl.Int64)})
    frame = (ws.scan(version.ref).select(pl.col("id").alias("row_id"), "scores")
             .filter(pl.col("row_id").is_in(list(row_ids))).collect())
    ranked = frame.with_columns(
        pl.col("scores").list.eval(pl.element().rank("min", descending=True).cast(pl.Int64))
        .alias("ranks"), pl.lit(JUDGE).alias("annotator"))
    return ranked.select("row_id", "annotator", "ranks")


def summary(values: pl.DataFrame, item: str = "item", rater: str = "rater",
            value: str = "value") -> dict[str, Any]:
    """Raters, items judged by 2+ raters, Fleiss' kappa and Krippendorff's alpha."""
    d = _frame(values, item, rater, value)
    shared = d.group_by("item").len().filter(pl.col("len") >= 2).height
    return {"raters": d["rater"].n_unique(), "items": d["item"].n_unique(),
            "items_with_2_or_more": shared, "fleiss_kappa": fleiss_kappa(d),
            "krippendorff_alpha": krippendorff_alpha(d)}


def report(ws: Workspace, dataset: str) -> dict[str, Any]:
    """Everything the agreement page shows for one dataset (by name; its latest version for
    the judge's scores): `judgements` (item, rater, value), `pairwise` Cohen's kappa,
    `summary` (Fleiss, Krippendorff), `judge` (people against the AI judge, maybe empty) and
    `counts` (rater, value, n). Pairs are compared as decisions; rankings as response pairs.
    Leads' resolutions (`lead:NAME`) are left out: they only meet disagreements."""
    from workbench.labeling.labels import LEAD_PREFIX, decisions, rankings_table

    version = ws.resolve(dataset)
    if version.kind == "candidates":
        ranked = rankings_table(ws, version.name)
        ranked = ranked.filter(~pl.col("annotator").str.starts_with(LEAD_PREFIX))
        judgements = ranking_pairs(ranked) if ranked.height else _frame(
            pl.DataFrame({"item": [], "rater": [], "value": []}, schema={
                "item": pl.String, "rater": pl.String, "value": pl.String}),
            "item", "rater", "value")
        ids = ranked["row_id"].unique().to_list() if ranked.height else []
        judge_pairs = ranking_pairs(judge_rankings(ws, version.ref, ids)) if ids else None
        judge = (judge_agreement(judgements, judge_pairs.select("item", pl.col("value")),
                                 item="item", rater="rater", value="value")
                 if judge_pairs is not None and judge_pairs.height else None)
    else:
        people = decisions(ws, version.name).filter(
            ~pl.col("annotator").str.starts_with(LEAD_PREFIX))
        judgements = _frame(people, "row_id", "annotator", "decision")
        ids = people["row_id"].unique().to_list()
        by_judge = judge_decisions(ws, version.ref, ids) if ids else None
        judge = (judge_agreement(people, by_judge)
                 if by_judge is not None and by_judge.height else None)
    counts = judgements.group_by("rater", "value").len().rename({"len": "n"}).sort("rater",
                                                                                   "value")
    return {"kind": version.kind, "judgements": judgements,
            "pairwise": pairwise_kappa(judgements), "summary": summary(judgements),
            "judge": judge, "counts": counts}
