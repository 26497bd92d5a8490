"""SQL a person types at run time (`workbench sql`, the app's filter box and search).

It reads only the workspace's datasets: each dataset's latest version is a view named after
it and every version is a view `"name@N"` (`name@N` may be written unquoted). Everything runs
in `workbench.query.sandbox` (DuckDB guards plus a read-only statement check). The `sql` pipeline
step is different: it is code the user chose to run, see README "Trust model".
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from workbench.errors import QueryError
from workbench.query.query_limits import accepts_limits, bounded_table, run_bounded
from workbench.query.query_limits import close as close_connection
from workbench.query.sandbox import check_read_only, one_line, open_sandbox, version_views
from workbench.query.sqltext import check_fragment, quote_ident, rewrite_refs
from workbench.workspace import DATA_FILE, DatasetVersion, Workspace


@accepts_limits
def run_query(workspace: Workspace, query: str) -> pl.DataFrame:
    """Run one read-only SELECT over the workspace's datasets; anything else is refused.
    Like every typed query here it takes `limits=` (`workbench.query.query_limits.Limits`: time and
    memory; by default 60 s and a quarter of RAM up to 4 GiB)."""
    views = version_views(workspace.list_datasets(all_versions=True))
    sql = rewrite_refs(query, _versions_by_name(views))
    con = open_sandbox(views)
    try:
        return _select(con, sql)
    finally:
        close_connection(con)


@accepts_limits
def browse(
    workspace: Workspace,
    ref: str,
    where: str | None = None,
    order_by: str | None = None,
    search: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[pl.DataFrame, int]:
    """One page of a dataset version's rows and how many rows match in all.

    `where` and `order_by` are typed SQL clauses (they may use other datasets, e.g.
    `id IN (SELECT id FROM hh@1)`); `search` is plain text, matched case-insensitively in the
    text columns (strings, lists of strings, message lists). Runs under the same lockdown as
    `run_query`; see `_page` for how a page of a million rows stays fast."""
    if limit < 0 or offset < 0:
        raise QueryError("browse: limit and offset must not be negative")
    versions = workspace.list_datasets(all_versions=True)
    version = version_views(versions).get(ref) or workspace.resolve(ref)
    if not any(x and x.strip() for x in (where, order_by, search)):  # nothing typed
        return fetch_page(version.path / DATA_FILE, limit, offset), version.rows
    with _sandboxed(workspace, ref, where, versions) as (con, source, conditions, path):
        return _page(con, source, path, conditions, order_by, search, limit, offset,
                     _versions_by_name(version_views(versions)))


@accepts_limits
def browse_file(
    workspace: Workspace,
    path: Path,
    where: str | None = None,
    order_by: str | None = None,
    search: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[pl.DataFrame, int]:
    """`browse` over Parquet rows of the workspace that are not a dataset version (one file,
    or a folder of parts such as a step's `dropped/`), under the same lockdown: the file or
    folder is handed to the sandbox as an Arrow dataset named `rows`, the typed clauses may
    also read the datasets."""
    import pyarrow.dataset as ds

    if limit < 0 or offset < 0:
        raise QueryError("browse: limit and offset must not be negative")
    root = workspace.root.resolve()
    if not Path(path).resolve().is_relative_to(root):
        raise QueryError(f"browse: {path} is outside the workspace {root}")
    if not any(x and x.strip() for x in (where, order_by, search)):
        return fetch_page(path, limit, offset), _native(path, "SELECT count(*) AS n FROM "
                                                              "read_parquet($path)")["n"][0]
    views = version_views(workspace.list_datasets(all_versions=True))
    by_name = _versions_by_name(views)
    conditions = []
    if where and where.strip():
        conditions.append(f"({rewrite_refs(check_fragment(where, 'WHERE clause'), by_name)}\n)")
    con = open_sandbox(views)
    try:
        con.register("rows", ds.dataset(str(path), format="parquet"))
        return _page(con, "rows", Path(path), conditions, order_by, search, limit, offset,
                     by_name)
    finally:
        close_connection(con)


def _page(con: Any, source: str, path: Path, conditions: list[str], order_by: str | None,
          search: str | None, limit: int, offset: int,
          by_name: dict[str, set[int]]) -> tuple[pl.DataFrame, int]:
    """A page in two steps. The typed clauses run in the sandbox and select only the page's
    ids and the total (DuckDB reads just the columns they use, through Arrow); then the page's
    whole rows are read by id from the version's own Parquet file, natively (`fetch_ids`: a
    fixed query, no typed text). Reading every column of a million rows through Arrow to keep
    25 would take seconds."""
    params: dict[str, Any] = {}
    if search:
        columns = _search_terms(con, source)
        if not columns:
            raise QueryError(f"browse: {source} has no text column to search")
        conditions.append("(" + " OR ".join(columns) + ")")
        params["search"] = search.lower()
    filtered = f"FROM {source}" + (f" WHERE {' AND '.join(conditions)}" if conditions else "")
    order = ""
    if order_by and order_by.strip():
        clause = rewrite_refs(check_fragment(order_by, "ORDER BY clause"), by_name)
        order = f" ORDER BY {clause}\n"
    picked = _select(con, f"SELECT id AS _wb_id, count(*) OVER () AS _wb_total {filtered}{order}"
                          f" LIMIT {int(limit)} OFFSET {int(offset)}", params)
    if picked.height:
        total = int(picked["_wb_total"][0])
    else:  # past the last page (or nothing matches): count on its own
        total = int(_select(con, f"SELECT count(*) AS n {filtered}", params)["n"][0])
    return fetch_ids(path, picked["_wb_id"].to_list()), total


def fetch_page(path: Path, limit: int, offset: int) -> pl.DataFrame:
    """Rows offset..offset+limit of a Parquet file in file order, read natively."""
    return _native(path, f"SELECT * FROM read_parquet($path) LIMIT {int(limit)} "
                         f"OFFSET {int(offset)}")


def fetch_ids(path: Path, ids: list[str]) -> pl.DataFrame:
    """The rows of a Parquet file with these ids, in the order of `ids`."""
    rows = _native(path, "SELECT * FROM read_parquet($path) "
                         "WHERE list_contains($ids::VARCHAR[], id)", {"ids": ids})
    order = pl.DataFrame({"id": ids, "_wb_pos": range(len(ids))},
                         schema={"id": rows.schema.get("id", pl.String), "_wb_pos": pl.Int64})
    return rows.join(order, on="id").sort("_wb_pos").drop("_wb_pos")


def _native(path: Path, sql: str, params: dict[str, Any] | None = None) -> pl.DataFrame:
    """Our own fixed query over one Parquet file or folder of parts (never typed text): a
    DuckDB connection that may read only that file or folder."""
    import duckdb

    folder = Path(path).is_dir()

    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                             "autoload_known_extensions": False,
                                             "temp_directory": ""})
    try:
        setting = "allowed_directories" if folder else "allowed_paths"
        con.execute(f"SET {setting} = $paths", {"paths": [str(path)]})
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        target = str(Path(path) / "*.parquet") if folder else str(path)
        table = con.sql(sql, params={"path": target, **(params or {})}).to_arrow_table()
    except duckdb.Error as exc:
        raise QueryError(f"reading {path}: {one_line(exc)}") from None
    finally:
        close_connection(con)
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


@accepts_limits
def queue_rows(
    workspace: Workspace,
    ref: str,
    where: str | None = None,
    exclude: Any = None,
    only: Any = None,
    salt: str = "",
    limit: int = 1,
    versions: list[DatasetVersion] | None = None,
    order: Sequence[str] = (),
    sequential: bool = False,
) -> pl.DataFrame:
    """Up to `limit` rows of `ref` matching the typed `where`, in a stable pseudo-random order
    that `salt` picks (the same salt, the same order), for a labeling queue.

    `exclude` and `only` are Arrow tables with a `row_id` column (rows already labelled
    enough, gold rows, skipped rows; or the only rows allowed): an anti- or semi-join in the
    sandbox over the ids, then the whole rows by id (as `browse` does). `order` holds ORDER BY
    terms that come first (built by `workbench.labeling.queues` from checked column names, never
    typed text); `sequential` puts the rows in the version's file order first."""
    if limit < 0:
        raise QueryError("queue_rows: limit must not be negative")
    with _sandboxed(workspace, ref, where, versions) as (con, source, conditions, path):
        for name, table in (("_wb_exclude", exclude), ("_wb_only", only)):
            if table is not None:
                con.register(name, table)
        if exclude is not None:
            conditions.append("id NOT IN (SELECT row_id FROM _wb_exclude)")
        if only is not None:
            conditions.append("id IN (SELECT row_id FROM _wb_only)")
        terms = list(order)
        if sequential:  # positions read natively: the sandbox cannot see file row numbers
            positions = _native(path, "SELECT id AS _wb_pid, file_row_number AS _wb_pos "
                                      "FROM read_parquet($path, file_row_number = true)")
            con.register("_wb_positions", positions.to_arrow())
            source = f"{source} JOIN _wb_positions ON id = _wb_pid"
            terms.insert(0, "_wb_pos")
        filtered = f"FROM {source}" + (f" WHERE {' AND '.join(conditions)}" if conditions else "")
        ids = _select(con, f"SELECT id {filtered} ORDER BY {''.join(t + ', ' for t in terms)}"
                           f"hash(id || $salt), id LIMIT {int(limit)}",
                      {"salt": salt})["id"].to_list()
    return fetch_ids(path, ids)


@accepts_limits
def count_rows(workspace: Workspace, ref: str, where: str | None = None,
               among: Any = None,
               versions: list[DatasetVersion] | None = None) -> tuple[int, int]:
    """How many rows of `ref` match the typed `where`, and how many of those have their id in
    `among` (an Arrow table with a `row_id` column; e.g. rows labelled enough)."""
    with _sandboxed(workspace, ref, where, versions) as (con, source, conditions, path):
        filtered = f"FROM {source}" + (f" WHERE {' AND '.join(conditions)}" if conditions else "")
        if among is None:
            return int(_select(con, f"SELECT count(*) AS n {filtered}")["n"][0]), 0
        con.register("_wb_among", among)
        row = _select(con, "SELECT count(*) AS n, count(*) FILTER "
                           f"(id IN (SELECT row_id FROM _wb_among)) AS k {filtered}").row(0)
        return int(row[0]), int(row[1])


@contextlib.contextmanager
def _sandboxed(workspace: Workspace, ref: str, where: str | None,
               versions: list[DatasetVersion] | None = None,
               ) -> Iterator[tuple[Any, str, list[str], Path]]:
    """A sandbox over the workspace, the quoted view of `ref`, the checked typed `where` as a
    condition list to extend, and the version's Parquet file. `versions` (all of them, as `list_datasets(all_versions=
    True)` gives) saves the catalog reads when the caller has them already."""
    views = version_views(versions if versions is not None
                          else workspace.list_datasets(all_versions=True))
    version = views.get(ref) if versions is not None else workspace.resolve(ref)
    if version is None:
        version = workspace.resolve(ref)  # its error names the datasets there are
    conditions = []
    if where and where.strip():
        where = rewrite_refs(check_fragment(where, "WHERE clause"), _versions_by_name(views))
        conditions.append(f"({where}\n)")
    con = open_sandbox(views)
    try:
        yield con, quote_ident(version.ref), conditions, version.path / DATA_FILE
    finally:
        close_connection(con)


def json_lines(frame: pl.DataFrame) -> Iterator[str]:
    """One JSON object per row; nested lists and structs stay JSON arrays and objects."""
    from workbench.formats.jsontext import dumps

    for row in frame.iter_rows(named=True):
        yield dumps(row)  # NaN and Infinity as null: every line is valid JSON


def _select(con: Any, sql: str, params: dict[str, Any] | None = None) -> pl.DataFrame:
    import duckdb

    check_read_only(con, sql)
    try:
        table = run_bounded(con, lambda: bounded_table(con.sql(sql, params=params or None)))
    except duckdb.PermissionException as exc:
        raise QueryError(
            f"SQL refused: {one_line(exc)}; queries here read only the workspace's datasets "
            "(no files, extensions, network or writes)") from None
    except duckdb.Error as exc:
        raise QueryError(f"SQL: {one_line(exc)}") from None
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def _search_terms(con: Any, source: str) -> list[str]:
    """A case-insensitive substring test of `$search` per text column of `source`."""
    relation = con.sql(f"SELECT * FROM {source} LIMIT 0")
    terms = []
    for name, dtype in zip(relation.columns, relation.types, strict=True):
        text = _as_text(quote_ident(name), dtype)
        if text is not None:
            terms.append(f"coalesce(contains(lower({text}), $search), false)")
    return terms


def _as_text(column: str, dtype: Any) -> str | None:
    """Text of a string, list-of-strings or message-list column; None for other types."""
    if dtype.id == "varchar":
        return column
    if dtype.id == "list" and dtype.child.id == "varchar":
        return f"array_to_string({column}, chr(10))"
    if dtype.id == "list" and dtype.child.id == "struct" and any(
            field == "content" and ftype.id == "varchar" for field, ftype in dtype.child.children):
        return f"array_to_string(list_transform({column}, lambda m: m.content), chr(10))"
    return None


def _versions_by_name(views: dict[str, DatasetVersion]) -> dict[str, set[int]]:
    versions: dict[str, set[int]] = {}
    for version in views.values():
        versions.setdefault(version.name, set()).add(version.version)
    return versions
