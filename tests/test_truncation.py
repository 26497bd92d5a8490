"""Cut-off text never passes as finished: Magpie records each instruction's finish reason and
`sample_responses` each sample's; `quality_filter` drops rows cut off at the cap and
`drop_truncated` removes cut-off samples, each with its reason counted (embedded model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.pipeline import build_pipeline
from workbench.runner import run_pipeline

pytestmark = pytest.mark.slow
MODELS = {"default": {"backend": "transformers", "model": "embedded"}}


def run(ws, steps: list[dict], source: str | None = None):
    spec = {"name": "cut", "models": MODELS, "steps": steps, "output": "out",
            "allow_empty": True}
    if source:
        spec["input"] = source
    result = run_pipeline(build_pipeline(spec), ws, progress=False)
    return result, ws.read("out")


def test_instructions_cut_at_a_small_cap_are_dropped_and_counted(ws):
    result, out = run(ws, [{"magpie": {"n": 6, "max_new_tokens": 3, "early_stop": False}},
                           {"quality_filter": {}}])
    magpie, filtered = result.steps
    assert magpie.rows_out == 6
    reason = "truncated (instruction_finish_reason length)"
    # three tokens end almost no instruction: the cut ones are dropped, by that reason
    assert filtered.dropped.get(reason, 0) >= 4
    assert filtered.rows_in - filtered.rows_out == sum(filtered.dropped.values())
    assert out.height == 0 or (out["instruction_finish_reason"] == "stop").all()


def test_magpie_answers_and_later_turns_record_why_they_ended(ws):
    """Magpie's own answers carry `finish_reason`, and a multi-turn conversation every
    generated turn's (`turns_finish_reason`); answers cut at a small cap are dropped."""
    _, made = run(ws, [{"magpie": {"n": 4, "max_new_tokens": 48, "responses": True,
                                   "response_max_new_tokens": 4}}])
    answered = made.filter(made["response"].is_not_null())
    assert answered.height >= 1
    # four tokens end almost no answer
    assert answered["finish_reason"].to_list().count("length") >= 1
    assert set(answered["finish_reason"]) <= {"stop", "length"}
    result, out = run(ws, [{"magpie": {"n": 4, "max_new_tokens": 48, "responses": True,
                                       "response_max_new_tokens": 4}},
                           {"quality_filter": {}}])
    filtered = result.steps[1]
    assert filtered.dropped.get("truncated (finish_reason length)", 0) >= 1
    assert out.height == 0 or (out["finish_reason"] == "stop").all()
    _, turns = run(ws, [{"magpie": {"n": 3, "max_new_tokens": 48, "responses": True,
                                    "response_max_new_tokens": 8, "turns": 2,
                                    "followup_max_new_tokens": 24}}])
    assert turns["response"].is_not_null().sum() >= 1
    for row in turns.filter(turns["response"].is_not_null()).iter_rows(named=True):
        # answer 1, user turn 2, answer 2; the last is the response's
        assert len(row["turns_finish_reason"]) == 3
        assert row["turns_finish_reason"][-1] == row["finish_reason"]


def test_cut_off_samples_are_removed_and_rows_without_two_finished_ones_dropped(ws, tmp_path: Path):
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in [
        "Give a synonym for 'happy'.", "What is the capital of France?",
        "Write a long essay about the history of Europe."]))
    cap = 12
    result, out = run(ws, [{"sample_responses": {"n": 3, "temperature": 0.8,
                                                 "max_new_tokens": cap, "drop_truncated": True}}],
                      str(questions))
    step = result.steps[0]
    removed = step.detail["nulled"].get(f"sample removed: truncated at {cap} tokens", 0)
    assert removed >= 3  # the essay's three samples at least
    assert step.dropped.get("fewer than 2 usable samples", 0) >= 1
    for reasons in out["finish_reason"].to_list():
        assert "length" not in reasons and len(reasons) >= 2
    # without the option the cut samples stay, and quality_filter drops their rows by reason
    kept, out2 = run(ws, [{"sample_responses": {"n": 3, "temperature": 0.8,
                                                "max_new_tokens": cap}},
                          {"quality_filter": {}}], str(questions))
    assert kept.steps[1].dropped.get("truncated (finish_reason length)", 0) >= 1
    for reasons in out2["finish_reason"].to_list():
        assert "length" not in reasons
