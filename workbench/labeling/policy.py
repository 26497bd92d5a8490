"""Label policies: how the labels people gave a pair settle it (majority, latest, one
annotator; a lead's resolution wins), and a labelled dataset with those decisions applied
(swapped where people preferred the rejected side, undecided rows left out)."""

from __future__ import annotations

from typing import Any

import polars as pl

from workbench.errors import WorkbenchError
from workbench.io.export_columns import cleared_on_swap

LABEL_POLICIES = ("majority", "latest", "annotator:NAME")


def _side(choice: pl.Expr, a_is_chosen: pl.Expr) -> pl.Expr:
    """A label as a decision about the dataset's pair: chosen, rejected, tie or both_bad."""
    return (pl.when(choice.is_in(["a", "b"]))
            .then(pl.when((choice == "a") == a_is_chosen).then(pl.lit("chosen"))
                  .otherwise(pl.lit("rejected")))
            .otherwise(choice))


LEAD_PREFIX = "lead:"  # an adjudicator's resolution is a label by annotator "lead:NAME"


def label_decisions(labels: pl.DataFrame, policy: str = "majority") -> pl.DataFrame:
    """One row per labelled row_id with its `decision` (chosen, rejected, tie, both_bad), null
    when annotators reach no strict majority.

    `labels` holds the latest label per (row, annotator), as `Workspace.latest_labels` gives.
    majority: each annotator's latest label is one vote; a decision needs more than half the
    votes. latest: the latest label across annotators wins. annotator:NAME: only NAME's labels.
    Under majority and latest, a lead's resolution (annotator `lead:NAME`, made in the app's
    adjudication view) settles its row: the latest resolution decides, whatever the votes.
    """
    votes = labels.select("row_id", "annotator", "created_at", "label_id",
                          _side(pl.col("choice"), pl.col("a_is_chosen")).alias("decision"))
    if policy.startswith("annotator:"):
        from workbench.labeling.annotators import normalise

        name = normalise(policy.removeprefix("annotator:"))
        known = sorted(votes["annotator"].unique().to_list())
        if name not in known:
            raise WorkbenchError(f"--label-policy {policy}: no labels by {name!r} "
                                 f"(annotators: {', '.join(known) or 'none'})")
        return votes.filter(pl.col("annotator") == name).select("row_id", "decision")
    if policy not in ("majority", "latest"):
        raise WorkbenchError(f"unknown label policy {policy!r} "
                             f"(policies: {', '.join(LABEL_POLICIES)})")
    lead = pl.col("annotator").str.starts_with(LEAD_PREFIX)
    resolved = (votes.filter(lead).sort("created_at", "label_id").group_by("row_id").last()
                .select("row_id", "decision"))
    votes = votes.filter(~lead).join(resolved.select("row_id"), on="row_id", how="anti")
    if policy == "latest":
        decided = votes.sort("created_at", "label_id").group_by("row_id").last().select(
            "row_id", "decision")
    else:
        counts = votes.group_by("row_id", "decision").len()
        winners = counts.filter(pl.col("len") * 2 > pl.col("len").sum().over("row_id"))
        decided = votes.select("row_id").unique().join(
            winners.select("row_id", "decision"), on="row_id", how="left")
    return pl.concat([decided, resolved])


def apply_labels(frame: pl.DataFrame, labels: pl.DataFrame, policy: str = "majority",
                 keep_undecided: bool = False) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Human labels decide each labelled pair: a preference for the rejected side swaps it
    (with its chosen_*/rejected_* columns); tie, both_bad or no majority excludes the row.
    Unlabelled rows stay as they are. A swap clears the pair's side-bound method columns (a
    rationale for the other side, CHES) and flips its margin.

    keep_undecided keeps the tie and both_bad rows instead, flagged in boolean `tie` and
    `both_bad` columns (the export then leaves ties out unless --keep-ties)."""
    decisions = label_decisions(labels, policy).with_columns(pl.lit(True).alias("_labelled"))
    joined = frame.join(decisions.rename({"row_id": "id"}), on="id", how="left")
    labelled = pl.col("_labelled").fill_null(False)
    excluded_tie = pl.col("decision").is_in(["tie", "both_bad"]).fill_null(False)
    no_majority = labelled & pl.col("decision").is_null()
    swap = (pl.col("decision") == "rejected").fill_null(False)
    keep = ~no_majority if keep_undecided else ~excluded_tie & ~no_majority
    out = joined.filter(keep).with_columns(*_swapped(frame.columns, swap),
                                           *cleared_on_swap(frame.columns, swap))
    if "tie" in frame.columns:  # a person who picked a side has resolved a source tie
        out = out.with_columns((pl.col("tie") & ~pl.col("decision").is_in(["chosen", "rejected"])
                                .fill_null(False)).alias("tie"))
    if keep_undecided:
        for flag in ("tie", "both_bad"):
            mark = (pl.col("decision") == flag).fill_null(False)
            if flag in out.columns:
                mark = pl.col(flag).fill_null(False) | mark
            out = out.with_columns(mark.alias(flag))
    counted = joined.select(labelled.sum().alias("labelled"), swap.sum().alias("swapped"),
                            excluded_tie.sum().alias("excluded_tie_or_both_bad"),
                            no_majority.sum().alias("excluded_no_majority")).row(0, named=True)
    if keep_undecided:
        counted["kept_tie_or_both_bad"] = counted.pop("excluded_tie_or_both_bad")
    if policy != "majority":
        counted.pop("excluded_no_majority")
    return out.drop("decision", "_labelled"), {"policy": policy, **counted}


def _swapped(columns: list[str], swap: pl.Expr) -> list[pl.Expr]:
    """chosen <-> rejected, and every chosen_X <-> rejected_X pair (scores, models, flags)."""
    pairs = [(c, "rejected" + c.removeprefix("chosen")) for c in columns
             if c.startswith("chosen") and "rejected" + c.removeprefix("chosen") in columns]
    return [expr for a, b in pairs for expr in (
        pl.when(swap).then(pl.col(b)).otherwise(pl.col(a)).alias(a),
        pl.when(swap).then(pl.col(a)).otherwise(pl.col(b)).alias(b))]
