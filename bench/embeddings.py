"""Embedding throughput and quality: the static encoder (`encoder: static`, distilled from the
embedded MiniLM) against MiniLM itself, side by side in one process on the same real texts.

Speed: texts per second of each on `--quality-rows` real prompts (GSM8K, IFEval, HH-RLHF first
turns, from data/), and of the static encoder alone on `--rows` bench/synth.py rows. Quality,
with MiniLM as the reference, on those real prompts: how many of each text's 10 nearest
neighbours the static encoder finds (recall@10) and the Spearman correlation of the cosines of
random pairs; and on synth rows, how many planted near copies (upper-cased, one word dropped)
each encoder puts above cosine 0.9 with their source.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/embeddings.py [--quality-rows 2000] [--rows 100000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from synth import DATA
from synth import texts as synth_texts

from workbench.models import static_encoder
from workbench.models.embeddings import embed


def real_prompts(n: int) -> list[str]:
    from workbench.io.importer import load

    found: list[str] = []
    for name in ("benchmarks/gsm8k_test.jsonl", "benchmarks/ifeval_input_data.jsonl",
                 "hh_rlhf_harmless_test_600.jsonl.gz"):
        frame = load(DATA / name)[0]
        found += frame["prompt"].list.first().struct.field("content").to_list()
    rng = np.random.default_rng(0)
    return [found[i] for i in rng.permutation(len(found))[:n]]


def timed(texts: list[str], encoder: str) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    vectors = embed(texts, encoder)
    return vectors, time.perf_counter() - start


def recall_at_k(reference: np.ndarray, candidate: np.ndarray, k: int = 10) -> float:
    def top(v: np.ndarray) -> np.ndarray:
        sims = v @ v.T
        np.fill_diagonal(sims, -np.inf)
        return np.argsort(-sims, axis=1)[:, :k]

    ref, cand = top(reference), top(candidate)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ref, cand, strict=True)]))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks = [np.argsort(np.argsort(x)).astype(np.float64) for x in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def copies_found(vectors: np.ndarray, texts: list[str]) -> float:
    """Share of planted near copies (upper-cased, one word dropped) with cosine > 0.9 to some
    earlier text."""
    planted = [i for i, t in enumerate(texts) if i > 0 and t.isupper()]
    hits = [float((vectors[:i] @ vectors[i]).max()) > 0.9 for i in planted]
    return float(np.mean(hits)) if hits else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quality-rows", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    start = time.perf_counter()
    static_encoder.load("static")
    print(f"static encoder ready in {time.perf_counter() - start:.1f} s "
          f"(distilled once per machine, then loaded from the cache)")
    texts = real_prompts(args.quality_rows)
    embed(texts[:8], "embedded")  # load MiniLM outside the timing
    minilm, minilm_s = timed(texts, "embedded")
    static, static_s = timed(texts, "static")
    n = len(texts)
    print(f"{n} texts: MiniLM {minilm_s:.2f} s ({n / minilm_s:,.0f} texts/s), static "
          f"{static_s:.3f} s ({n / static_s:,.0f} texts/s) -> {minilm_s / static_s:.0f}x")
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, n, size=(2, 20_000))
    keep = i != j
    cos_m = np.einsum("nd,nd->n", minilm[i[keep]], minilm[j[keep]])
    cos_s = np.einsum("nd,nd->n", static[i[keep]], static[j[keep]])
    print(f"quality vs MiniLM on real prompts: recall@10 {recall_at_k(minilm, static):.3f}, "
          f"Spearman of pair cosines {spearman(cos_m, cos_s):.3f}")
    planted = synth_texts(1000)
    print(f"planted near copies found (cos > 0.9) in 1,000 synth rows: MiniLM "
          f"{copies_found(embed(planted, 'embedded'), planted):.3f}, static "
          f"{copies_found(embed(planted, 'static'), planted):.3f}")
    many = synth_texts(args.rows, seed=1)
    _, seconds = timed(many, "static")
    print(f"static at {args.rows:,} texts: {seconds:.2f} s ({args.rows / seconds:,.0f} texts/s); "
          f"MiniLM at its measured rate would take {args.rows / (n / minilm_s) / 60:.1f} min")


if __name__ == "__main__":
    main()
