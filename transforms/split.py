"""`split`: a seeded train/test assignment in a `split` column."""

from __future__ import annotations

import polars as pl
from pydantic import Field

from workbench.engine import positional
from workbench.transform import Context, Seeded, transform


class SplitConfig(Seeded):
    test_size: float = Field(0.1, gt=0, lt=1, description="share of rows in the test split")
    column: str = "split"


@transform("split", scope="global", keeps_content=True)
def split(frame: pl.LazyFrame, config: SplitConfig, ctx: Context) -> pl.LazyFrame:
    """Mark round(test_size * rows) random rows `test`, the rest `train`; order is kept."""
    seed = config.seed_or(ctx)
    rows = positional.height(frame, ctx)
    n_test = round(rows * config.test_size)
    rank = pl.select(pl.int_range(rows).shuffle(seed=seed).alias("r"))["r"]
    split = pl.select(pl.when(rank < n_test).then(pl.lit("test")).otherwise(pl.lit("train")))
    return positional.attach(frame, split.to_series(), config.column, ctx)
