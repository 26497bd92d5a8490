"""Row-local transforms as functions of one Arrow batch.

The local runner applies them this way, and so can a distributed engine: for Ray Data,
`dataset.map_batches(batch_function(t, ctx), batch_format="pyarrow")`. Global steps (dedup,
sampling, SQL, selection) need the whole dataset and are refused here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl

from workbench.transform import Context


def apply_batch(transform: Any, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    if transform.scope != "row":
        raise ValueError(f"{transform.name} is a global step: it needs the whole dataset")
    return transform(batch.lazy(), ctx).collect()


def batch_function(transform: Any, ctx: Context) -> Callable[[Any], Any]:
    """pyarrow.Table -> pyarrow.Table, keeping the `_drop_reason` marks for the caller."""

    def run(table: Any) -> Any:
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        return apply_batch(transform, frame, ctx).to_arrow()

    return run
