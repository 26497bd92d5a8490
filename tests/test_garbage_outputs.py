"""A model that returns garbage (empty text, loops, broken JSON) does not stop a run: each
step drops or nulls what it cannot use, and the run log counts it by reason."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import workbench.models as models
from workbench.models.transformers_backend import TransformersBackend
from workbench.pipeline import build_pipeline
from workbench.runner import run_pipeline

pytestmark = pytest.mark.slow


class GarbageBackend(TransformersBackend):
    """The real embedded model, except where a prompt carries a marker: then the answer is the
    kind of garbage small models really produce. The judge stage answers with JSON scoring
    each response by its word count, so the counts below do not depend on a 135M model."""

    def generate(self, prompts, params, seeds=None):
        fixed = [_fixed_answer(p) for p in prompts]
        real = [i for i, answer in enumerate(fixed) if answer is None]
        answers = iter(super().generate([prompts[i] for i in real], params,
                                        None if seeds is None else [seeds[i] for i in real]))
        return [next(answers) if answer is None else [_gen(t) for t in answer][: params.n]
                for answer in fixed]


def _fixed_answer(prompt) -> list[str] | None:
    """The garbage (or fixed) samples for a marked prompt; None: ask the real model."""
    text = prompt if isinstance(prompt, str) else prompt[0]["content"]
    if "Reply with JSON only" in text:  # the judge
        if "BADJSON" in text:
            return ["{score: high"] * 2
        response = text.split("[Assistant's response]\n")[1].split("\n\nReply with JSON")[0]
        return [json.dumps({"rationale": "ok", "score": 1 + min(4, len(response.split()))})] * 2
    if "annotators preferred" in text:  # the rationale
        return [""] * 2 if "NORATIONALE" in text else None
    if "EMPTY" in text:
        return ["", ""]
    if "LOOP" in text:
        return ["la la la la " * 12] * 2
    if "BADJSON" in text or "NORATIONALE" in text:
        return ["Paris.", "Lyon is a lovely city in France."]
    return None


def _gen(text: str):
    from workbench.models.base import Generation

    return Generation(text, "stop", 1, len(text.split()))


@pytest.fixture
def garbage_model(monkeypatch):
    models.unload_all()
    monkeypatch.setitem(models.BACKENDS, "transformers", dataclasses.replace(
        models.BACKENDS["transformers"], module=__name__, cls="GarbageBackend"))
    yield
    models.unload_all()


def test_garbage_is_dropped_or_nulled_with_counted_reasons(ws, tmp_path: Path, garbage_model):
    questions = ["Name a fruit.", "BADJSON Name a tree.", "EMPTY Name a bird.",
                 "LOOP Name a river.", "NORATIONALE Name a city."]
    source = tmp_path / "q.jsonl"
    source.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in questions))
    spec = build_pipeline({
        "name": "garbage", "input": str(source), "output": "prefs",
        "allow_empty": True,  # the garbage rows are the point; the real model's may go too
        "models": {"default": {"backend": "transformers", "model": "embedded"}},
        "steps": [{"sample_responses": {"n": 2, "max_new_tokens": 10}},
                  {"judge": {"method": "llm_json"}},
                  {"pairs": {"method": "best_worst"}},
                  {"rationale": {"max_new_tokens": 12}}]})
    result = run_pipeline(spec, ws, progress=False)
    sample, judged, paired, explained = result.steps
    assert sample.dropped == {"fewer than 2 usable samples": 2}
    assert sample.detail["nulled"] == {"sample removed: empty output": 2,
                                       "sample removed: degenerate repetition": 2}
    assert judged.detail["nulled"] == {"score: no JSON object in the judge's reply": 2}
    assert paired.dropped.get("no scored responses") == 1
    assert explained.dropped.get("rationale: empty output") == 1
    final = ws.read("prefs")
    assert final.height == result.output.rows >= 0
    assert not final["prompt"].list.first().struct.field("content").str.contains(
        "BADJSON|EMPTY|LOOP|NORATIONALE").any()
    log = ws.step_logs(result.run_id)
    assert log[0]["detail"]["nulled"]["sample removed: empty output"] == 2
    assert log[3]["dropped"]["rationale: empty output"] == 1
