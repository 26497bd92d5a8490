"""deita's Repr Filter: `greedy_select` (what `deita_select` runs) against the reference
algorithm of docs/methods.md §3.2, side by side in one process on the same embeddings.

The reference re-copies the selected set for every candidate (`embeddings[filtered_indices]`)
and compares one row at a time, as deita's IterativeFilter does (numpy on the CPU here).
Data: 384-d unit vectors in score order, a third of them near-copies (cosine ≈ 0.98) of an
earlier row, so the filter has work to do; budget 10,000, threshold 0.9. Prints both times,
the ratio, and whether the selections are identical.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/deita_select.py [--sizes 20000 100000 1000000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from workbench.algorithms.diversity import greedy_select


def embeddings(n: int, dim: int = 384, copies: float = 1 / 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    dup = np.flatnonzero(rng.random(n) < copies)
    dup = dup[dup > 0]
    source = (rng.random(len(dup)) * dup).astype(np.int64)  # an earlier row
    noise = rng.standard_normal((len(dup), dim), dtype=np.float32) * (0.2 / np.sqrt(dim))
    x[dup] = x[source] + noise
    x[dup] /= np.linalg.norm(x[dup], axis=1, keepdims=True)
    return x


def reference(x: np.ndarray, threshold: float, budget: int) -> list[int]:
    """deita's loop with batch_size 1: row 0, then each row against a fresh copy of the
    selected rows; stop at the budget."""
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    selected = [0]
    for i in range(1, len(unit)):
        existing = unit[selected]  # the per-row copy of the selected set
        if not (existing @ unit[i] > threshold).any():
            selected.append(i)
        if len(selected) >= budget:
            break
    return selected[:budget]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000, 1_000_000])
    parser.add_argument("--budget", type=int, default=10_000)
    parser.add_argument("--threshold", type=float, default=0.9)
    args = parser.parse_args()
    print(f"{'rows':>9} {'reference s':>12} {'deita_select s':>15} {'ratio':>7}  identical")
    for n in args.sizes:
        x = embeddings(n)
        t0 = time.perf_counter()
        expected = reference(x, args.threshold, args.budget)
        t1 = time.perf_counter()
        got = greedy_select(x, args.threshold, args.budget).order.tolist()
        t2 = time.perf_counter()
        ref_s, ours_s = t1 - t0, t2 - t1
        print(f"{n:>9} {ref_s:>12.2f} {ours_s:>15.3f} {ref_s / ours_s:>6.1f}x  {got == expected}")


if __name__ == "__main__":
    main()
