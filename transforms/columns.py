"""`select_columns` and `rename`: reshape columns; the kind's required columns must survive."""

from __future__ import annotations

import polars as pl
from pydantic import Field

from workbench.schema import Kind
from workbench.transform import Context, StepConfig, transform


class SelectConfig(StepConfig):
    columns: list[str] = Field(description="columns to keep, in this order")
    kind: Kind | None = None

    def output_kind(self, input_kind: str) -> str | None:
        return self.kind


class RenameConfig(StepConfig):
    mapping: dict[str, str] = Field(description="{old name: new name}")
    kind: Kind | None = None

    def output_kind(self, input_kind: str) -> str | None:
        return self.kind


@transform("select_columns", scope="row", keeps_content=True, stateless=True)
def select_columns(frame: pl.LazyFrame, config: SelectConfig, ctx: Context) -> pl.LazyFrame:
    """Keep only the given columns (plus `id`, which every dataset carries)."""
    names = frame.collect_schema().names()
    missing = [c for c in config.columns if c not in names]
    if missing:
        raise ValueError(f"no column {missing[0]!r} (columns: {', '.join(names)})")
    keep = ["id", *[c for c in config.columns if c != "id"]] if "id" in names else config.columns
    return frame.select(keep)


@transform("rename", scope="row", stateless=True)
def rename(frame: pl.LazyFrame, config: RenameConfig, ctx: Context) -> pl.LazyFrame:
    """Rename columns, e.g. to map a custom layout onto a kind's canonical names."""
    names = frame.collect_schema().names()
    missing = [c for c in config.mapping if c not in names]
    if missing:
        raise ValueError(f"no column {missing[0]!r} (columns: {', '.join(names)})")
    return frame.rename(config.mapping)
