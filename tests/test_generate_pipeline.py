"""Model steps inside pipelines: the embedded model, the call cache, crash safety."""

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

from workbench.errors import PipelineError
from workbench.pipeline import build_pipeline

pytestmark = pytest.mark.slow


def gen_pipeline(input_path: str, **generate) -> dict:
    return {
        "name": "gen", "seed": 0, "input": input_path, "batch_size": 4,
        "models": {"default": {"backend": "transformers", "model": "embedded"}},
        "steps": [{"generate": {"max_new_tokens": 8, "batch_size": 1, **generate}}],
        "output": "answers",
    }


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    lines = (DATA / "benchmarks/ifeval_input_data.jsonl").read_text().splitlines()[:10]
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_validation_checks_models_before_loading():
    bad = gen_pipeline("x.jsonl", model="judge")
    with pytest.raises(PipelineError, match="no model 'judge'"):
        build_pipeline(bad)
    vllm = gen_pipeline("x.jsonl")
    vllm["models"]["default"] = {"backend": "vllm", "model": "x"}
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(PipelineError, match=r"pip install 'preference-workbench\[gpu\]'"):
            build_pipeline(vllm)


def test_sigkill_during_generation_repeats_no_finished_call(tmp_path: Path, prompts: Path):
    path = tmp_path / "gen.yaml"
    path.write_text(yaml.safe_dump(gen_pipeline(str(prompts))))
    reference = cli("run", str(path), workspace=tmp_path / "ref")
    assert reference.returncode == 0, reference.stderr
    expected = pl.read_parquet(tmp_path / "ref" / "datasets" / "answers" / "v1" / "data.parquet")
    assert expected.height == 10 and expected["response"].str.len_chars().min() > 0

    ws = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", "--workspace", str(ws), "run",
                             str(path)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and cache_entries(ws) < 4:
        time.sleep(0.05)
    assert proc.poll() is None, "generation finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = cache_entries(ws)
    assert 4 <= finished < 10

    resumed = cli("run", str(path), workspace=ws)
    assert resumed.returncode == 0, resumed.stderr
    runs = json.loads(cli("runs", "--json", workspace=ws).stdout)
    run_id = next(r["run_id"] for r in runs if r["status"] == "finished")
    calls = json.loads(cli("runs", run_id, "--json", workspace=ws).stdout)["steps"][0]["detail"]["model_calls"]
    assert calls["computed"] == 10 - finished  # no finished row went to the model again
    assert calls["failures"] == 0
    got = pl.read_parquet(ws / "datasets" / "answers" / "v1" / "data.parquet")
    assert got.equals(expected)


def test_rows_with_the_same_prompt_are_sampled_independently(tmp_path: Path, ws):
    from workbench.runner import run_pipeline

    source = tmp_path / "same.jsonl"
    source.write_text('{"prompt": "Name a fruit."}\n' * 3)
    spec = build_pipeline(gen_pipeline(str(source), temperature=1.0, max_new_tokens=6,
                                       batch_size=3))
    run_pipeline(spec, ws, progress=False)
    answers = ws.read("answers")
    assert answers.height == 3 and answers["response"].n_unique() == 3
    assert answers["parent_id"].n_unique() == 3  # three instruction rows, three sft rows


def test_missing_capability_is_a_validation_error():
    """A step needing hidden states cannot use an openai model: said before anything loads."""
    from pydantic import Field

    from workbench.transform import Context, ModelName, StepConfig, transform

    class ProbeConfig(StepConfig):
        model: ModelName = Field("default")

    @transform("test_hidden_probe", scope="row", needs=("hidden_states",), config=ProbeConfig)
    def probe(frame: pl.LazyFrame, config: ProbeConfig, ctx: Context) -> pl.LazyFrame:
        return frame

    spec = {"name": "p", "input": "x.jsonl", "steps": [{"test_hidden_probe": {}}],
            "models": {"default": {"backend": "openai", "model": "m"}}}
    with pytest.raises(PipelineError, match=r"step 1 \(test_hidden_probe\).*cannot do hidden_states"):
        build_pipeline(spec)
    spec["models"]["default"] = {"backend": "transformers", "model": "embedded"}
    assert build_pipeline(spec).steps[0].name == "test_hidden_probe"


def test_embed_step_writes_unit_vectors_later_steps_reuse(tmp_path: Path, ws):
    from workbench.runner import run_pipeline

    spec = build_pipeline({
        "name": "emb", "input": str(DATA / "benchmarks/mt_bench_questions.jsonl"), "batch_size": 16,
        "steps": [{"sample": {"n": 24}}, {"embed": {"column": "prompt"}},
                  {"sql": {"query": "SELECT *, list_inner_product(embedding, embedding) AS norm2 "
                                    "FROM input"}}],
        "output": "embedded_questions"})
    result = run_pipeline(spec, ws, progress=False)
    frame = ws.read("embedded_questions")
    assert frame.schema["embedding"] == pl.List(pl.Float32)
    assert frame["embedding"].list.len().unique().to_list() == [384]
    assert ((frame["norm2"] - 1).abs() < 1e-4).all()
    assert result.steps[1].detail["batches"] == 2
