"""Every typed query is bounded: a time limit (the clock, Ctrl-C) and a memory limit, each
reported as the limit that stopped it; and the `filter` step's SQL expressions read nothing
but the frame (polars' SQL would run a subquery over `read_csv` while building the filter)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from conftest import ROOT, cli

from transforms.filter import FilterConfig, parse_expression
from workbench.errors import QueryError
from workbench.query.query import browse, run_query
from workbench.query.query_limits import Limits, parse_memory
from workbench.schema import user
from workbench.workspace import Workspace

HUGE = "SELECT count(*) FROM range(1000000000000)"


@pytest.fixture
def hh(ws: Workspace) -> Workspace:
    frame = pl.DataFrame({"q": [f"Question {i}" for i in range(5)]}).select(
        user("q").alias("prompt"), pl.format("good {}", "q").alias("chosen"),
        pl.format("bad {}", "q").alias("rejected"))
    ws.write_dataset("hh", frame, "preference")
    return ws


def test_a_query_past_its_time_limit_is_stopped(hh: Workspace):
    started = time.monotonic()
    with pytest.raises(QueryError, match=r"query stopped after 1 s"):
        run_query(hh, HUGE, limits=Limits(timeout=1))
    assert time.monotonic() - started < 30  # the unbounded query runs for hours
    # the typed clauses of the app's browse are bounded the same way
    with pytest.raises(QueryError, match=r"query stopped after 1 s"):
        browse(hh, "hh", where="(SELECT count(*) FROM range(1000000000000)) > 0",
               limits=Limits(timeout=1))
    assert run_query(hh, "SELECT count(*) AS n FROM hh", limits=Limits(timeout=1))["n"][0] == 5


def test_a_query_past_its_memory_limit_fails_and_says_so(hh: Workspace):
    with pytest.raises(QueryError, match=r"query needs more than 64 MB of memory"):
        run_query(hh, "SELECT list(range) AS l FROM range(300000000)",
                  limits=Limits(timeout=120, memory=64 << 20))


def test_a_result_past_the_memory_limit_fails_before_it_is_all_held(hh: Workspace):
    """DuckDB's memory_limit does not count the result handed to Python: the batches do."""
    with pytest.raises(QueryError, match=r"needs more than 64 MB of memory for its result"):
        run_query(hh, "SELECT range FROM range(300000000)",
                  limits=Limits(timeout=120, memory=64 << 20))


def test_memory_sizes_parse_or_fail_clearly():
    assert parse_memory("512MB") == 512 << 20 and parse_memory("4GB") == 4 << 30
    assert parse_memory("2GiB") == 2 << 30
    for bad in ("lots", "1KB", "-5GB"):
        with pytest.raises(QueryError, match="memory limit"):
            parse_memory(bad)


@pytest.mark.slow  # subprocesses end to end: `make test` only
def test_cli_timeout_exits_1_with_the_message(hh: Workspace):
    started = time.monotonic()
    result = cli("sql", HUGE, "--timeout", "5", workspace=hh.root, timeout=60)
    assert time.monotonic() - started < 10 + 5  # 10 s, plus the interpreter's start here
    assert result.returncode == 1
    assert "query stopped after 5 s" in result.stderr and "--timeout" in result.stderr
    small = cli("sql", "SELECT list(range) FROM range(300000000)", "--memory-limit", "64MB",
                workspace=hh.root, timeout=120)
    assert small.returncode == 1 and "needs more than 64 MB of memory" in small.stderr


@pytest.mark.slow  # subprocesses end to end: `make test` only
def test_ctrl_c_cancels_the_query(hh: Workspace):
    proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", "--workspace",
                             str(hh.root), "sql", HUGE], cwd=ROOT, stderr=subprocess.PIPE,
                            text=True, env=os.environ.copy())
    time.sleep(4)  # the interpreter starts and the query is running
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "query cancelled" in err


@pytest.mark.parametrize("expr", [
    "prompt_text IN (SELECT * FROM read_csv('{secret}'))",
    "EXISTS (SELECT 1 FROM read_csv('{secret}'))",
    "read_csv('{secret}') IS NULL",
    "prompt_text = (SELECT max(column0) FROM read_ndjson('{secret}'))",
    "prompt_text IN (SELECT 1)",
    "length(prompt_text) > 1; SELECT 1",
])
def test_filter_sql_expressions_read_nothing(tmp_path: Path, expr: str):
    secret = tmp_path / "secret.csv"
    secret.write_text("column0\nTOP-SECRET-LINE\n")
    text = expr.format(secret=secret)
    with pytest.raises(ValueError) as refused:
        parse_expression(text)
    assert "refused" in str(refused.value)
    assert "TOP-SECRET-LINE" not in str(refused.value)
    with pytest.raises(ValueError) as invalid:  # the step's config check, at validation
        FilterConfig(expr=text)
    assert "TOP-SECRET-LINE" not in str(invalid.value)


def test_filter_sql_expressions_over_the_frame_still_work():
    frame = pl.DataFrame({"x": ["a", "bbb", "cc"], "n": [1, 5, 3]})
    for text, kept in [("length(x) > 1", ["bbb", "cc"]), ("n BETWEEN 2 AND 5 AND x LIKE 'b%'",
                                                          ["bbb"]),
                       ("CASE WHEN n > 2 THEN true ELSE false END", ["bbb", "cc"])]:
        assert frame.filter(parse_expression(text))["x"].to_list() == kept
