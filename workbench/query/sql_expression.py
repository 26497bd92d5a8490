"""A `filter` step's SQL expression, checked before polars sees it.

polars' `sql_expr` runs a subquery while it builds the expression: `x IN (SELECT * FROM
read_csv('/etc/passwd'))` reads the file at validation and prints its lines in the error. An
expression over the frame's own columns needs none of that, so the text is parsed first (by
DuckDB's parser, which reads nothing) and refused when it holds anything but one scalar
expression: no subquery, no table, no statement, no function that reads files or runs SQL.
"""

from __future__ import annotations

import json
import re

from workbench.query.sandbox import walk_tree
from workbench.query.sqltext import check_fragment

# functions that reach outside the frame in polars' SQL or DuckDB's (read_csv, scan_parquet,
# query(...), getenv, ...): refused wherever they appear
_OUTSIDE = re.compile(r"^(read_|scan_|glob$|query$|query_table$|getenv$|current_setting$|"
                      r"json_execute_serialized_sql$|sniff_csv$|parquet_)", re.IGNORECASE)


class UnsafeSQL(ValueError):
    """A SQL expression that could read more than the frame it filters."""


class BadSQL(ValueError):
    """Text that does not parse as SQL at all."""


def check_sql_expression(text: str) -> str:
    """`text` if it is one scalar SQL expression over the frame's columns; raises UnsafeSQL
    naming what was refused (never echoing anything the expression could have read)."""
    import duckdb

    try:
        check_fragment(text, "SQL expression")
    except Exception as exc:  # QueryError: `;`, an open bracket or quote
        raise UnsafeSQL(str(exc)) from None
    con = duckdb.connect(":memory:", config={"enable_external_access": False,
                                             "autoload_known_extensions": False,
                                             "autoinstall_known_extensions": False})
    try:
        rows = con.execute("SELECT json_serialize_sql($1::VARCHAR)",
                           [f"SELECT ({text}\n)"]).fetchall()
    finally:
        con.close()
    tree = json.loads(rows[0][0])
    if tree.get("error"):
        raise BadSQL(tree.get("error_message", "does not parse"))
    statements = tree.get("statements") or []
    if len(statements) != 1:
        raise UnsafeSQL("not one SQL expression")
    node = statements[0].get("node", {})
    if node.get("type") != "SELECT_NODE" or (node.get("from_table") or {}).get("type") not in (
            None, "EMPTY"):
        raise UnsafeSQL("not one SQL expression over the frame's columns")
    for part in walk_tree(node.get("select_list", [])):
        kind = part.get("class") or part.get("type")
        if kind in ("SUBQUERY", "SELECT_NODE", "SET_OPERATION_NODE") or part.get("subquery"):
            raise UnsafeSQL("a subquery reads tables; only the frame's own columns may be used")
        function = part.get("function_name")
        if isinstance(function, str) and _OUTSIDE.match(function):
            raise UnsafeSQL(f"{function}() reads outside the frame")
    return text

