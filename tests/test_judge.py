"""Judging on the embedded model: each method's scores against an independent computation,
pairwise position flips, JSON parsing, and scores landing on the right columns per kind."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest

from transforms.judge import RUBRIC, _conversation, parse_judgement
from workbench.pipeline import build_pipeline
from workbench.runner import run_pipeline

pytestmark = pytest.mark.slow
EMBEDDED = {"default": {"backend": "transformers", "model": "embedded"}}
PROMPT = [{"role": "user", "content": "What is the capital of France?"}]


def run(ws, source: Path, steps: list[dict], models: dict | None = None) -> pl.DataFrame:
    spec = build_pipeline({"name": "judging", "input": str(source), "output": "judged",
                           "models": models or EMBEDDED, "steps": steps})
    run_pipeline(spec, ws, progress=False)
    return ws.read("judged")


def test_parse_judgement_is_strict_about_range_and_shape():
    assert parse_judgement('{"rationale": "ok", "score": 4}', 5) == (4.0, "ok", None)
    assert parse_judgement('Sure! {"score": 2, "rationale": "meh"} thanks', 5)[0] == 2.0
    assert parse_judgement('{"score": 9}', 5)[2] == "judge score out of range 1..5"
    assert parse_judgement('{"score": "high"}', 5)[2] == "judge score is not a number"
    assert parse_judgement("{score: 4", 5)[2] == "no JSON object in the judge's reply"
    assert parse_judgement("{'score': 4}", 5)[2] == "unparseable JSON from the judge"


def test_expected_score_equals_a_direct_forward_pass(ws, tmp_path: Path, embedded):
    import torch

    source = tmp_path / "c.parquet"
    pl.DataFrame({"prompt": [PROMPT], "responses": [["Paris.", "I like trains."]]}).write_parquet(
        source)
    scores = run(ws, source, [{"judge": {"method": "expected_score", "scale": 5}}])["scores"][0]
    assert len(scores) == 2 and all(1 <= s <= 5 for s in scores)
    # independent: the model's logits at the end of the rendered rubric, softmax over "1".."5"
    tok, model = embedded.tokenizer, embedded.model
    for response, got in zip(["Paris.", "I like trains."], scores, strict=True):
        text = RUBRIC.format(conversation=_conversation(PROMPT), response=response, scale=5)
        ids = tok.apply_chat_template([{"role": "user", "content": text}],
                                      add_generation_prompt=True, return_tensors="pt")
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        with torch.inference_mode():
            logits = model(ids).logits[0, -1]
        digits = [tok.convert_tokens_to_ids(str(i)) for i in range(1, 6)]
        probs = logits[digits].float().softmax(-1)
        assert got == pytest.approx(float((probs * torch.arange(1, 6)).sum()), abs=1e-4)


def test_scores_land_per_kind_and_pairwise_records_position_flips(ws, tmp_path: Path):
    source = tmp_path / "p.parquet"
    pl.DataFrame({"prompt": [PROMPT] * 2, "chosen": ["Paris is the capital.", "Paris."],
                  "rejected": ["Berlin.", "Bananas are yellow."]}).write_parquet(source)
    scored = run(ws, source, [{"judge": {"method": "expected_score"}},
                              {"judge": {"method": "llm_pairwise"}}])
    assert scored["chosen_score"].is_not_null().all() and scored["rejected_score"].is_not_null().all()
    for row in scored.iter_rows(named=True):
        assert 0 <= row["p_chosen_as_a"] <= 1 and 0 <= row["p_chosen_as_b"] <= 1
        first, second = row["p_chosen_as_a"] > 0.5, row["p_chosen_as_b"] > 0.5
        assert row["position_flip"] == (first != second)
        expected = "chosen" if first and second else "rejected" if not (first or second) \
            else "inconsistent"
        assert row["judge_prefers"] == expected


def test_density_ratio_under_two_system_prompts(ws, tmp_path: Path, embedded):
    source = tmp_path / "s.parquet"
    pl.DataFrame({"prompt": [PROMPT], "response": ["Paris."]}).write_parquet(source)
    strong, weak = "You are a geography expert.", "You answer with random words."
    got = run(ws, source, [{"judge": {"method": "density_ratio", "strong_system": strong,
                                      "weak_system": weak}}])["score"][0]
    a, b = embedded.logprobs([[{"role": "system", "content": strong}, *PROMPT],
                              [{"role": "system", "content": weak}, *PROMPT]],
                             ["Paris.", "Paris."])
    assert got == pytest.approx(a.total - b.total, abs=1e-4)
    assert math.isfinite(got)


def test_reward_model_scores_a_local_sequence_classifier(ws, tmp_path: Path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from workbench.models import embedded

    torch.manual_seed(0)
    folder = tmp_path / "rm"
    AutoModelForSequenceClassification.from_pretrained(
        embedded.ensure_converted(), num_labels=1).save_pretrained(folder)
    AutoTokenizer.from_pretrained(embedded.ensure_converted()).save_pretrained(folder)
    source = tmp_path / "c.parquet"
    pl.DataFrame({"prompt": [PROMPT], "responses": [["Paris.", "London."]]}).write_parquet(source)
    models = {"rm": {"backend": "reward", "model": str(folder), "options": {"batch_size": 2}}}
    scores = run(ws, source, [{"judge": {"method": "reward_model", "model": "rm"}}],
                 models)["scores"][0]
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    for response, got in zip(["Paris.", "London."], scores, strict=True):
        text = tok.apply_chat_template([*PROMPT, {"role": "assistant", "content": response}],
                                       tokenize=False)
        with torch.inference_mode():
            want = model(**tok(text, return_tensors="pt")).logits[0, 0].item()
        assert got == pytest.approx(want, abs=1e-4)
