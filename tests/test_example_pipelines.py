"""Every pipeline shipped in data/pipelines validates: steps, options, models, kinds."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import DATA

from workbench.io.importer import load
from workbench.pipeline import check_kinds, load_pipeline

PIPELINES = sorted((DATA / "pipelines").glob("*.yaml"))


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_shipped_pipeline_validates(path: Path):
    pipeline = load_pipeline(path)
    source = pipeline.spec.input
    kind = None
    if source is not None:
        file = pipeline.base_dir / source
        assert file.exists(), f"{path.name}: input {source} is not in the repository"
        kind = load(file)[1]
    kinds = check_kinds(pipeline, kind)
    assert kinds[-1] in ("instruction", "sft", "candidates", "preference")


def test_the_demo_builds_rationale_pairs_from_its_questions():
    pipeline = load_pipeline(DATA / "pipelines" / "demo.yaml")
    questions, kind = load(pipeline.base_dir / pipeline.spec.input)[:2]
    assert kind == "instruction" and questions.height == 40
    assert [s.name for s in pipeline.steps][-1] == "rationale"
    assert check_kinds(pipeline, kind)[-1] == "preference"
