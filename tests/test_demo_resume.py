"""The demo pipeline, scaled down, killed with SIGKILL while it samples responses: the
restart repeats no model call and ends with the dataset an uninterrupted run makes."""

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
from conftest import DATA, ROOT, cache_entries, cli

pytestmark = pytest.mark.slow
N = 6  # questions


def small_demo(tmp_path: Path) -> tuple[Path, int]:
    """data/pipelines/demo.yaml with its sizes cut down, every step kept; and its samples
    per prompt."""
    spec = yaml.safe_load((DATA / "pipelines" / "demo.yaml").read_text())
    steps = {next(iter(s)): next(iter(s.values())) for s in spec["steps"]}
    assert list(steps) == ["sample_responses", "judge", "pairs", "rationale"]
    questions = (DATA / "demo" / "questions.jsonl").read_text().splitlines()[:N]
    (tmp_path / "questions.jsonl").write_text("\n".join(questions) + "\n")
    spec["input"] = "questions.jsonl"
    # at 12 tokens nearly every answer is cut off: keep them, or no pair would be left
    steps["sample_responses"].update(max_new_tokens=12, batch_size=1, drop_truncated=False)
    steps["rationale"].update(max_new_tokens=12)
    spec["steps"] = [{name: options} for name, options in steps.items()]
    path = tmp_path / "demo_small.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path, steps["sample_responses"]["n"]


def test_demo_killed_while_sampling_resumes_without_repeating_calls(tmp_path: Path):
    pipeline, samples = small_demo(tmp_path)
    env = {"OMP_NUM_THREADS": "1"}  # two busy processes on two cores slow each other badly
    reference = cli("run", str(pipeline), workspace=tmp_path / "ref", env=env, timeout=600)
    assert reference.returncode == 0, reference.stderr
    expected = pl.read_parquet(tmp_path / "ref" / "datasets" / "demo_preferences" / "v1"
                               / "data.parquet")

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", "--workspace", str(killed),
                             "run", str(pipeline)], cwd=ROOT, env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if cache_entries(killed) >= 2 * samples:  # sampling under way
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed while sampling"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    at_kill = cache_entries(killed)
    assert not (killed / "datasets" / "demo_preferences").exists()

    resumed = cli("run", str(pipeline), workspace=killed, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    run_id = next(r["run_id"] for r in json.loads(cli("runs", "--json", workspace=killed).stdout)
                  if r["status"] == "finished")
    steps = json.loads(cli("runs", run_id, "--json", workspace=killed).stdout)["steps"]
    by_name = {s["step"]: s for s in steps}
    sampled = by_name["sample_responses"]["detail"]["model_calls"]
    done_before = at_kill // samples  # rows whose samples were committed
    assert sampled["hits"] >= done_before > 0
    assert sampled["computed"] == by_name["sample_responses"]["rows_in"] - sampled["hits"]
    # every model call made once: the same number of cache entries as the uninterrupted run
    assert cache_entries(killed) == cache_entries(tmp_path / "ref")
    got = pl.read_parquet(killed / "datasets" / "demo_preferences" / "v1" / "data.parquet")
    assert got.equals(expected)
