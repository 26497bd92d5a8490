"""Judging on the embedded model: each method's scores against an independent computation,
pairwise position flips, JSON parsing, and scores landing on the right columns per kind."""

from __future__ import annotations

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


WEAK_TEMPLATE = ("{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}### assistant:\n{% endif %}")


def direct_logprobs(model, tok, prompt_text: str, response: str, skip_newlines: bool) -> float:
    """Σ log π(response token | text before it) from one plain forward pass, prompt and response
    tokenized apart (as the backend does), optionally without the "\n" tokens."""
    import torch

    head = tok(prompt_text, add_special_tokens=False)["input_ids"]
    tail = tok(response, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = model(torch.tensor([head + tail])).logits[0].float()
    lp = logits[len(head) - 1 : -1].log_softmax(-1)
    return sum(float(lp[k, t]) for k, t in enumerate(tail)
               if not (skip_newlines and tok.decode([t]) in ("\n", "")))


def test_density_ratio_equals_two_direct_forward_passes(ws, tmp_path: Path, embedded):
    """Strong: the embedded model; weak: a random 2-layer Llama whose own chat template differs.
    By default both score the strong model's rendering and newline tokens are left out; the
    other settings score each model's own rendering with every token."""
    from tiny_models import small_llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    weak_path = small_llama(tmp_path / "weak")
    weak_tok = AutoTokenizer.from_pretrained(weak_path)
    weak_tok.chat_template = WEAK_TEMPLATE
    weak_tok.save_pretrained(weak_path)
    weak_model = AutoModelForCausalLM.from_pretrained(weak_path).eval()
    response = "Paris.\nIt is in France."
    assert "\n" in [embedded.tokenizer.decode([t]) for t in
                    embedded.tokenizer(response, add_special_tokens=False)["input_ids"]]
    source = tmp_path / "s.parquet"
    pl.DataFrame({"prompt": [PROMPT], "response": [response]}).write_parquet(source)
    models = {**EMBEDDED, "weak": {"backend": "transformers", "model": str(weak_path)}}
    strong_text = embedded.tokenizer.apply_chat_template(PROMPT, tokenize=False,
                                                         add_generation_prompt=True)
    weak_text = weak_tok.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    assert weak_text != strong_text
    got = {}
    for name, extra in (("shared", {}), ("own", {"rendering": "own_template",
                                                  "skip_newline_tokens": False})):
        got[name] = run(ws, source, [{"judge": {"method": "density_ratio", "weak_model": "weak",
                                                **extra}}], models)["score"][0]
    strong_lp = direct_logprobs(embedded.model, embedded.tokenizer, strong_text, response, True)
    weak_lp = direct_logprobs(weak_model, weak_tok, strong_text, response, True)
    assert got["shared"] == pytest.approx(strong_lp - weak_lp, abs=1e-3)
    strong_all = direct_logprobs(embedded.model, embedded.tokenizer, strong_text, response, False)
    weak_own = direct_logprobs(weak_model, weak_tok, weak_text, response, False)
    assert got["own"] == pytest.approx(strong_all - weak_own, abs=1e-3)
    assert abs(got["shared"]) > 1 and abs(got["shared"] - got["own"]) > 1e-2


def test_density_ratio_under_two_system_prompts(ws, tmp_path: Path, embedded):
    source = tmp_path / "s.parquet"
    pl.DataFrame({"prompt": [PROMPT], "response": ["Paris."]}).write_parquet(source)
    strong, weak = "You are a geography expert.", "You answer with random words."
    got = run(ws, source, [{"judge": {"method": "density_ratio", "strong_system": strong,
                                      "weak_system": weak, "average": True}}])["score"][0]
    tok = embedded.tokenizer
    sides = [direct_logprobs(embedded.model, tok, tok.apply_chat_template(
        [{"role": "system", "content": system}, *PROMPT], tokenize=False,
        add_generation_prompt=True), "Paris.", True) for system in (strong, weak)]
    count = len(tok("Paris.", add_special_tokens=False)["input_ids"])
    assert got == pytest.approx((sides[0] - sides[1]) / count, abs=1e-4)
    assert abs(got) > 1e-3


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
