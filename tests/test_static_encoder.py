"""The static encoder (`encoder: static`): distilled offline from the embedded MiniLM, cached,
and good enough where it is meant to be used (near-duplicates), on real texts from data/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from workbench.io.importer import load
from workbench.models import static_encoder
from workbench.models.embeddings import embed
from workbench.pipeline import build_pipeline
from workbench.runner import run_pipeline

DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    frame = load(DATA / "benchmarks" / "gsm8k_test.jsonl")[0]
    return frame["prompt"].list.first().struct.field("content").to_list()[:300]


def test_names_parse():
    assert static_encoder.parse("static") == ("embedded", 256)
    assert static_encoder.parse("static@64") == ("embedded", 64)
    assert static_encoder.parse("static:/models/e5@128") == ("/models/e5", 128)
    assert not static_encoder.is_static("embedded") and static_encoder.is_static("static@8")
    with pytest.raises(ValueError, match="positive integer"):
        static_encoder.parse("static@x")


# distilling loads MiniLM: slow on a machine without the distilled cache
@pytest.mark.slow
def test_distilled_once_and_reused():
    first = static_encoder.ensure_distilled()
    stamp = (first / "vectors.npy").stat().st_mtime_ns
    assert static_encoder.ensure_distilled() == first
    assert (first / "vectors.npy").stat().st_mtime_ns == stamp
    vectors = np.load(first / "vectors.npy")
    assert vectors.shape == (30522, 256) and np.isfinite(vectors).all()


# distilling loads MiniLM: slow on a machine without the distilled cache
@pytest.mark.slow
def test_vectors_are_unit_length_and_batch_independent(prompts: list[str]):
    encoder = static_encoder.load("static")
    together = encoder.encode(prompts + ["", "   "])
    apart = np.vstack([encoder.encode(prompts[i:i + 7], batch_size=3)
                       for i in range(0, len(prompts), 7)])
    np.testing.assert_allclose(together[:len(prompts)], apart, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(together[:len(prompts)], axis=1), 1.0, rtol=1e-5)
    assert not together[-2:].any()  # no tokens: a zero vector, never NaN
    # longer than the teacher's 256-token window: every token still counts
    long = " ".join(prompts[:20])
    assert not np.allclose(encoder.encode([long]), encoder.encode([" ".join(prompts[:2])]))


@pytest.mark.slow
def test_near_copies_are_found_and_order_follows_the_teacher(prompts: list[str]):
    static = embed(prompts, "static")
    rng = np.random.default_rng(0)
    copies = []
    for text in prompts:
        words = text.split()
        del words[int(rng.integers(0, len(words)))]
        copies.append(" ".join(words).upper())
    own = np.einsum("nd,nd->n", static, embed(copies, "static"))
    assert (own > 0.9).mean() >= 0.95  # a copy with one word dropped stays a near-duplicate
    others = static @ static.T
    np.fill_diagonal(others, -1)
    assert np.median(own) > np.quantile(others.max(axis=1), 0.9)
    # the pairs MiniLM finds closest are, on average, closer under the static encoder too
    minilm = embed(prompts, "embedded")
    i, j = np.triu_indices(len(prompts), k=1)
    teacher = np.einsum("nd,nd->n", minilm[i], minilm[j])
    student = np.einsum("nd,nd->n", static[i], static[j])
    top = teacher >= np.quantile(teacher, 0.99)
    assert student[top].mean() > np.quantile(student, 0.9)


# distilling loads MiniLM: slow on a machine without the distilled cache
@pytest.mark.slow
def test_embed_step_with_the_static_encoder_feeds_dedup(ws, prompts: list[str]):
    texts = prompts[:40] + [prompts[0].upper(), prompts[1] + "  "]
    ws.write_dataset("qs", pl.DataFrame({"prompt": [[{"role": "user", "content": t}]
                                                    for t in texts]}), "instruction")
    spec = build_pipeline({"name": "fast", "input": "qs", "steps": [
        {"embed": {"encoder": "static"}}, {"dedup_embedding": {"threshold": 0.95}}],
        "output": "qs_dedup"})
    result = run_pipeline(spec, ws, progress=False)
    out = ws.read("qs_dedup")
    assert out.height == 40 and len(out["embedding"][0]) == 256
    assert sum(result.steps[1].dropped.values()) == 2
