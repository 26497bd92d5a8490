"""`sql`: a DuckDB query over the step's input, bound as the table `input`."""

from __future__ import annotations

import polars as pl
from pydantic import Field

from workbench.schema import Kind
from workbench.transform import Context, StepConfig, transform


class SqlConfig(StepConfig):
    query: str = Field(description="DuckDB SQL; the step's input is the table `input`")
    kind: Kind | None = Field(None, description="kind of the result if it differs from the input")


@transform("sql", scope="global")
def sql(frame: pl.LazyFrame, config: SqlConfig, ctx: Context) -> pl.LazyFrame:
    """Run a DuckDB query with the input bound as `input` (joins, aggregates, pairing)."""
    import duckdb

    con = duckdb.connect()
    try:
        con.register("input", frame.collect().to_arrow())
        result = con.sql(config.query)
        if result is None:
            raise ValueError("the query returned no rows table (use a SELECT)")
        return result.pl().lazy()
    finally:
        con.close()
