"""Summaries of a dataset version for plots: lengths, scores, category mix, label progress.

Each is one lazy polars query over the version's Parquet file that returns a small frame
(histogram bins, counts, a bounded sample), so a million-row version is never sent whole to
a browser. Versions are immutable, so callers may cache results per version.
"""

from __future__ import annotations

import polars as pl

from workbench.schema import MESSAGES
from workbench.workspace import DatasetVersion, Workspace

TEXT = ("prompt", "chosen", "rejected", "response")
SCORES = ("chosen_score", "rejected_score", "margin", "score", "scores")
CATEGORY_HINTS = ("source", "task_category", "category", "language", "split", "model",
                  "chosen_model", "rejected_model", "quality", "difficulty")


def _lengths(version: DatasetVersion, scan: pl.LazyFrame) -> list[pl.Expr]:
    schema = scan.collect_schema()
    out = []
    for column in TEXT:
        if column not in schema:
            continue
        if schema[column] == MESSAGES:  # prompt: characters of every turn
            expr = pl.col(column).list.eval(pl.element().struct.field("content")
                                            .str.len_chars()).list.sum()
        else:
            expr = pl.col(column).str.len_chars()
        out.append(expr.alias(column))
    if "responses" in schema:
        out.append(pl.col("responses").list.eval(pl.element().str.len_chars()).list.mean()
                   .alias("responses (mean)"))
    return out


def length_histogram(ws: Workspace, version: DatasetVersion, bins: int = 30) -> pl.DataFrame:
    """Characters per text column in shared bins up to the 99th percentile (longer ones
    fall in the last bin): column, bin, bin_end, rows."""
    scan = ws.scan(version.ref)
    exprs = _lengths(version, scan)
    if not exprs:
        return pl.DataFrame(schema={"column": pl.String, "bin": pl.Float64, "rows": pl.UInt32})
    lengths = scan.select(exprs).unpivot(variable_name="column", value_name="chars")
    top = lengths.select(pl.col("chars").quantile(0.99)).collect().item() or 1
    width = max(1.0, float(top) / bins)
    return (lengths.with_columns((pl.col("chars").clip(0, top) // width * width).alias("bin"))
            .group_by("column", "bin").agg(pl.len().alias("rows")).sort("column", "bin")
            .with_columns((pl.col("bin") + width).alias("bin_end")).collect())


def score_histogram(ws: Workspace, version: DatasetVersion, bins: int = 30) -> pl.DataFrame:
    """Numeric score columns (`scores` lists flattened): column, bin, bin_end, rows."""
    scan = ws.scan(version.ref)
    schema = scan.collect_schema()
    exprs = []
    for column in SCORES:
        if column not in schema:
            continue
        dtype = schema[column]
        if isinstance(dtype, pl.List) and dtype.inner.is_numeric():
            exprs.append(scan.select(pl.col(column).explode().cast(pl.Float64).alias("value"))
                         .with_columns(pl.lit(column).alias("column")))
        elif dtype.is_numeric():
            exprs.append(scan.select(pl.col(column).cast(pl.Float64).alias("value"))
                         .with_columns(pl.lit(column).alias("column")))
    if not exprs:
        return pl.DataFrame(schema={"column": pl.String, "bin": pl.Float64, "rows": pl.UInt32})
    values = pl.concat(exprs).drop_nulls()
    low, high = values.select(pl.col("value").min().alias("low"),
                              pl.col("value").max().alias("high")).collect().row(0)
    width = max((high - low) / bins, 1e-9) if low is not None else 1.0
    return (values.with_columns(((pl.col("value") - low) // width * width + low).alias("bin"))
            .group_by("column", "bin").agg(pl.len().alias("rows")).sort("column", "bin")
            .with_columns((pl.col("bin") + width).alias("bin_end")).collect())


def pass_rates(scan: pl.LazyFrame, bins: int = 10) -> pl.DataFrame:
    """Prompts by `pass_rate` (verify's share of passing samples; a prompt's rows share it, so
    verified pairs, several to a prompt, count each prompt once): one bin per value when
    there are at most `bins` + 1 of them (k samples give k + 1 values), else `bins` equal bins
    over [0, 1] with 1.0 in the last; columns bin, bin_end, prompts. Empty without
    `pass_rate`."""
    empty = pl.DataFrame(schema={"bin": pl.Float64, "bin_end": pl.Float64, "prompts": pl.UInt32})
    schema = scan.collect_schema()
    if "pass_rate" not in schema:
        return empty
    if "prompt" in schema:  # one per prompt: a hash of the prompt (8 bytes a row), first row
        scan = scan.select(pl.col("prompt").hash().alias("_p"), "pass_rate").unique(
            subset=["_p"], keep="first")
    rates = scan.select(pl.col("pass_rate").cast(pl.Float64)).drop_nulls()
    counts = rates.group_by("pass_rate").agg(pl.len().alias("prompts")).sort("pass_rate").collect()
    if counts.height <= bins + 1:
        return counts.select(pl.col("pass_rate").alias("bin"), pl.col("pass_rate").alias("bin_end"),
                             pl.col("prompts").cast(pl.UInt32))
    width = 1.0 / bins
    start = (pl.col("pass_rate").clip(0, 1) // width).clip(0, bins - 1) * width
    return (counts.group_by(start.alias("bin")).agg(pl.col("prompts").sum().cast(pl.UInt32))
            .sort("bin").select("bin", (pl.col("bin") + width).alias("bin_end"), "prompts"))


def pass_rate_histogram(ws: Workspace, version: DatasetVersion, bins: int = 10) -> pl.DataFrame:
    """`pass_rates` of a version (empty when it has no `pass_rate` column)."""
    return pass_rates(ws.scan(version.ref), bins)


def length_scatter(ws: Workspace, version: DatasetVersion, n: int = 2000) -> pl.DataFrame:
    """Chosen against rejected length for a sample of at most n pairs."""
    if not {"chosen", "rejected"} <= set(version.columns):
        return pl.DataFrame(schema={"chosen": pl.UInt32, "rejected": pl.UInt32})
    scan = ws.scan(version.ref).select(pl.col("chosen").str.len_chars(),
                                       pl.col("rejected").str.len_chars())
    step = max(1, version.rows // n)
    return scan.gather_every(step).head(n).collect()


def category_mix(ws: Workspace, version: DatasetVersion, most: int = 12) -> pl.DataFrame:
    """Counts of the few-valued string columns people group by (source, task_category,
    split, models, ...): column, value, rows; the rest of a long tail is `(other)`."""
    scan = ws.scan(version.ref)
    schema = scan.collect_schema()
    columns = [c for c in CATEGORY_HINTS if c in schema and schema[c] in (pl.String, pl.Boolean,
                                                                          pl.Categorical)]
    parts = []
    for column in columns:
        counts = (scan.group_by(pl.col(column).cast(pl.String).fill_null("(null)").alias("value"))
                  .agg(pl.len().alias("rows")).sort("rows", descending=True).collect())
        head, rest = counts.head(most), counts.slice(most)
        if rest.height:
            head = pl.concat([head, pl.DataFrame({"value": ["(other)"],
                                                  "rows": [rest["rows"].sum()]},
                                                 schema=head.schema)])
        parts.append(head.with_columns(pl.lit(column).alias("column")))
    if not parts:
        return pl.DataFrame(schema={"value": pl.String, "rows": pl.UInt32, "column": pl.String})
    return pl.concat(parts).select("column", "value", "rows")


def label_progress(ws: Workspace, version: DatasetVersion) -> pl.DataFrame:
    """Per annotator: rows of this version they labelled (latest live labels)."""
    latest = ws.latest_labels(version.name)
    if latest.height == 0:
        return pl.DataFrame(schema={"annotator": pl.String, "rows": pl.UInt32})
    ids = ws.scan(version.ref).select("id").filter(
        pl.col("id").is_in(latest["row_id"].unique().to_list())).collect()
    return (latest.join(ids, left_on="row_id", right_on="id").group_by("annotator")
            .agg(pl.len().alias("rows")).sort("annotator"))
