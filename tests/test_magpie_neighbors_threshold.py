"""`magpie_neighbors`' repeat threshold is calibrated to its encoder (docs/methods.md §1.6):
the table, the refusal of an uncalibrated encoder, the step report, and the calibration
rule itself, on real instructions (MT-Bench's, in data/) and the embedded MiniLM."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from transforms.magpie_neighbors import THRESHOLDS, calibrated_threshold
from workbench.pipeline import PipelineError, build_pipeline
from workbench.runner import run_pipeline

DATA = Path(__file__).resolve().parent.parent / "data"
SCRIPT = DATA.parent / "scripts" / "calibrate_neighbors.py"


def questions() -> list[str]:
    lines = (DATA / "benchmarks" / "mt_bench_questions.jsonl").read_text().splitlines()
    return [json.loads(line)["turns"][0] for line in lines]


def test_the_threshold_follows_the_encoder():
    assert calibrated_threshold("sentence-transformers/all-mpnet-base-v2") == 0.05  # Magpie's
    assert calibrated_threshold("/models/all-mpnet-base-v2/") == 0.05
    minilm = calibrated_threshold("embedded")
    assert minilm == calibrated_threshold("sentence-transformers/all-MiniLM-L6-v2")
    assert minilm == THRESHOLDS["all-minilm-l6-v2"] and minilm != 0.05
    spec = {"name": "n", "input": "x.jsonl",
            "steps": [{"magpie_neighbors": {"encoder": "/models/my-encoder"}}]}
    with pytest.raises(PipelineError, match="no repeat threshold is calibrated for encoder "
                                            "'/models/my-encoder'.*set `threshold:`"):
        build_pipeline(spec)
    spec["steps"] = [{"magpie_neighbors": {"encoder": "/models/my-encoder", "threshold": 0.1}}]
    assert build_pipeline(spec).steps[0].transform.config.threshold == 0.1


@pytest.mark.slow
def test_the_step_reports_its_encoder_and_threshold(ws, tmp_path: Path):
    """Real questions and edited copies of three of them: the calibrated MiniLM threshold
    flags the punctuation edits (MiniLM distance about 0.01-0.02) but not a polite prefix
    (about 0.07), which a set `threshold:` of 0.1 does flag; the report says what ran."""
    texts = questions()[:30]
    copies = [texts[0].rstrip(".") + "!", texts[2].replace(",", ""), texts[4].replace(",", ""),
              "Please " + texts[1][0].lower() + texts[1][1:]]
    source = tmp_path / "q.jsonl"
    source.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts + copies))

    def run(options: dict) -> tuple[dict, list]:
        spec = build_pipeline({"name": "nb", "input": str(source), "output": "nb",
                               "steps": [{"magpie_neighbors": options}]})
        result = run_pipeline(spec, ws, progress=False)
        return result.steps[0].detail["report"], ws.read("nb")["repeat_count"].to_list()

    report, repeats = run({})
    assert report["encoder"] == "embedded" and report["threshold"] == THRESHOLDS[
        "all-minilm-l6-v2"] and report["threshold_from"] == "calibrated for the encoder"
    assert [repeats[i] for i in (0, 2, 4, 30, 31, 32)] == [1] * 6
    assert repeats[1] == repeats[33] == 0
    assert report["rows_with_repeats"] == 6
    loose, more = run({"threshold": 0.1})
    assert loose["threshold"] == 0.1 and loose["threshold_from"] == "set"
    assert more[1] == more[33] == 1 and loose["rows_with_repeats"] == 8


@pytest.mark.slow
def test_calibrating_an_encoder_against_itself_gives_back_the_reference_threshold():
    """The rule of scripts/calibrate_neighbors.py: the threshold that flags as many pairs as
    the reference's 0.05. Against itself an encoder must get 0.05's pairs back exactly."""
    from workbench.models.embeddings import embed

    spec = importlib.util.spec_from_file_location("calibrate_neighbors", SCRIPT)
    calibrate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(calibrate)
    texts = questions()
    texts += [t.rstrip(".?") + "?" for t in texts[:20]]  # near-duplicates to find
    vectors = embed(texts)
    result = calibrate.calibrate(vectors, vectors)
    assert result["reference_pairs_under_0.05"] > 0
    assert result["at_each"]["quantile"]["pairs"] == result["reference_pairs_under_0.05"]
    assert result["at_each"]["quantile"]["f1_vs_reference"] == 1.0
    assert result["at_each"]["rows"]["rows"] == result["reference_rows_with_a_repeat"]
