"""A loop's rounds side by side (the app's Datasets page, notebooks): per round, the pairs
kept, the judge's margins, the lengths of both sides, pass rates where a verifier ran, and
what training and each stage took. Rounds are found by their lineage (`loop.name`), so the
table holds whatever the catalog holds, with or without the loop's state file."""

from __future__ import annotations

from typing import Any

import polars as pl

from workbench.loops.loop import loop_dir, read_state
from workbench.workspace import DatasetVersion, Workspace

SCHEMA = {"round": pl.Int64, "dataset": pl.String, "policy": pl.String, "rows_in": pl.Int64,
          "pairs": pl.Int64, "dropped": pl.Int64, "margin_mean": pl.Float64,
          "chosen_chars": pl.Float64, "rejected_chars": pl.Float64, "pass_rate": pl.Float64,
          "train_loss": pl.Float64, "seconds": pl.Float64}


def loop_of(version: DatasetVersion) -> str | None:
    """The loop that published `version`, if one did."""
    loop = version.lineage.get("loop")
    return loop.get("name") if isinstance(loop, dict) else None


def round_versions(ws: Workspace, name: str) -> list[DatasetVersion]:
    """The latest version of each round of loop `name`, in round order."""
    found = [v for v in ws.list_datasets() if loop_of(v) == name]
    return sorted(found, key=lambda v: v.lineage["loop"]["round"])


def rounds_table(ws: Workspace, name: str) -> pl.DataFrame:
    """One row per round (columns in `SCHEMA`); a column a round's rows lack is null."""
    state = read_state(loop_dir(ws, name)) or {"rounds": {}}
    rows = []
    for version in round_versions(ws, name):
        number = version.lineage["loop"]["round"]
        entry = state["rounds"].get(str(number), {})
        steps = version.lineage.get("steps") or [{}]
        rows.append({"round": number, "dataset": version.ref,
                     "policy": _short(version.lineage["loop"].get("policy", {})),
                     "rows_in": steps[0].get("rows_in"), "pairs": version.rows,
                     "dropped": sum(sum(s.get("dropped", {}).values()) for s in steps),
                     **_columns(ws, version),
                     "train_loss": (entry.get("trained") or {}).get("metrics", {}).get(
                         "train_loss"),
                     "seconds": sum(entry.get("seconds", {}).values()) or None})
    return pl.DataFrame(rows, schema=SCHEMA)


def _columns(ws: Workspace, version: DatasetVersion) -> dict[str, Any]:
    """Means over the round's rows, where it has the column: margin (a pairing step's, else
    the judge's as the judge report reads it: llm_pairwise's p_chosen − 0.5, or the score
    gap), side lengths, passes."""
    from workbench.labeling import judge_signals

    columns = set(version.columns)
    exprs = []
    judges = judge_signals.available(dict.fromkeys(columns))
    if "margin" in columns:
        exprs.append(pl.col("margin").cast(pl.Float64).mean().alias("margin_mean"))
    elif judges:
        exprs.append(judge_signals.Judge(judges[0]).margin().mean().alias("margin_mean"))
    for side in ("chosen", "rejected"):
        if side in columns:
            exprs.append(pl.col(side).str.len_chars().mean().alias(f"{side}_chars"))
    if "pass_rate" in columns:
        exprs.append(pl.col("pass_rate").cast(pl.Float64).mean().alias("pass_rate"))
    elif "chosen_passed" in columns:
        exprs.append(pl.col("chosen_passed").cast(pl.Float64).mean().alias("pass_rate"))
    if not exprs:
        return {}
    return ws.scan(version.ref).select(exprs).collect().row(0, named=True)


def _short(policy: dict[str, Any]) -> str:
    """A policy as its folder name and weights digest: `policy@03133ebb`."""
    model = str(policy.get("model", ""))
    digest = next(iter((policy.get("weights") or {}).values()), "")
    tail = model.rstrip("/").rsplit("/", 2)
    label = "/".join(tail[-2:]) if tail[-1] == "policy" else tail[-1]
    return f"{label}@{str(digest)[:8]}" if digest else label
