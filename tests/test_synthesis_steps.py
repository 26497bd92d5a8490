"""sample_responses, rationale, grape_select, magpie_tags and magpie_neighbors on real rows
and the embedded model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from transforms.magpie_neighbors import neighbor_stats
from transforms.magpie_tags import parse_tag_reply
from transforms.rationale import conditioning_prompt
from workbench.pipeline import build_pipeline
from workbench.runner import run_pipeline

EMBEDDED = {"default": {"backend": "transformers", "model": "embedded"}}
Q = [{"role": "user", "content": "Name a primary colour."}]


def run(ws, source: Path, steps: list[dict], output: str = "out") -> pl.DataFrame:
    spec = build_pipeline({"name": output, "input": str(source), "output": output,
                           "models": EMBEDDED, "steps": steps})
    run_pipeline(spec, ws, progress=False)
    return ws.read(output)


def test_neighbor_stats_follow_gen_dis_exactly():
    # unit vectors: rows 0 and 2 are near-duplicates (cos 0.99), row 1 is far, row 3 == row 2
    a = np.array([1.0, 0.0])
    b = np.array([0.0, 1.0])
    c = np.array([0.99, np.sqrt(1 - 0.99**2)])
    vectors = np.stack([a, b, c, c]).astype(np.float32)
    distance, repeats, similar = neighbor_stats(vectors, ["r0", "r1", "r2", "r3"], 500, 0.05)
    assert repeats == [2, 0, 2, 2]
    assert similar == ["r0", None, "r0", "r0"]  # smallest index among near-duplicates
    assert distance[0] == pytest.approx(2 - 2 * 0.99, abs=1e-5)  # squared L2 = 2 - 2 cos
    assert distance[1] == pytest.approx(2 - 2 * np.sqrt(1 - 0.99**2), abs=1e-5)
    assert distance[2] == pytest.approx(0.0, abs=1e-6)  # its exact twin


def test_tag_replies_are_read_like_unitag():
    assert parse_tag_reply('"input_quality": "good"\n}') == ({"input_quality": "good"}, None)
    assert parse_tag_reply('"a": 1} trailing } text')[0] is None  # cut after the LAST }
    value, problem = parse_tag_reply("not json at all")
    assert value is None and problem.startswith("unparseable JSON")
    assert parse_tag_reply(None) == (None, "no reply from the tagger")


@pytest.mark.slow
def test_sampled_candidates_judged_paired_and_explained(ws, tmp_path: Path):
    source = tmp_path / "q.jsonl"
    source.write_text('{"prompt": "Name a primary colour."}\n{"prompt": "Say hello in French."}\n')
    out = run(ws, source, [
        {"sample_responses": {"n": 3, "max_new_tokens": 12, "batch_size": 2}},
        {"judge": {"method": "expected_score"}},
        {"pairs": {"method": "best_worst"}},
        {"rationale": {"max_new_tokens": 24, "conditioning_order": "random"}},
    ])
    assert out.height >= 1
    for row in out.iter_rows(named=True):
        assert row["chosen"] != row["rejected"] and row["chosen_score"] > row["rejected_score"]
        assert len(row["responses"]) == len(row["scores"]) >= 2
        assert row["rationale"].strip()
        assert row["rationale_finish_reason"] in ("stop", "length")  # why it ended, recorded
        user = row["prompt"][-1]["content"]
        above, below = ((row["chosen"], row["rejected"]) if row["rationale_chosen_above"]
                        else (row["rejected"], row["chosen"]))
        assert row["rationale_prompt"] == conditioning_prompt(user, above, below)
        assert row["rationale_shown_first"] in ("chosen", "rejected")


@pytest.mark.slow
def test_grape_select_keeps_the_most_likely_response(ws, tmp_path: Path):
    from workbench.models import load_backend
    from workbench.models.spec import ModelSpec

    responses = ["Red.", "Red.", "Purple polka dots on a Tuesday."]
    source = tmp_path / "c.parquet"
    pl.DataFrame({"prompt": [Q], "responses": [responses]}).write_parquet(source)
    row = run(ws, source, [{"grape_select": {"batch_size": 2}}]).row(0, named=True)
    scores = row["grape_scores"]
    assert scores[0] == pytest.approx(scores[1])  # identical responses, identical scores
    backend = load_backend(ModelSpec())
    single = [backend.logprobs([Q], [r])[0] for r in responses]  # one at a time, no padding
    expected = [s.total / len(s.logprobs) for s in single]
    assert scores == pytest.approx(expected, abs=1e-4)
    best = int(np.argmax(expected))
    assert row["response"] == responses[best] and row["grape_index"] == best == 0  # first tie


def greedy_tag_reply(model, tok, prompt: str, max_new_tokens: int) -> str:
    """What the tagger writes after Magpie's `{` prefill, greedy, up to and including the first
    `}` (the stop string): one plain `generate` call, no padding."""
    import torch

    text = tok.apply_chat_template([{"role": "user", "content": prompt},
                                    {"role": "assistant", "content": "{"}], tokenize=False,
                                   continue_final_message=True)
    ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    reply = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    return reply[: reply.index("}") + 1] if "}" in reply else reply


@pytest.mark.slow
def test_magpie_tags_never_crash_on_what_a_small_tagger_writes(ws, tmp_path: Path, embedded):
    """Each tag equals Magpie's reading of what the model writes when asked directly: the JSON
    after "{\n", cut after its last `}`; a reply that does not parse gives nulls and its JSON
    error. In 56 tokens the 135M tagger closes the difficulty JSON for the haiku (so the `}`
    the stop string cut must be put back) but not for the French poem."""
    import json

    from transforms.magpie_tags import DIFFICULTY

    texts = ["Écris un poème.", "Write a haiku about rain."]
    source = tmp_path / "i.jsonl"
    source.write_text("".join(f'{{"prompt": "{t}"}}\n' for t in texts))
    out = run(ws, source, [{"magpie_tags": {"tags": ["difficulty", "language", "length"],
                                            "max_new_tokens": 56, "batch_size": 1}}])
    assert out["language"].to_list() == ["FR", "EN"]
    assert out["instruction_length"].to_list() == [15, 25]
    parsed = []
    for i, text in enumerate(texts):
        reply = greedy_tag_reply(embedded.model, embedded.tokenizer,
                                 DIFFICULTY.format(input=text), 56)
        body = "{\n" + reply.strip()
        body = body[: body.rfind("}") + 1]
        try:
            value, errors = json.loads(body), []
        except json.JSONDecodeError as exc:
            value, errors = {}, [f"difficulty: unparseable JSON ({exc.msg})"]
        parsed.append(bool(value))
        assert out["tag_errors"][i].to_list() == errors, text
        for key in ("intent", "knowledge", "difficulty"):
            assert out[key][i] == value.get(key), (text, key)
    assert parsed == [False, True]  # both paths are taken
    assert out["difficulty_generator"].to_list()[0] is None
    assert out["difficulty_generator"][1] is not None


@pytest.mark.slow
def test_magpie_neighbors_on_real_repetitive_conversations(ws, shared: Path):
    """FastChat's identity conversations repeat themselves: Magpie's filter keeps one of each
    near-identical group (the smallest index) and counts the rest."""
    source = shared / "fastchat/dummy_conversation.json"
    spec = build_pipeline({"name": "nb", "input": str(source), "output": "nb",
                           "steps": [{"sample": {"n": 120}}, {"magpie_neighbors": {}}]})
    run_pipeline(spec, ws, progress=False)
    out = ws.read("nb")
    assert out["repeat_count"].max() > 0
    keep = out.filter(pl.col("min_similar_id").is_null() | (pl.col("min_similar_id") == pl.col("id")))
    assert 0 < keep.height < out.height
    ids = set(out["id"])
    assert set(out["min_similar_id"].drop_nulls()) <= ids
    assert ((out["min_neighbor_distance"] >= -1e-5) & (out["min_neighbor_distance"] <= 4)).all()
