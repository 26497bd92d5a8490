"""Embedding throughput and near-duplicate recall: the static encoder (`encoder: static`,
distilled from the embedded MiniLM) against MiniLM itself, side by side in one process on the
same texts.

Texts: `--rows` (default 10,000) rows of bench/synth.py, built from the real sentences of
GSM8K, IFEval and HH-RLHF in data/ (three per row, 10% near copies: upper-cased, one word
dropped). Speed: texts per second of each encoder. Quality, with MiniLM as the reference: the
near-duplicate pairs (cosine >= 0.9 under MiniLM, found exactly with FAISS) and the share of
them the static encoder also puts at cosine >= 0.9 (recall), with the pairs only it finds;
then the top-10 neighbour overlap and the Spearman correlation of random pairs' cosines on
real prompts (GSM8K, IFEval, HH-RLHF first turns), where topical similarity matters.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/embeddings.py [--rows 10000] [--threshold 0.9]
"""

from __future__ import annotations

import argparse
import time

import faiss
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


def close_pairs(vectors: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    """Every pair (i < j) with cosine >= threshold, by an exact FAISS range search."""
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    limits, _, ids = index.range_search(vectors, threshold)
    rows = np.repeat(np.arange(len(vectors)), np.diff(limits.astype(np.int64)))
    return {(int(i), int(j)) for i, j in zip(rows, ids, strict=True) if i < j}


def neighbours(vectors: np.ndarray, k: int) -> np.ndarray:
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return index.search(vectors, k + 1)[1][:, 1:]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks = [np.argsort(np.argsort(x)).astype(np.float64) for x in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--threshold", type=float, default=0.9)
    args = parser.parse_args()
    start = time.perf_counter()
    static_encoder.load("static")
    print(f"static encoder ready in {time.perf_counter() - start:.1f} s "
          f"(distilled once per machine, then loaded from the cache)")
    texts = synth_texts(args.rows)
    embed(texts[:8], "embedded")  # load MiniLM outside the timing
    minilm, minilm_s = timed(texts, "embedded")
    static, static_s = timed(texts, "static")
    n = len(texts)
    print(f"{n:,} texts: MiniLM {minilm_s:.1f} s ({n / minilm_s:,.0f} texts/s), static "
          f"{static_s:.2f} s ({n / static_s:,.0f} texts/s) -> {minilm_s / static_s:.0f}x faster")
    reference = close_pairs(minilm, args.threshold)
    found = close_pairs(static, args.threshold)
    hit = len(reference & found)
    print(f"near-duplicate pairs (cosine >= {args.threshold} under MiniLM): {len(reference):,}; "
          f"static finds {hit:,} (recall {hit / max(1, len(reference)):.4f}), plus "
          f"{len(found - reference):,} pairs MiniLM puts below {args.threshold}")
    for cut in (0.95, 0.97, 0.98):  # the static encoder's cosines run high: a stricter cut
        found = close_pairs(static, cut)
        hit = len(reference & found)
        print(f"  static at cosine >= {cut}: recall {hit / max(1, len(reference)):.4f}, "
              f"{len(found - reference):,} pairs MiniLM puts below {args.threshold}")
    prompts = real_prompts(2000)
    real_m, real_s = embed(prompts, "embedded"), embed(prompts, "static")
    top_m, top_s = neighbours(real_m, 10), neighbours(real_s, 10)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top_m, top_s, strict=True)])
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, len(prompts), size=(2, 20_000))
    keep = i != j
    rho = spearman(np.einsum("nd,nd->n", real_m[i[keep]], real_m[j[keep]]),
                   np.einsum("nd,nd->n", real_s[i[keep]], real_s[j[keep]]))
    print(f"topical neighbours on {len(prompts):,} real prompts: top-10 overlap with MiniLM "
          f"{overlap:.3f}, Spearman of random pairs' cosines {rho:.3f}")


if __name__ == "__main__":
    main()
