"""A locked-down DuckDB connection for SQL a person types at run time.

Guards, all set before any typed SQL runs, then locked:

- the datasets are handed over as Arrow datasets opened here, one view per version, so DuckDB
  itself is granted no path at all: `allowed_directories` and `allowed_paths` stay empty and
  `enable_external_access=false` refuses every file function (read_text, read_csv, glob, ...),
  COPY, ATTACH, EXPORT, extension installs and URLs. (Granting the datasets folder instead
  would also grant writes into it: DuckDB's allow-lists do not tell reading from writing.)
- `temp_directory=''`: otherwise DuckDB adds the working directory's `.tmp/` to the allowed
  directories when external access is switched off.
- `autoinstall_known_extensions=false`, `autoload_known_extensions=false`: no extension is
  fetched or loaded behind a query's back.
- `memory_limit` from `workbench.query.query_limits` (with no temp directory a query that outgrows
  it fails instead of spilling); the time limit is kept by `query_limits.run_bounded`.
- `lock_configuration=true`: the query cannot SET any of this back.

On top, `check_read_only` accepts exactly one SELECT statement whose syntax tree holds no
data-modifying part (DuckDB parses `WITH x AS (COPY ... TO ...) SELECT ...` as a SELECT) and
calls no function that runs SQL from a string (which would escape this check).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from workbench.errors import QueryError
from workbench.query import query_limits
from workbench.query.query_limits import connection_config
from workbench.query.sqltext import first_keyword
from workbench.workspace import DATA_FILE, DatasetVersion

READ_ONLY_NODES = frozenset({"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE"})
SQL_FROM_STRING = frozenset({"query", "query_table", "json_execute_serialized_sql"})
ONLY = "only one read-only SELECT over the workspace's datasets runs here"


def open_sandbox(views: dict[str, DatasetVersion]) -> Any:
    """An in-memory DuckDB connection under the guards above, with `views` (view name ->
    dataset version) as its only tables. The caller closes it."""
    import duckdb
    import pyarrow.dataset as ds

    con = duckdb.connect(":memory:", config={
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "temp_directory": "",
        **connection_config(query_limits.current()),
    })
    try:
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        opened: dict[str, Any] = {}
        for name, version in views.items():
            path = str(version.path / DATA_FILE)
            if path not in opened:
                try:
                    opened[path] = ds.dataset(path, format="parquet")
                except (OSError, ValueError) as exc:
                    raise QueryError(f"dataset {version.ref}: cannot open {path}: {exc}") from None
            con.register(name, opened[path])
    except BaseException:
        con.close()
        raise
    return con


def check_read_only(con: Any, sql: str) -> None:
    """Refuse anything but a single read-only SELECT, naming what was refused and why."""
    import duckdb

    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"SQL: {one_line(exc)}") from None
    if not statements:
        raise QueryError("SQL: empty query")
    if len(statements) > 1:
        raise QueryError(f"SQL refused: {len(statements)} statements; {ONLY}")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        word = first_keyword(sql)
        what = f"a {kind.name} statement" if word in ("SELECT", "WITH", "FROM", "?") else word
        raise QueryError(f"SQL refused: {what} is not a read-only query; {ONLY}")
    rows = con.execute("SELECT json_serialize_sql($1::VARCHAR)", [sql]).fetchall()
    tree = json.loads(rows[0][0])
    if tree.get("error"):
        raise QueryError(
            f"SQL refused: cannot check that this query only reads "
            f"({tree.get('error_message', 'not serializable')}); {ONLY}")
    for node in walk_tree(tree):
        kind = node.get("type")
        if isinstance(kind, str) and kind.endswith("_NODE") and kind not in READ_ONLY_NODES:
            verb = kind.removesuffix("_NODE").removesuffix("_QUERY")
            raise QueryError(f"SQL refused: {verb} inside a query writes; {ONLY}")
        function = node.get("function_name")
        if isinstance(function, str) and function.lower() in SQL_FROM_STRING:
            raise QueryError(
                f"SQL refused: {function}() runs SQL from a string, which cannot be checked; "
                f"{ONLY}")


def one_line(exc: BaseException) -> str:
    """DuckDB's message without its class prefix and context lines."""
    line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    for prefix in ("Permission Error: ", "Parser Error: ", "Binder Error: ", "Catalog Error: "):
        line = line.removeprefix(prefix)
    return line


def walk_tree(value: Any) -> Iterator[dict[str, Any]]:
    """Every object in a parsed JSON tree (DuckDB's serialized SQL), depth first."""
    if isinstance(value, dict):
        yield value
        for child in value.values():
            yield from walk_tree(child)
    elif isinstance(value, list):
        for child in value:
            yield from walk_tree(child)


def version_views(versions: Iterable[DatasetVersion]) -> dict[str, DatasetVersion]:
    """Every version as `name@N`, and each dataset's latest version as `name`."""
    views: dict[str, DatasetVersion] = {}
    latest: dict[str, DatasetVersion] = {}
    for version in versions:
        views[version.ref] = version
        if version.name not in latest or version.version > latest[version.name].version:
            latest[version.name] = version
    return {**latest, **views}
