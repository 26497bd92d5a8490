"""Checkpoints key on the transform's code: an edited transform re-runs its step and the steps
after it, and `--fresh` recomputes everything on purpose."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import polars as pl
import pytest
from conftest import DATA, cli

from workbench.pipeline import build_pipeline
from workbench.runner import run_pipeline

HH = str(DATA / "hh_rlhf_harmless_test_600.jsonl.gz")

PLUGIN = '''
"""A user's own transform, as a plugin module would define it."""
import polars as pl

from workbench.transform import Context, StepConfig, transform


class TagConfig(StepConfig):
    pass


@transform("tag_rows_test", scope="row", config=TagConfig)
def tag_rows(frame: pl.LazyFrame, config: TagConfig, ctx: Context) -> pl.LazyFrame:
    return frame.with_columns(pl.lit("{tag}").alias("tag"))
'''


@pytest.fixture
def plugin(tmp_path: Path):
    folder = tmp_path / "plugins"
    folder.mkdir()
    path = folder / "wb_tag_plugin.py"
    path.write_text(PLUGIN.replace("{tag}", "old"))
    sys.path.insert(0, str(folder))
    module = importlib.import_module("wb_tag_plugin")
    yield path, module
    sys.path.remove(str(folder))
    sys.modules.pop("wb_tag_plugin", None)


def pipeline() -> dict:
    return {"name": "tagging", "input": HH, "output": "tagged", "batch_size": 250,
            "steps": [{"filter": {"where": {"chosen": {"min_chars": 20}}}},
                      {"tag_rows_test": {}},
                      {"dedup_exact": {"columns": ["prompt"]}}]}


def test_an_edited_transform_reruns_its_step_and_later_ones(ws, plugin):
    path, module = plugin
    first = run_pipeline(build_pipeline(pipeline()), ws, progress=False)
    assert [s.status for s in first.steps] == ["ran", "ran", "ran"]
    assert set(ws.read("tagged")["tag"]) == {"old"}
    same = run_pipeline(build_pipeline(pipeline()), ws, progress=False)
    assert [s.status for s in same.steps] == ["cached", "cached", "cached"]

    path.write_text(PLUGIN.replace("{tag}", "new"))  # the user edits the transform's code
    importlib.reload(module)
    edited = run_pipeline(build_pipeline(pipeline()), ws, progress=False)
    assert [s.status for s in edited.steps] == ["cached", "ran", "ran"]
    assert set(ws.read("tagged")["tag"]) == {"new"}
    # old and new code never share a checkpoint (nor its folder of finished batches)
    assert first.steps[1].checkpoint != edited.steps[1].checkpoint
    assert first.steps[0].checkpoint == edited.steps[0].checkpoint


def test_version_is_part_of_the_key(ws):
    from workbench.registry import get
    from workbench.transform import code_fingerprint

    cls = get("filter")
    before = code_fingerprint(cls)
    cls.version = "2"
    try:
        assert code_fingerprint(cls) != before
    finally:
        cls.version = None
    assert code_fingerprint(cls) == before


def test_fresh_recomputes_every_step(tmp_path: Path):
    yaml_path = tmp_path / "p.yaml"
    spec = {"name": "fresh", "input": HH, "output": "out",
            "steps": [{"filter": {"where": {"chosen": {"min_chars": 20}}}},
                      {"split": {"test_size": 0.2}}]}
    yaml_path.write_text(json.dumps(spec))  # JSON is YAML
    workspace = tmp_path / "ws"
    assert cli("run", str(yaml_path), workspace=workspace).returncode == 0
    again = cli("run", str(yaml_path), workspace=workspace)
    assert again.returncode == 0 and again.stdout.count("cached") == 2
    fresh = cli("run", str(yaml_path), "--fresh", workspace=workspace)
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.count("cached") == 0 and fresh.stdout.count(" ran ") == 2
    assert "up to date" in fresh.stdout  # same rows: no new version
    data = pl.read_parquet(workspace / "datasets" / "out" / "v1" / "data.parquet")
    assert data.height > 0
