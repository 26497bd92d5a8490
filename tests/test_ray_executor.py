"""`--executor ray` on a real local Ray cluster: the same rows as the local executor for a
row-local step, a model step on the embedded model and a global step; a run killed
mid-step resumes from the batches its Ray workers finished."""

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

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")

ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # the same kernels in both executors' model calls


@pytest.fixture
def pipeline(tmp_path: Path) -> Path:
    lines = (DATA / "benchmarks/ifeval_input_data.jsonl").read_text().splitlines()[:12]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(lines + lines[:2]) + "\n")  # two repeats for dedup
    path = tmp_path / "ray.yaml"
    path.write_text(yaml.safe_dump({
        "name": "ray_small", "seed": 0, "input": str(prompts), "batch_size": 2,
        "models": {"default": {"backend": "transformers", "model": "embedded"}},
        "steps": [{"filter": {"where": {"prompt": {"min_chars": 20}}}},
                  {"generate": {"max_new_tokens": 12, "batch_size": 1}},
                  {"dedup_exact": {"columns": ["prompt"]}}],
        "output": "answers"}))
    return path


def read_output(workspace: Path) -> pl.DataFrame:
    return pl.read_parquet(workspace / "datasets" / "answers" / "v1" / "data.parquet")


def settled_count(folder: Path, pattern: str, quiet: float = 5.0) -> int:
    """Files matching `pattern` once none has appeared for `quiet` seconds: Ray's workers
    live outside the killed driver's process group and may finish the batch they hold."""
    count, since = len(list(folder.glob(pattern))), time.monotonic()
    while time.monotonic() - since < quiet:
        time.sleep(0.2)
        now = len(list(folder.glob(pattern)))
        if now != count:
            count, since = now, time.monotonic()
    return count


def finished_run_steps(workspace: Path) -> list[dict]:
    runs = json.loads(cli("runs", "--json", workspace=workspace).stdout)
    run_id = next(r["run_id"] for r in runs if r["status"] == "finished")
    return json.loads(cli("runs", run_id, "--json", workspace=workspace).stdout)["steps"]


def test_ray_gives_the_local_rows_and_resumes_from_finished_batches(tmp_path: Path,
                                                                     pipeline: Path):
    local = cli("run", str(pipeline), workspace=tmp_path / "local", env=ONE_THREAD, timeout=600)
    assert local.returncode == 0, local.stderr
    expected = read_output(tmp_path / "local")
    assert expected.height == 12 and expected["response"].str.len_chars().min() > 0

    killed = tmp_path / "ray"
    command = [sys.executable, "-m", "workbench.cli", "--workspace", str(killed), "run",
               str(pipeline), "--executor", "ray"]
    proc = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **ONE_THREAD},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # the driver and the cluster it starts
    partial = killed / "cache" / "checkpoints" / "ray_small"
    deadline = time.monotonic() + 300
    finished: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None and not finished:
        finished = list(partial.glob("02-generate-*.partial/batch-*.parquet"))
        time.sleep(0.05)
    assert finished and proc.poll() is None, (
        "the Ray run ended before a generate batch finished: "
        + (proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "timeout"))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = settled_count(partial, "02-generate-*.partial/batch-*.parquet")
    assert 1 <= done_before < 7

    resumed = cli("run", str(pipeline), "--executor", "ray", workspace=killed, env=ONE_THREAD,
                  timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    generate = finished_run_steps(killed)[1]
    assert generate["detail"]["reused_batches"] == done_before
    assert generate["detail"]["batches"] == 7
    calls, earlier = generate["detail"]["model_calls"], generate["detail"]["reused_calls"]
    # one call a row (two rows repeat a prompt: greedy calls share the cache); the reused
    # batches' calls come from the notes their Ray workers wrote, and this run made only
    # the calls of the other rows
    assert earlier["computed"] + earlier["hits"] == 2 * done_before
    assert calls["computed"] + calls["hits"] == 14 - 2 * done_before
    assert calls["failures"] == earlier["failures"] == 0
    got = read_output(killed)
    assert got.equals(expected), "Ray and local executors gave different rows"
    assert "resumed" in resumed.stdout


def test_without_ray_the_error_says_how_to_install(monkeypatch: pytest.MonkeyPatch):
    from workbench.errors import PipelineError
    from workbench.executors import get_executor

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(PipelineError, match=r"pip install 'preference-workbench\[ray\]'"):
        get_executor("ray")
