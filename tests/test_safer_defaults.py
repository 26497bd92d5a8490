"""Defaults that keep a user from silently wrong results: required scope, no identical
"samples", paths relative to the pipeline file, backend options checked before loading."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import DATA, cli

from workbench.errors import PipelineError
from workbench.pipeline import build_pipeline
from workbench.transform import StepConfig, transform


def test_a_transform_must_declare_its_scope():
    class NoOptions(StepConfig):
        pass

    with pytest.raises(TypeError, match="scope"):
        transform("scopeless_test", config=NoOptions)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="scope must be"):
        transform("bad_scope_test", scope="batch", config=NoOptions)  # type: ignore[arg-type]


def test_n_samples_at_temperature_zero_is_refused():
    spec = {"name": "g", "input": "x.jsonl", "models": {"default": {}},
            "steps": [{"generate": {"n": 4}}]}
    with pytest.raises(PipelineError, match=r"n=4 samples at temperature 0"):
        build_pipeline(spec)
    spec["steps"] = [{"generate": {"n": 4, "temperature": 0.7}}]
    assert build_pipeline(spec).steps[0].transform.config.n == 4


@pytest.mark.parametrize(("options", "message"), [
    ({"base_url": "http://127.0.0.1:9/v1", "concurency": 4}, "did you mean 'concurrency'"),
    ({"endpoint": "chatt"}, "option 'endpoint'"),
    ({"timeout": "soon"}, "option 'timeout'"),
])
def test_backend_options_are_checked_at_validation(options, message):
    spec = {"name": "g", "input": "x.jsonl",
            "models": {"remote": {"backend": "openai", "model": "m", "options": options}},
            "steps": [{"generate": {"model": "remote"}}]}
    with pytest.raises(PipelineError, match=f"models.remote: .*{message}"):
        build_pipeline(spec)


def test_transformers_option_typo_fails_before_loading():
    import sys

    spec = {"name": "g", "input": "x.jsonl",
            "models": {"default": {"backend": "transformers", "options": {"dtpye": "float32"}}},
            "steps": [{"generate": {}}]}
    with pytest.raises(PipelineError, match="did you mean 'dtype'"):
        build_pipeline(spec)
    if "torch" not in sys.modules:  # validation loads nothing heavy
        assert "transformers" not in sys.modules


def test_input_paths_resolve_relative_to_the_pipeline_file(tmp_path: Path):
    project = tmp_path / "project"
    (project / "pipelines").mkdir(parents=True)
    (project / "data").mkdir()
    shutil.copy(DATA / "hh_rlhf_harmless_test_600.jsonl.gz", project / "data" / "hh.jsonl.gz")
    yaml_path = project / "pipelines" / "p.yaml"
    yaml_path.write_text("name: rel\ninput: ../data/hh.jsonl.gz\noutput: rel\n"
                         "steps:\n  - sample: {n: 5}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = cli("run", str(yaml_path), workspace=tmp_path / "ws", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert "rel version 1" in done.stdout
    # a path that only exists relative to the working directory is not picked up silently
    (elsewhere / "data").mkdir()
    shutil.copy(DATA / "hh_rlhf_harmless_test_600.jsonl.gz", elsewhere / "data" / "only.jsonl.gz")
    yaml_path.write_text("name: rel2\ninput: data/only.jsonl.gz\nsteps:\n  - sample: {n: 5}\n")
    missing = cli("run", str(yaml_path), workspace=tmp_path / "ws", cwd=elsewhere)
    assert missing.returncode == 1
    assert "relative paths resolve against the pipeline file's folder" in missing.stderr
    assert str(project / "pipelines" / "data" / "only.jsonl.gz") in missing.stderr
