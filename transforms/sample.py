"""`sample`: a seeded random subset, in the input's order."""

from __future__ import annotations

import polars as pl
from pydantic import Field, model_validator

from workbench.engine import positional
from workbench.transform import Context, Seeded, transform


class SampleConfig(Seeded):
    n: int | None = Field(None, ge=0, description="number of rows")
    fraction: float | None = Field(None, gt=0, le=1, description="share of rows")

    @model_validator(mode="after")
    def _one_of(self) -> SampleConfig:
        if (self.n is None) == (self.fraction is None):
            raise ValueError("give exactly one of `n` or `fraction`")
        return self


@transform("sample", scope="global", keeps_content=True)
def sample(frame: pl.LazyFrame, config: SampleConfig, ctx: Context) -> pl.LazyFrame:
    """Draw without replacement; asking for more rows than exist keeps them all."""
    rows = positional.height(frame, ctx)
    seed = config.seed_or(ctx)
    n = min(config.n, rows) if config.n is not None else round(rows * config.fraction)
    # draw positions (a byte a row), then stream the rows past them in their own order
    chosen = pl.Series("_order", range(rows), pl.UInt32).sample(n=n, seed=seed)
    keep = pl.Series(range(rows), dtype=pl.UInt32).is_in(chosen.implode())
    return positional.attach(frame, keep, "_keep", ctx).filter("_keep").drop("_keep")
