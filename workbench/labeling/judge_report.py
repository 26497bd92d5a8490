"""The judge report: can a judge's verdicts be trusted against a reference (people's labels,
gold pairs, or the dataset's own `chosen` where that is known to be right)?

Definitions (docs/methods.md, "Judge report"):

- compared pairs: rows with a reference decision and a judge margin (`judge_signals`); `n`.
- the judge's verdict is the margin's sign: chosen, rejected, or `tie` at 0 (undecided). The
  reference's is chosen, rejected, tie or both_bad (a label policy with no majority: no
  reference, the row is not compared).
- `accuracy`: over pairs where both decided (chosen or rejected), the share where they agree;
  undecided pairs are left out of it but counted in `n` and in `by_margin`.
- `kappa`: Cohen's kappa of the two decisions over all n pairs (categories as above). Against
  a constant reference (`chosen`, gold that all says chosen) it is 0 by construction, or null
  when the judge is constant too: read accuracy there.
- `flip_rate`: share of compared pairs whose two orders disagreed (llm_pairwise's
  `position_flip`); null for judges that asked one order.
- `length_preference`: over pairs where both decided and the replies differ in length
  (characters), the share where the judge, and where the reference, preferred the longer one.
- `by_margin`: accuracy per bin of |margin|, bins [low, high) with the last open-ended; the
  cut points are the quantiles of |margin| (`bins=5`) or given (`bins=[0.05, 0.1]`).
- `by_subset`: the same per value of a `source`/`subset` column, with the overall bins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import polars as pl

from workbench.errors import WorkbenchError
from workbench.labeling.agreement import cohen_kappa
from workbench.labeling.judge_signals import Judge, resolve
from workbench.workspace import Workspace

AGAINST = ("labels", "gold", "chosen")
SUBSET_COLUMNS = ("source", "subset")
DECIDED = ("chosen", "rejected")


def compared_pairs(frame: pl.DataFrame, judge: Judge, reference: pl.DataFrame,
                   subset: str | None = None) -> pl.DataFrame:
    """One row per compared pair: id, margin, judge (verdict), reference (decision), flip,
    longer (which side is longer: chosen, rejected, or null when equal) and subset."""
    verdict = (pl.when(pl.col("margin") > 0).then(pl.lit("chosen"))
               .when(pl.col("margin") < 0).then(pl.lit("rejected")).otherwise(pl.lit("tie")))
    diff = pl.col("chosen").str.len_chars().cast(pl.Int64) - pl.col("rejected").str.len_chars()
    longer = (pl.when(diff > 0).then(pl.lit("chosen")).when(diff < 0).then(pl.lit("rejected"))
              .otherwise(None))
    flip = pl.col("position_flip") if judge.flips else pl.lit(None, pl.Boolean)
    side = pl.col(subset).cast(pl.String) if subset else pl.lit(None, pl.String)
    pairs = frame.select("id", judge.margin(), flip.alias("flip"), longer.alias("longer"),
                         side.alias("subset"))
    ref = reference.select(pl.col("row_id").cast(pl.String).alias("id"),
                           pl.col("decision").alias("reference")).drop_nulls()
    return (pairs.join(ref, on="id", how="inner")
            .filter(pl.col("margin").is_not_null() & pl.col("margin").is_not_nan())
            .with_columns(verdict.alias("judge")))


def cut_points(margins: pl.Series, bins: int | Sequence[float]) -> list[float]:
    """Cut points of |margin|: the k-quantiles (linear interpolation) for `bins=k`, or the
    given ones; sorted, duplicates and points at or below 0 dropped."""
    if isinstance(bins, int):
        if bins < 1:
            raise WorkbenchError(f"bins: at least 1 bin, not {bins}")
        if margins.len() == 0:
            return []
        points = [margins.quantile(i / bins, "linear") for i in range(1, bins)]
    else:
        points = list(bins)
    return sorted({float(p) for p in points if p is not None and p > 0})


def summarize(pairs: pl.DataFrame, points: list[float]) -> dict[str, Any]:
    """n, accuracy, kappa, flip_rate, length_preference and by_margin of compared pairs."""
    decided = pairs.filter(pl.col("judge").is_in(DECIDED) & pl.col("reference").is_in(DECIDED))
    lengths = decided.filter(pl.col("longer").is_not_null())
    flips = pairs["flip"].drop_nulls()
    kappa = (cohen_kappa(pairs["judge"].to_list(), pairs["reference"].to_list())
             if pairs.height else float("nan"))
    return {
        "n": pairs.height,
        "accuracy": _share(decided, pl.col("judge") == pl.col("reference")),
        "kappa": None if math.isnan(kappa) else kappa,
        "flip_rate": float(flips.mean()) if flips.len() else None,  # type: ignore[arg-type]
        "length_preference": {
            "judge": _share(lengths, pl.col("judge") == pl.col("longer")),
            "reference": _share(lengths, pl.col("reference") == pl.col("longer"))},
        "by_margin": by_margin(pairs, points),
    }


def by_margin(pairs: pl.DataFrame, points: list[float]) -> list[dict[str, Any]]:
    """Per |margin| bin [low, high): pairs, pairs both decided, accuracy among those."""
    lows, highs = [0.0, *points], [*points, None]
    size = pairs.with_columns(pl.col("margin").abs().alias("size"))
    out = []
    for low, high in zip(lows, highs, strict=True):
        inside = size.filter(pl.col("size") >= low if high is None
                             else (pl.col("size") >= low) & (pl.col("size") < high))
        decided = inside.filter(pl.col("judge").is_in(DECIDED)
                                & pl.col("reference").is_in(DECIDED))
        out.append({"low": low, "high": high, "n": inside.height, "decided": decided.height,
                    "accuracy": _share(decided, pl.col("judge") == pl.col("reference"))})
    return out


def _share(frame: pl.DataFrame, condition: pl.Expr) -> float | None:
    return float(frame.select(condition.mean()).item()) if frame.height else None


def report(frame: pl.DataFrame, reference: pl.DataFrame, judge: str | None = None,
           bins: int | Sequence[float] = 5, subset: str | None = None,
           where: str = "dataset") -> dict[str, Any]:
    """The judge report of a preference frame against `reference` (row_id, decision): the
    keys n, accuracy, kappa, flip_rate, length_preference, by_margin, by_subset. `subset`
    None picks `source` or `subset` when the frame has one ("" for none)."""
    found = resolve(judge, frame.schema, where)
    if subset is None:
        subset = next((c for c in SUBSET_COLUMNS if c in frame.columns), None)
    elif subset and subset not in frame.columns:
        raise WorkbenchError(f"{where}: no subset column {subset!r}")
    pairs = compared_pairs(frame, found, reference, subset or None)
    points = cut_points(pairs["margin"].abs(), bins)
    out = summarize(pairs, points)
    out["by_subset"] = None
    if subset:
        out["by_subset"] = {
            ("null" if key is None else str(key)): summarize(part, points)
            for (key,), part in sorted(pairs.partition_by("subset", as_dict=True).items(),
                                       key=lambda kv: str(kv[0][0]))}
    return out


def reference_decisions(ws: Workspace, ref: str, against: str,
                        label_policy: str = "majority") -> pl.DataFrame:
    """row_id, decision of the reference: people's labels under a label policy (rows without
    a majority left out), the gold pairs, or `chosen` for every row."""
    from workbench.labeling.labels import gold_table
    from workbench.labeling.policy import label_decisions

    version = ws.resolve(ref)
    if against == "chosen":
        return ws.scan(version.ref).select(pl.col("id").alias("row_id"),
                                           pl.lit("chosen").alias("decision")).collect()
    if against == "gold":
        gold = gold_table(ws, version.name)
        if gold.height == 0:
            raise WorkbenchError(f"{version.name} has no gold pairs (the Queues page or "
                                 "workbench.labeling.labels.gold_from_dataset makes them)")
        return gold.select("row_id", "decision")
    if against == "labels":
        latest = ws.latest_labels(version.name)
        if latest.height == 0:
            raise WorkbenchError(f"{version.name} has no labels yet (the Label page makes them)")
        return label_decisions(latest, label_policy).drop_nulls("decision")
    raise WorkbenchError(f"--against must be one of {', '.join(AGAINST)}, not {against!r}")


def workspace_report(ws: Workspace, ref: str, against: str, label_policy: str = "majority",
                     judge: str | None = None, bins: int | Sequence[float] = 5,
                     subset: str | None = None) -> dict[str, Any]:
    """`report` for a dataset version (NAME or NAME@N) of a workspace."""
    version = ws.resolve(ref)
    if version.kind != "preference":
        raise WorkbenchError(f"the judge report reads preference pairs; {version.ref} is "
                             f"{version.kind}")
    reference = reference_decisions(ws, version.ref, against, label_policy)
    return report(ws.read(version.ref), reference, judge, bins, subset, where=version.ref)


def parse_bins(text: str) -> int | list[float]:
    """`--bins 5` (5 quantile bins) or `--bins 0.05,0.1,0.2` (cut points of |margin|)."""
    text = text.strip()
    try:
        if "," not in text and "." not in text:
            return int(text)
        return [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise WorkbenchError(f"--bins {text!r}: a number of bins (5) or cut points of |margin| "
                             "(0.05,0.1,0.2)") from None
