"""Typed-in SQL (`workbench sql`, the app's filter box and search) on a real workspace: it
reads the datasets and nothing else; each refusal is checked at the statement check and,
where it applies, at DuckDB's own guards underneath."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import polars as pl
import pytest
from conftest import cli

from workbench.errors import QueryError
from workbench.query.query import browse, json_lines, run_query
from workbench.query.sandbox import open_sandbox, version_views
from workbench.schema import user
from workbench.workspace import Workspace


def prefs(n: int, tag: str = "") -> pl.DataFrame:
    return pl.DataFrame({"q": [f"Question {i}{tag}" for i in range(n)]}).select(
        user("q").alias("prompt"), pl.format("good {}", "q").alias("chosen"),
        pl.format("bad {}", "q").alias("rejected"), pl.int_range(pl.len()).alias("n"))


@pytest.fixture
def hh(ws: Workspace) -> Workspace:
    ws.write_dataset("hh", prefs(3), "preference")
    ws.write_dataset("hh", prefs(8), "preference")
    ws.write_dataset("other", prefs(4, tag="!"), "preference")
    return ws


def test_select_joins_aggregates_nested_columns_and_versions(hh: Workspace):
    assert run_query(hh, "SELECT count(*) AS n FROM hh")["n"].to_list() == [8]
    assert run_query(hh, "SELECT count(*) AS n FROM hh@1")["n"].to_list() == [3]
    assert run_query(hh, 'SELECT count(*) AS n FROM "hh@2"')["n"].to_list() == [8]
    joined = run_query(hh, "SELECT a.n, b.chosen FROM hh@1 a JOIN hh b USING (id) ORDER BY a.n")
    assert joined["n"].to_list() == [0, 1, 2] and joined["chosen"][0] == "good Question 0"
    grouped = run_query(hh, "SELECT n % 2 AS odd, count(*) AS c FROM hh GROUP BY ALL ORDER BY 1")
    assert grouped["c"].to_list() == [4, 4]
    nested = run_query(hh, "SELECT prompt, prompt[1].content AS first, len(prompt) AS turns "
                           "FROM hh WHERE n = 2")
    assert nested["prompt"].to_list() == [[{"role": "user", "content": "Question 2"}]]
    assert (nested["first"][0], nested["turns"][0]) == ("Question 2", 1)
    literal = run_query(hh, "SELECT 'hh@1' AS s, \"n\" FROM hh@1 -- hh@9 in a comment\nLIMIT 1")
    assert literal["s"].to_list() == ["hh@1"]  # refs inside literals and comments are left alone
    views = set(run_query(hh, "SHOW TABLES")["name"])
    assert views == {"hh", "hh@1", "hh@2", "other", "other@1"}


def test_unknown_version_names_the_versions_there_are(hh: Workspace):
    with pytest.raises(QueryError, match=r"no version hh@7 \(versions of hh: 1, 2\)"):
        run_query(hh, "SELECT * FROM hh@7")


REFUSED = {
    "SELECT * FROM read_text('/etc/passwd')": 'SQL refused: Cannot access file "/etc/passwd"',
    "SELECT * FROM read_csv('/etc/hosts')": 'SQL refused: Cannot access file "/etc/hosts"',
    "SELECT * FROM glob('/*')": 'SQL refused: Cannot access file "/\\*"',
    "SELECT * FROM 'https://example.com/x.parquet'": "SQL refused: Cannot access file",
    "COPY hh TO '/tmp/out.csv'": "SQL refused: COPY is not a read-only query",
    "ATTACH '/tmp/other.duckdb'": "SQL refused: ATTACH is not a read-only query",
    "INSTALL httpfs": "SQL refused: INSTALL is not a read-only query",
    "LOAD httpfs": "SQL refused: LOAD is not a read-only query",
    "SET enable_external_access = true": "SQL refused: SET is not a read-only query",
    "PRAGMA version": "SQL refused: PRAGMA is not a read-only query",
    "CREATE TABLE t AS SELECT 1": "SQL refused: CREATE is not a read-only query",
    "DROP VIEW hh": "SQL refused: DROP is not a read-only query",
    "SELECT 1; SELECT 2": "SQL refused: 2 statements",
    "SELECT 1; COPY hh TO '/tmp/out.csv'": "SQL refused: 2 statements",
    "SELECT * FROM query('SELECT 1')": r"SQL refused: query\(\) runs SQL from a string",
    "SELECT * FROM json_execute_serialized_sql(json_serialize_sql('SELECT 1'))":
        r"SQL refused: json_execute_serialized_sql\(\) runs SQL from a string",
}


@pytest.mark.parametrize("query", list(REFUSED))
def test_refused_with_a_one_line_reason(hh: Workspace, query: str):
    with pytest.raises(QueryError, match=REFUSED[query]) as caught:
        run_query(hh, query)
    assert len(str(caught.value).splitlines()) == 1
    assert "only" in str(caught.value)  # says what does run here


def test_a_write_hidden_in_a_with_clause_is_refused(hh: Workspace, tmp_path: Path):
    """DuckDB types `WITH x AS (COPY ... TO ...) SELECT ...` as a SELECT and runs the COPY."""
    for target in (tmp_path / "out.csv", hh.datasets_dir / "out.csv"):
        with pytest.raises(QueryError, match="COPY inside a query writes"):
            run_query(hh, f"WITH x AS (COPY (SELECT 1) TO '{target}') SELECT * FROM x")
        assert not target.exists()
    with pytest.raises(QueryError, match="INSERT inside a query writes"):
        run_query(hh, "WITH x AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM x")


def test_no_path_is_granted_not_even_the_datasets_folder(hh: Workspace):
    """The datasets are reachable as views only: their files are not readable by path."""
    data = hh.resolve("hh").path / "data.parquet"
    for query in (f"SELECT * FROM read_parquet('{data}')", f"SELECT * FROM read_blob('{data}')",
                  f"SELECT * FROM glob('{hh.datasets_dir}/*')"):
        with pytest.raises(QueryError, match="SQL refused: Cannot access file"):
            run_query(hh, query)


def test_duckdb_guards_hold_without_the_statement_check(hh: Workspace, tmp_path: Path):
    """Underneath the statement check, the connection itself refuses files, extensions,
    writes and changes to its own configuration."""
    target = tmp_path / "out.csv"
    leak = pl.DataFrame({"secret": ["in a Python variable"]})
    con = open_sandbox(version_views(hh.list_datasets(all_versions=True)))
    try:
        assert con.execute("SELECT count(*) FROM hh").fetchall() == [(8,)]
        with pytest.raises(duckdb.CatalogException, match="leak"):  # no replacement scans
            con.sql("SELECT * FROM leak").fetchall()
        assert leak.height == 1
        settings = dict(con.execute(
            "SELECT name, value FROM duckdb_settings() WHERE name IN ('enable_external_access', "
            "'lock_configuration', 'autoload_known_extensions', 'autoinstall_known_extensions', "
            "'allowed_directories', 'allowed_paths', 'temp_directory')").fetchall())
        assert settings == {
            "enable_external_access": "false", "lock_configuration": "true",
            "autoload_known_extensions": "false", "autoinstall_known_extensions": "false",
            "allowed_directories": "[]", "allowed_paths": "[]", "temp_directory": "",
        }
        refused = {
            "SET enable_external_access = true": "configuration has been locked",
            "RESET enable_external_access": "configuration has been locked",
            "SET allowed_directories = ['/']": "configuration has been locked",
            "SET lock_configuration = false": "configuration has been locked",
            "SELECT * FROM read_text('/etc/passwd')": "Cannot access file",
            "SELECT * FROM glob('/*')": "Cannot access file",
            f"COPY (SELECT 1) TO '{target}'": "Cannot access file",
            f"WITH x AS (COPY (SELECT 1) TO '{target}') SELECT * FROM x": "Cannot access file",
            f"ATTACH '{tmp_path / 'x.duckdb'}'": "Cannot access file",
            "INSTALL httpfs": "Cannot access directory",
            "LOAD httpfs": "Loading external extensions is disabled",
        }
        for query, message in refused.items():
            with pytest.raises(duckdb.Error, match=message):
                con.execute(query).fetchall()
        assert not target.exists() and not (tmp_path / "x.duckdb").exists()
    finally:
        con.close()


def test_browse_pages_filters_orders_and_counts(hh: Workspace):
    everything = hh.read("hh")
    pages = [browse(hh, "hh", limit=3, offset=offset) for offset in (0, 3, 6)]
    assert all(total == 8 for _, total in pages)
    assert pl.concat([page for page, _ in pages]).equals(everything)  # file order, no gaps
    page, total = browse(hh, "hh@2", where="n >= 2 AND chosen LIKE '%Question%'",
                         order_by="n DESC", limit=2, offset=1)
    assert total == 6 and page["n"].to_list() == [6, 5]
    page, total = browse(hh, "hh", where="id IN (SELECT id FROM hh@1)")  # another version
    assert total == 3 and sorted(page["n"].to_list()) == [0, 1, 2]
    assert browse(hh, "hh", where="n > 100")[1] == 0


def test_browse_search_is_case_insensitive_over_text_and_messages(hh: Workspace):
    page, total = browse(hh, "hh", search="QUESTION 7")  # inside the prompt's messages
    assert total == 1 and page["n"].to_list() == [7]
    page, total = browse(hh, "hh", search="bad question 1")  # a plain string column
    assert total == 1 and page["rejected"].to_list() == ["bad Question 1"]
    assert browse(hh, "hh", search="user")[1] == 0  # role names and field names are not text
    page, total = browse(hh, "other", search="'; DROP VIEW hh; --")  # searched for, as text
    assert total == 0 and page.columns == hh.read("other").columns


@pytest.mark.parametrize("where, message", [
    ("1=1; DROP VIEW hh", "the WHERE clause contains ';'"),
    ("1=1) UNION ALL (SELECT * FROM hh", "closes a bracket it did not open"),
    ("n IN (SELECT 1", "leaves a bracket open"),
    ("chosen = 'abc", "leaves a quote or comment open"),
    ("id IN (SELECT content FROM read_text('/etc/passwd'))", 'Cannot access file "/etc/passwd"'),
    ("n IN (SELECT * FROM query('SELECT 1'))", r"query\(\) runs SQL from a string"),
])
def test_browse_refuses_a_where_clause_that_reaches_further(hh: Workspace, where: str,
                                                            message: str):
    with pytest.raises(QueryError, match=f"SQL refused: .*{message}"):
        browse(hh, "hh", where=where)


def test_json_lines_keep_nested_columns_as_json(hh: Workspace):
    frame = run_query(hh, "SELECT n, prompt, [n, n + 1] AS pair, {'a': n} AS s FROM hh@1 "
                          "ORDER BY n LIMIT 1")
    row = json.loads(next(json_lines(frame)))
    assert row == {"n": 0, "prompt": [{"role": "user", "content": "Question 0"}],
                   "pair": [0, 1], "s": {"a": 0}}


def test_cli_sql_prints_json_lines_and_refuses_in_one_line(hh: Workspace):
    out = cli("sql", "SELECT n, prompt FROM hh@1 ORDER BY n", "--json", workspace=hh.root)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["n"] for r in rows] == [0, 1, 2] and rows[0]["prompt"][0]["role"] == "user"
    refused = cli("sql", "SELECT * FROM read_text('/etc/passwd')", workspace=hh.root)
    assert refused.returncode == 1 and "root:" not in refused.stdout
    assert refused.stderr.startswith("error: SQL refused: ")
    assert len(refused.stderr.strip().splitlines()) == 1
