"""Read-only SQL over a workspace: each dataset's latest version is a view named after it."""

from __future__ import annotations

import polars as pl

from workbench.errors import WorkbenchError
from workbench.workspace import DATA_FILE, Workspace


def run_query(workspace: Workspace, query: str) -> pl.DataFrame:
    import duckdb

    con = duckdb.connect()
    try:
        try:
            statements = con.extract_statements(query)
        except duckdb.Error as exc:
            raise WorkbenchError(f"SQL: {str(exc).splitlines()[0]}") from None
        if not statements:
            raise WorkbenchError("SQL: empty query")
        for statement in statements:
            if statement.type != duckdb.StatementType.SELECT:
                raise WorkbenchError(
                    f"SQL: only read-only queries run here, not {statement.type.name}"
                )
        for version in workspace.list_datasets():
            path = str(version.path / DATA_FILE).replace("'", "''")
            name = version.name.replace('"', '""')
            con.execute(f"CREATE VIEW \"{name}\" AS SELECT * FROM read_parquet('{path}')")
        try:
            return con.sql(query).pl()
        except duckdb.Error as exc:
            raise WorkbenchError(f"SQL: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()
