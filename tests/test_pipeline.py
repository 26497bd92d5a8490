"""The runner: whole-pipeline validation, checkpoints, resume, run log, crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml
from conftest import DATA, ROOT, cli

from workbench.engine import parts
from workbench.errors import PipelineError
from workbench.pipeline import build_pipeline, load_pipeline
from workbench.runner import run_pipeline
from workbench.workspace import Workspace

HH = str(DATA / "hh_rlhf_harmless_test_600.jsonl.gz")


def pipeline(steps: list, **extra) -> dict:
    return {"name": "t", "input": HH, "steps": steps, "output": "out", **extra}


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize(("steps", "fragments"), [
    ([{"filtr": {"expr": "true"}}], ["step 1", "unknown step 'filtr'", "filter"]),
    ([{"sample": {"n": 5}}, {"filter": {"exprr": "true"}}], ["step 2 (filter)", "exprr"]),
    ([{"sample": {"n": 5, "fraction": 0.5}}], ["step 1 (sample)", "exactly one"]),
    ([{"filter": {"expr": "pl.col('x') >"}}], ["step 1 (filter)", "field 'expr'"]),
    ([{"filter": {"expr": "length(chosen) >"}}], ["step 1 (filter)", "bad SQL expression"]),
    ([{"split": {"test_size": 2}}], ["step 1 (split)", "test_size"]),
])
def test_invalid_pipelines_fail_before_running(steps, fragments):
    with pytest.raises(PipelineError) as err:
        build_pipeline(pipeline(steps))
    for fragment in fragments:
        assert fragment in str(err.value)


def test_kind_mismatch_is_caught_before_anything_runs(ws):
    spec = build_pipeline(pipeline([{"sql": {"query": "SELECT * FROM input", "kind": "sft"}},
                                    {"filter": {"expr": "true"}}]))
    from workbench.pipeline import check_kinds

    assert check_kinds(spec, "preference") == ["sft", "sft"]
    with pytest.raises(PipelineError, match="needs input rows"):
        check_kinds(spec, None)


def test_cli_reports_bad_yaml_with_line(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: t\nsteps:\n  - filter: {expr: [unclosed\n")
    result = cli("run", str(path), workspace=tmp_path / "ws")
    assert result.returncode == 1
    assert "line" in result.stderr and "invalid YAML" in result.stderr and str(path) in result.stderr


def test_step_output_missing_required_column_names_step_and_column(ws):
    spec = build_pipeline(pipeline([{"select_columns": {"columns": ["prompt", "chosen"]}}]))
    with pytest.raises(PipelineError) as err:
        run_pipeline(spec, ws, progress=False)
    assert "step 1 (select_columns)" in str(err.value) and "'rejected'" in str(err.value)
    assert ws.runs()[0]["status"] == "failed"


STEPS = [
    {"filter": {"where": {"chosen": {"min_chars": 20}}}},
    {"dedup_exact": {"columns": ["prompt"]}},
    {"sample": {"n": 300}},
    {"split": {"test_size": 0.2}},
]


def test_run_log_resume_and_partial_rerun(ws):
    first = run_pipeline(build_pipeline(pipeline(STEPS, batch_size=100)), ws, progress=False)
    assert [s.status for s in first.steps] == ["ran"] * 4
    f = first.steps[0]
    assert f.rows_in == 600 and f.rows_in - f.rows_out == sum(f.dropped.values()) > 0
    assert list(f.dropped) == ["chosen shorter than 20 chars"]
    assert first.output.rows == 300 and first.output.version == 1
    logged = ws.step_logs(first.run_id)
    assert [(r["step"], r["rows_in"], r["rows_out"]) for r in logged] == [
        (s.step, s.rows_in, s.rows_out) for s in first.steps]
    assert all(r["seconds"] >= 0 for r in logged)

    again = run_pipeline(build_pipeline(pipeline(STEPS, batch_size=100)), ws, progress=False)
    assert [s.status for s in again.steps] == ["cached"] * 4
    assert again.up_to_date and again.output.version == 1

    changed = [*STEPS[:2], {"sample": {"n": 200}}, STEPS[3]]
    third = run_pipeline(build_pipeline(pipeline(changed, batch_size=100)), ws, progress=False)
    assert [s.status for s in third.steps] == ["cached", "cached", "ran", "ran"]
    assert third.output.version == 2 and third.output.rows == 200
    assert ws.read("out@2")["split"].value_counts().sort("split")["count"].to_list() == [40, 160]


def test_dropped_rows_are_kept_for_inspection(ws, shared: Path):
    spec = build_pipeline({"name": "d", "input": str(shared / "fastchat/dummy_conversation.json"),
                           "steps": [{"dedup_exact": {}}], "output": "conv"})
    result = run_pipeline(spec, ws, progress=False)
    step = result.steps[0]
    dropped = parts.scan(step.checkpoint / "dropped").collect()
    kept = ws.read("conv")
    assert step.dropped == {"duplicate": dropped.height} and dropped.height > 100
    assert kept.height + dropped.height == 500
    # every dropped row points at a kept row with the same normalised prompt
    assert set(dropped["duplicate_of"].to_list()) <= set(kept["id"].to_list())


KILL_STEPS = [
    {"filter": {"where": {"response": {"min_chars": 10}}}},
    {"filter": {"expr": "pl.col('response').str.contains('####')"}},
    {"dedup_exact": {"columns": ["prompt"]}},
]


def test_sigkill_mid_step_then_resume_gives_same_rows(tmp_path: Path, shared: Path):
    data = {"name": "k", "input": str(shared / "gsm8k/train.jsonl"), "batch_size": 10,
            "steps": KILL_STEPS, "output": "gsm"}
    path = write(tmp_path, data)
    reference = run_pipeline(load_pipeline(path), Workspace(tmp_path / "ref"), progress=False)
    expected = reference.output.path / "data.parquet"

    killed_ws = tmp_path / "killed"
    command = [sys.executable, "-m", "workbench.cli", "--workspace", str(killed_ws), "run", str(path)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    checkpoints = killed_ws / "cache" / "checkpoints" / "k"
    deadline = time.monotonic() + 120
    partial: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        partial = [p for p in checkpoints.glob("01-filter-*.partial") if len(list(p.glob("*.parquet"))) >= 20]
        if partial:
            break
        time.sleep(0.01)
    assert partial and proc.poll() is None, "the run ended before it could be killed mid-step"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed_ws / "datasets" / "gsm").exists()  # no half-written dataset
    done_before = len(list(partial[0].glob("batch-*.parquet")))

    resumed = cli("run", str(path), workspace=killed_ws)
    assert resumed.returncode == 0, resumed.stderr
    listing = json.loads(cli("datasets", "--json", workspace=killed_ws).stdout)
    assert [(d["name"], d["version"]) for d in listing] == [("gsm", 1)]
    got = pl.read_parquet(killed_ws / "datasets" / "gsm" / "v1" / "data.parquet")
    assert got.equals(pl.read_parquet(expected))
    runs = json.loads(cli("runs", "--json", workspace=killed_ws).stdout)
    assert sorted(r["status"] for r in runs) == ["finished", "interrupted"]
    finished = next(r for r in runs if r["status"] == "finished")
    log = json.loads(cli("runs", finished["run_id"], "--json", workspace=killed_ws).stdout)["steps"]
    assert log[0]["status"] == "resumed"
    assert log[0]["detail"]["reused_batches"] >= done_before


def test_a_second_concurrent_run_is_refused(tmp_path: Path):
    from workbench.store.atomic import file_lock

    path = write(tmp_path, {"name": "busy", "input": str(DATA / "benchmarks/gsm8k_test.jsonl"),
                            "steps": [{"sample": {"n": 5}}], "output": "o"})
    ws = tmp_path / "ws"
    with file_lock(ws / "cache" / "checkpoints" / "busy" / ".lock"):  # as a live run holds it
        refused = cli("run", str(path), workspace=ws)
    assert refused.returncode == 1 and "already running" in refused.stderr
    assert cli("run", str(path), workspace=ws).returncode == 0


def test_a_duplicate_yaml_key_is_an_error_naming_key_and_line(tmp_path: Path):
    """PyYAML keeps the last of two equal keys; here the second `output:` would have won."""
    path = tmp_path / "dup.yaml"
    path.write_text(f"name: t\ninput: {HH}\noutput: kept\nsteps:\n  - sample: {{n: 3}}\n"
                    "output: other\n")
    result = cli("run", str(path), "--no-progress", workspace=tmp_path / "ws")
    assert result.returncode == 1
    assert f"{path}, line 6: invalid YAML (duplicate key 'output' (first given on line 3))" \
        in result.stderr
    nested = tmp_path / "nested.yaml"
    nested.write_text(f"name: t\ninput: {HH}\nsteps:\n  - sample: {{n: 3, n: 4}}\n")
    result = cli("run", str(nested), "--no-progress", workspace=tmp_path / "ws")
    assert result.returncode == 1 and "line 4" in result.stderr and "'n'" in result.stderr
    assert not (tmp_path / "ws" / "datasets").exists() or not any(
        (tmp_path / "ws" / "datasets").iterdir())


def test_the_taxonomy_file_refuses_duplicate_keys_too(tmp_path: Path):
    from transforms._support.agentinstruct_taxonomy import load_skills
    from workbench.errors import InputError

    path = tmp_path / "skills.yaml"
    path.write_text("skills:\n  a: {instruction: x}\n  a: {instruction: y}\n")
    with pytest.raises(InputError, match=r"line 3: invalid YAML \(duplicate key 'a'"):
        load_skills(path)


def test_a_bad_output_name_fails_before_any_step_runs(tmp_path: Path):
    workspace = tmp_path / "ws"
    path = write(tmp_path, pipeline([{"sample": {"n": 3}}]) | {"output": "../../evil"})
    result = cli("run", str(path), "--no-progress", workspace=workspace)
    assert result.returncode == 1
    assert "field 'output': invalid dataset name '../../evil'" in result.stderr
    checkpoints = workspace / "cache" / "checkpoints"
    assert not checkpoints.exists() or not any(checkpoints.rglob("*-sample-*"))
    assert not (tmp_path.parent / "evil").exists()
    with pytest.raises(PipelineError, match="invalid dataset name"):
        build_pipeline(pipeline([{"sample": {"n": 3}}]) | {"output": "out\n"})


@pytest.mark.parametrize(("options", "wants"), [
    ({}, "'candidates'"), ({"method": "sft_vs_generated"}, "'sft'")])
def test_pairs_on_preference_rows_fails_before_any_step_runs(ws, options, wants):
    spec = build_pipeline(pipeline([{"sample": {"n": 3}}, {"pairs": options}]))
    with pytest.raises(PipelineError) as err:
        run_pipeline(spec, ws, progress=False)
    assert f"step 2 (pairs) consumes {wants} rows but receives 'preference' rows" in str(err.value)
    assert ws.runs() == []  # refused before a run was started, let alone a step
    judge = build_pipeline(pipeline([{"judge": {"method": "llm_pairwise"}}]) | {
        "models": {"default": {"backend": "transformers"}}})
    from workbench.pipeline import check_kinds

    with pytest.raises(PipelineError, match="consumes 'preference' rows but receives 'sft'"):
        check_kinds(judge, "sft")
