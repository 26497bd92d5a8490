"""The selection steps in a real pipeline: every drop is counted under a named reason, the
dropped rows keep their explanations, reports reach the run log and the dataset card."""

from __future__ import annotations

from pathlib import Path

from conftest import DATA

from workbench.engine import parts
from workbench.engine.finalize import DROPPED_DIR
from workbench.io.export import export_dataset
from workbench.pipeline import build_pipeline
from workbench.runner import run_pipeline


def test_reasons_reports_and_card(tmp_path: Path, ws):
    spec = {
        "name": "select", "seed": 0, "input": str(DATA / "hh_rlhf_harmless_test_600.jsonl.gz"),
        "steps": [
            {"quality_filter": {"min_chars": 20, "refusals": True}},
            {"dedup_minhash": {"columns": ["prompt"], "threshold": 0.6}},
            {"decontaminate": {}},
            {"length_bias": {"bootstrap": 200}},
        ],
        "output": "selected",
    }
    result = run_pipeline(build_pipeline(spec), ws, progress=False)
    for step in result.steps:
        assert step.rows_in - step.rows_out == sum(step.dropped.values()), step
        assert not any(reason.endswith("not kept") for reason in step.dropped)
    quality, dedup, decontam, bias = result.steps
    assert any(r.startswith("chosen shorter than 20") for r in quality.dropped)
    assert any(r.endswith("is a refusal") for r in quality.dropped)
    assert dedup.dropped == {"near-duplicate (MinHash Jaccard > 0.6)": dedup.rows_in - dedup.rows_out}
    assert dedup.rows_out < dedup.rows_in
    dropped = parts.scan(dedup.checkpoint / DROPPED_DIR).collect()
    assert dropped["duplicate_of"].is_not_null().all() and (dropped["similarity"] > 0.6).all()
    logs = ws.step_logs(result.run_id)
    assert logs[1]["detail"]["report"]["dropped"] == dropped.height
    assert set(logs[2]["detail"]["report"]["benchmarks"]) == {
        "mt_bench", "gsm8k", "humaneval", "ifeval", "mmlu", "math", "bbh", "truthfulqa"}
    report = logs[3]["detail"]["report"]
    assert report["n"] == bias.rows_in == bias.rows_out
    lineage = ws.resolve("selected").lineage
    assert lineage["steps"][3]["report"]["coef"] == report["coef"]
    export_dataset(ws, "selected", tmp_path / "out", fmt="jsonl")
    card = (tmp_path / "out" / "README.md").read_text()
    assert "## Length bias" in card and f"over {report['n']} pairs" in card
