"""`sql`: a DuckDB query over the step's input, bound as the table `input`."""

from __future__ import annotations

import polars as pl
from pydantic import Field

from workbench.schema import Kind
from workbench.transform import Context, StepConfig, transform


class SqlConfig(StepConfig):
    query: str = Field(description="DuckDB SQL; the step's input is the table `input`")
    kind: Kind | None = Field(None, description="kind of the result if it differs from the input")

    def output_kind(self, input_kind: str) -> str | None:
        return self.kind


@transform("sql", scope="global")
def sql(frame: pl.LazyFrame, config: SqlConfig, ctx: Context) -> pl.LazyFrame:
    """Run a DuckDB query with the input bound as `input` (joins, aggregates, pairing).

    Under the runner DuckDB reads the input's Parquet files itself and writes the result to a
    file, within `ctx.memory_limit` and spilling to `ctx.temp_dir`, so a query over more rows
    than fit in memory still runs."""
    import duckdb

    con = duckdb.connect()
    try:
        if ctx.input_files and ctx.temp_dir is not None:
            ctx.temp_dir.mkdir(parents=True, exist_ok=True)
            con.execute(f"SET memory_limit = {_literal(ctx.memory_limit)}")
            con.execute(f"SET temp_directory = {_literal(str(ctx.temp_dir / 'duckdb'))}")
            files = ", ".join(_literal(str(f)) for f in ctx.input_files)
            con.execute(f"CREATE VIEW input AS SELECT * FROM read_parquet([{files}])")
            result = con.sql(config.query)
            if result is None:
                raise ValueError("the query returned no rows table (use a SELECT)")
            out = ctx.temp_dir / "sql-result.parquet"
            result.write_parquet(str(out))
            return pl.scan_parquet(out)
        con.register("input", frame.collect().to_arrow())
        result = con.sql(config.query)
        if result is None:
            raise ValueError("the query returned no rows table (use a SELECT)")
        return result.pl().lazy()
    finally:
        con.close()


def _literal(text: str) -> str:
    """A SQL string literal (SET and CREATE VIEW take no prepared parameters)."""
    return "'" + text.replace("'", "''") + "'"
