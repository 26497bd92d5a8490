"""Which columns of a preference dataset hold a judge's opinion of each pair, read one way
for the judge report and for queue orders.

A judge is named by a spec:

- `pairwise`: what `judge: {method: llm_pairwise}` writes. Its margin is `p_chosen - 0.5`,
  P(chosen better) averaged over both orders, so the verdict is the position-balanced one
  (Wang et al. 2023, "Large Language Models are not Fair Evaluators"); `position_flip` says
  whether the two orders disagreed.
- `scores`: `chosen_score - rejected_score`, as every scoring method of `judge` writes them
  (expected_score, llm_json, reward_model, density_ratio).
- any other name: a numeric column that already holds a signed margin (e.g. `margin`, or a
  second judge's scores renamed and subtracted in a `sql` step).

Every margin is signed: above 0 the judge prefers the dataset's chosen reply, below 0 the
rejected one, 0 is a tie; null means the pair was not judged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from workbench.errors import WorkbenchError
from workbench.query.sqltext import quote_ident

PAIRWISE = "pairwise"
SCORES = "scores"
NEEDS = {PAIRWISE: ("p_chosen", "position_flip"), SCORES: ("chosen_score", "rejected_score")}
WRITTEN_BY = {PAIRWISE: "judge: {method: llm_pairwise}",
              SCORES: "a judge step's scoring methods"}


@dataclass(frozen=True)
class Judge:
    spec: str

    @property
    def flips(self) -> bool:
        """Whether both orders were asked, so a position flip is recorded per pair."""
        return self.spec == PAIRWISE

    def margin(self) -> pl.Expr:
        """The signed margin as a polars expression (Float64)."""
        if self.spec == PAIRWISE:
            return (pl.col("p_chosen").cast(pl.Float64) - 0.5).alias("margin")
        if self.spec == SCORES:
            return (pl.col("chosen_score").cast(pl.Float64)
                    - pl.col("rejected_score").cast(pl.Float64)).alias("margin")
        return pl.col(self.spec).cast(pl.Float64).alias("margin")

    def margin_sql(self) -> str:
        """The same margin as a DuckDB expression over the dataset's columns."""
        if self.spec == PAIRWISE:
            return "(CAST(p_chosen AS DOUBLE) - 0.5)"
        if self.spec == SCORES:
            return "(CAST(chosen_score AS DOUBLE) - CAST(rejected_score AS DOUBLE))"
        return f"CAST({quote_ident(self.spec)} AS DOUBLE)"

    def flip_sql(self) -> str:
        if not self.flips:
            raise WorkbenchError(f"judge {self.spec!r} asked one order only: it has no flips")
        return "position_flip"


def available(schema: Mapping[str, pl.DataType]) -> list[str]:
    """The built-in judges whose columns a dataset has, pairwise first."""
    return [spec for spec, columns in NEEDS.items() if all(c in schema for c in columns)]


def resolve(spec: str | None, schema: Mapping[str, pl.DataType], where: str) -> Judge:
    """The judge `spec` names in a dataset with this schema (None: pairwise if its columns are
    there, else scores); a missing or non-numeric column is an error naming `where`."""
    if spec is None or not spec.strip():
        found = available(schema)
        if not found:
            raise WorkbenchError(
                f"{where}: no judge columns (llm_pairwise's p_chosen/position_flip, or "
                "chosen_score/rejected_score); run a judge step first, or name a margin column")
        return Judge(found[0])
    spec = spec.strip()
    if spec in NEEDS:
        missing = [c for c in NEEDS[spec] if c not in schema]
        if missing:
            raise WorkbenchError(f"{where}: judge {spec!r} needs column(s) {', '.join(missing)} "
                                 f"(written by {WRITTEN_BY[spec]}), which the dataset lacks")
        return Judge(spec)
    if spec not in schema:
        raise WorkbenchError(f"{where}: no column {spec!r} to read a judge margin from "
                             f"(columns: {', '.join(schema)})")
    if not schema[spec].is_numeric():
        raise WorkbenchError(f"{where}: column {spec!r} is {schema[spec]}, not a numeric margin")
    return Judge(spec)
