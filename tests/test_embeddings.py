"""Embeddings with the bundled all-MiniLM-L6-v2, and the FAISS index helpers."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest

from workbench.models.embeddings import build_index, embed, search


@pytest.mark.slow
def test_embeddings_are_unit_norm_and_meaningful():
    texts = [
        "A cat is sitting on the mat.",
        "A kitten sits on a rug.",
        "The stock market fell sharply today.",
    ]
    vectors = embed(texts)
    assert vectors.dtype == np.float32 and vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sim = vectors @ vectors.T
    assert sim[0, 1] > sim[0, 2] + 0.3
    assert sim[0, 1] > sim[1, 2] + 0.3
    assert embed([]).shape == (0, 384)


@pytest.mark.slow
def test_exact_index_over_real_embeddings_finds_itself():
    texts = ["How do I boil an egg?", "Best way to learn Python", "What is the capital of Peru?"]
    built = build_index(embed(texts))
    scores, ids = search(built, embed(["how to boil eggs"]), k=3)
    assert built.kind == "exact" and built.recall_at_k is None
    assert ids[0, 0] == 0 and scores[0, 0] > scores[0, 1]


def _random_unit(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_search_is_brute_force_top_k():
    base, queries, k = _random_unit(500, 32, 0), _random_unit(20, 32, 1), 7
    built = build_index(base)
    scores, ids = search(built, queries, k)
    brute = queries @ base.T
    expected = np.argsort(-brute, axis=1)[:, :k]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(brute, expected, 1), atol=1e-5)
    # asking for more neighbours than vectors pads with -1
    _, few = search(build_index(base[:3]), queries[:1], 5)
    assert list(few[0, 3:]) == [-1, -1]


@pytest.mark.parametrize("method", ["hnsw", "ivf"])
def test_approximate_index_reports_recall(method):
    base = _random_unit(3000, 32, 2)
    built = build_index(base, approximate_above=1000, method=method, recall_k=10, recall_sample=200)
    assert built.kind == method and built.size == 3000
    assert built.recall_k == 10 and built.recall_queries == 200
    assert 0.5 < built.recall_at_k <= 1.0
    assert f"recall@10 {built.recall_at_k:.3f}" in built.describe()
    scores, ids = search(built, base[:5], 3)
    assert ids.shape == (5, 3) and list(ids[:, 0]) == [0, 1, 2, 3, 4]


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="hnsw or ivf"):
        build_index(_random_unit(20, 4, 0), approximate_above=10, method="lsh")
