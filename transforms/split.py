"""`split`: a seeded train/test assignment in a `split` column."""

from __future__ import annotations

import polars as pl
from pydantic import Field

from workbench.transform import Context, StepConfig, transform


class SplitConfig(StepConfig):
    test_size: float = Field(0.1, gt=0, lt=1, description="share of rows in the test split")
    seed: int | None = Field(None, description="defaults to the pipeline seed")
    column: str = "split"


@transform("split", scope="global")
def split(frame: pl.LazyFrame, config: SplitConfig, ctx: Context) -> pl.LazyFrame:
    """Mark round(test_size * rows) random rows `test`, the rest `train`; order is kept."""
    seed = ctx.seed if config.seed is None else config.seed
    data = frame.collect()
    n_test = round(data.height * config.test_size)
    rank = pl.int_range(pl.len()).shuffle(seed=seed)
    return data.with_columns(
        pl.when(rank < n_test).then(pl.lit("test")).otherwise(pl.lit("train")).alias(config.column)
    ).lazy()
