"""The console script: JSON outputs, errors as one line, and a --help that imports nothing heavy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import DATA, cli

HEAVY = ("polars", "duckdb", "torch", "transformers", "datasets", "pyarrow", "streamlit",
         "sentence_transformers", "faiss", "vllm")


def test_help_imports_no_heavy_library():
    code = ("import sys, runpy; sys.argv=['workbench','--help']\n"
            "try:\n    runpy.run_module('workbench.cli', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "run" in out.stdout and "import" in out.stdout and "export" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_every_command_has_help():
    for command in ("run", "import", "datasets", "show", "sql", "transforms", "export", "ui", "runs",
                    "loop"):
        result = cli(command, "--help")
        assert result.returncode == 0 and "Usage" in result.stdout, command


def test_import_datasets_show_sql_json(tmp_path: Path):
    ws = tmp_path / "ws"
    result = cli("import", str(DATA / "hh_rlhf_harmless_test_600.jsonl.gz"), "--name", "hh",
                 workspace=ws)
    assert result.returncode == 0, result.stderr
    listed = json.loads(cli("datasets", "--json", workspace=ws).stdout)
    assert len(listed) == 1
    assert set(listed[0]) == {"name", "version", "kind", "rows", "created_at"}
    assert (listed[0]["name"], listed[0]["kind"], listed[0]["rows"]) == ("hh", "preference", 600)
    shown = cli("show", "hh", "--limit", "3", "--json", workspace=ws).stdout.splitlines()
    rows = [json.loads(line) for line in shown]
    assert len(rows) == 3 and rows[0]["prompt"][-1]["role"] == "user"
    counted = cli("sql", "SELECT count(*) AS n FROM hh WHERE len(prompt) > 1", "--json",
                  workspace=ws)
    assert json.loads(counted.stdout)["n"] > 0
    refused = cli("sql", "DROP VIEW hh", workspace=ws)
    assert refused.returncode == 1 and "read-only" in refused.stderr


def test_transforms_json_lists_names_kinds_fields():
    items = json.loads(cli("transforms", "--json").stdout)
    by_name = {t["name"]: t for t in items}
    assert {"sql", "filter", "dedup_exact", "sample", "select_columns", "rename", "split"} <= set(by_name)
    assert by_name["sample"]["scope"] == "global"
    assert {f["name"] for f in by_name["sample"]["fields"]} == {"n", "fraction", "seed"}
    assert by_name["filter"]["consumes"] == "any"
    verify = {f["name"]: f for f in by_name["verify"]["fields"]}
    assert {"checker", "answer", "tests", "entry_point", "include_reasoning"} <= set(verify)
    assert verify["checker"]["required"] and by_name["verify"]["scope"] == "row"
    skill = {f["name"]: f for f in by_name["agentinstruct"]["fields"]}["skill"]
    skills = {"reading_comprehension", "text_modification", "tool_use", "coding",
              "open_domain_qa", "creative_content", "analytical_reasoning"}
    assert set(skill["choices"]) == skills and skill["default"] == "reading_comprehension"
    assert all(name in skill["description"] for name in skills)
    assert "choices" not in verify["checker"]  # only where a field declares them


def test_errors_are_one_line_with_nonzero_status(tmp_path: Path):
    for args in (("show", "missing"), ("run", str(tmp_path / "nope.yaml")),
                 ("export", "missing", "--out", str(tmp_path / "o"))):
        result = cli(*args, workspace=tmp_path / "ws")
        assert result.returncode == 1
        assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1


def _strict_json(text: str):
    """JSON as other parsers read it: bare NaN / Infinity (Python's extension) are errors."""
    def refuse(constant: str):
        raise AssertionError(f"not JSON: bare {constant} in {text[:200]!r}")

    return json.loads(text, parse_constant=refuse)


def test_every_json_output_is_valid_json(tmp_path: Path):
    """A dataset written from Python may hold NaN and Infinity; --json writes them as null."""
    import polars as pl

    from workbench.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    prompt = [[{"role": "user", "content": f"q{i}"}] for i in range(3)]
    ws.write_dataset("s", pl.DataFrame({
        "prompt": prompt, "chosen": ["a long answer", "bb", "c"], "rejected": ["x", "yy", "zz"],
        "chosen_score": [float("nan"), float("inf"), 1.0],
        "scores": [[1.0, float("-inf")], [0.5], None]}), "preference")
    shown = cli("show", "s", "--json", workspace=ws.root)
    assert shown.returncode == 0, shown.stderr
    rows = [_strict_json(line) for line in shown.stdout.splitlines()]
    assert [r["chosen_score"] for r in rows] == [None, None, 1.0]
    assert rows[0]["scores"] == [1.0, None]
    queried = cli("sql", "SELECT chosen_score, 'NaN'::DOUBLE AS n, 1e308 * 10 AS big FROM s",
                  "--json", workspace=ws.root)
    assert queried.returncode == 0, queried.stderr
    assert [_strict_json(line)["n"] for line in queried.stdout.splitlines()] == [None] * 3
    for args in (["datasets", "--json"], ["datasets", "--json", "--all"], ["runs", "--json"],
                 ["transforms", "--json"],
                 ["report", "length-bias", "s", "--json", "--bootstrap", "20"]):
        result = cli(*args, workspace=ws.root)
        assert result.returncode == 0, (args, result.stderr)
        _strict_json(result.stdout)
