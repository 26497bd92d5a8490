"""Near-duplicate removal that explains itself: similar pairs, then one keeper per cluster.

Rows are ranked by priority (position 0 first). A row is dropped when a *kept* row of higher
priority is similar to it, and it names the most similar such row: the same greedy rule as
deita's Repr Filter without a budget, so every dropped row has a kept twin above the threshold
(no chaining through rows that were themselves dropped).

Pairs come from `cosine_pairs` (exact blocks up to a size, else an IVF join whose recall is
measured) or from MinHash-LSH (`transforms/dedup_minhash.py`); `resolve` decides the keepers
in a few vectorised rounds (a round settles every row whose higher-priority neighbours are
settled), falling back to a sequential pass only for long chains.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from workbench.algorithms.diversity import UnitVectors
from workbench.transform import DROP


@dataclass
class Pairs:
    """Similar pairs as positions in priority order: `src` (lower priority) > `dst`."""

    src: np.ndarray
    dst: np.ndarray
    sim: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Resolution:
    kept: np.ndarray  # bool per position
    twin: np.ndarray  # position of the kept twin of a dropped row, else -1
    similarity: np.ndarray  # similarity to that twin, else NaN


def resolve(n: int, pairs: Pairs, max_rounds: int = 64) -> Resolution:
    """Greedy keepers in priority order: a row is dropped iff it is paired with a kept row of
    higher priority; its twin is the most similar such row."""
    src, dst = pairs.src, pairs.dst
    if len(src) and not (dst < src).all():
        raise ValueError("pairs must point from a row to a row of higher priority")
    state = np.zeros(n, dtype=np.int8)  # 0 open, 1 kept, 2 dropped
    state[np.bincount(src, minlength=n) == 0] = 1
    for _ in range(max_rounds):
        live = state[src] == 0
        if not live.any():
            break
        s, d = src[live], dst[live]
        kept_near = np.bincount(s, weights=state[d] == 1, minlength=n) > 0
        open_near = np.bincount(s, weights=state[d] == 0, minlength=n) > 0
        undecided = state == 0
        state[undecided & kept_near] = 2
        state[undecided & ~kept_near & ~open_near] = 1
    else:
        _resolve_sequentially(state, src, dst)
    kept = state == 1
    twin = np.full(n, -1, dtype=np.int64)
    similarity = np.full(n, np.nan)
    to_kept = (~kept[src]) & kept[dst]
    s, d, v = src[to_kept], dst[to_kept], pairs.sim[to_kept]
    order = np.lexsort((-v, s))  # per dropped row, its most similar kept row first
    s, d, v = s[order], d[order], v[order]
    first = np.ones(len(s), dtype=bool)
    first[1:] = s[1:] != s[:-1]
    twin[s[first]], similarity[s[first]] = d[first], v[first]
    return Resolution(kept, twin, similarity)


def _resolve_sequentially(state: np.ndarray, src: np.ndarray, dst: np.ndarray) -> None:
    """The rows left open after the vectorised rounds (long chains), in priority order."""
    open_rows = np.flatnonzero(state == 0)
    live = np.isin(src, open_rows)
    s, d = src[live], dst[live]
    order = np.argsort(s, kind="stable")
    s, d = s[order], d[order]
    starts = np.searchsorted(s, open_rows)
    ends = np.searchsorted(s, open_rows, side="right")
    for row, lo, hi in zip(open_rows, starts, ends, strict=True):
        state[row] = 2 if (state[d[lo:hi]] == 1).any() else 1


def cosine_pairs(vectors: np.ndarray, threshold: float, exact_up_to: int = 20_000,
                 cell: int = 128, nprobe: int = 8, recall_sample: int = 500,
                 seed: int = 0) -> Pairs:
    """Pairs with cosine > threshold among rows already in priority order.

    Exact (blocked BLAS over the lower triangle) up to `exact_up_to` rows. Above it, an IVF
    join: k-means cells of about `cell` rows (FAISS), every row compared with the rows of its
    `nprobe` nearest cells; its pair recall against exact search is measured on
    `recall_sample` rows and reported in `info`.
    """
    vecs = UnitVectors(vectors)
    n = len(vecs)
    if n <= exact_up_to:
        pairs = _exact_pairs(vecs, threshold)
        pairs.info = {"search": "exact", "rows": n}
        return pairs
    pairs = _ivf_pairs(vecs, threshold, cell, nprobe, seed)
    pairs.info.update(_pair_recall(vecs, threshold, pairs, recall_sample, seed))
    return pairs


def _exact_pairs(vecs: UnitVectors, threshold: float, block: int = 2048) -> Pairs:
    x, n = vecs.x32, len(vecs)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        rows, cols = np.arange(lo, hi), np.arange(hi)
        sims = x[lo:hi] @ x[:hi].T
        over = np.tril(vecs.exceeds(sims, rows, cols, threshold), lo - 1)
        r, c = np.nonzero(over)
        found.append((rows[r], c, sims[r, c]))
    return _concat(found)


def _ivf_pairs(vecs: UnitVectors, threshold: float, cell: int, nprobe: int,
               seed: int) -> Pairs:
    import faiss

    x, n = vecs.x32, len(vecs)
    nlist = max(1, n // cell)
    sample = np.random.default_rng(seed).choice(n, size=min(n, 40 * nlist), replace=False)
    kmeans = faiss.Kmeans(x.shape[1], nlist, niter=10, spherical=True, seed=seed,
                          max_points_per_centroid=40)
    kmeans.train(x[np.sort(sample)])
    probe = min(nprobe, nlist)
    _, cells = faiss.knn(x, kmeans.centroids, probe, metric=faiss.METRIC_INNER_PRODUCT)
    home = cells[:, 0]  # each row lives in its nearest cell and looks into `probe` cells
    members = _groups(home, nlist)
    visitors = _groups(cells.ravel(), nlist, np.repeat(np.arange(n), probe))
    found = []
    for c in range(nlist):
        rows, cols = visitors[c], members[c]
        if len(rows) == 0 or len(cols) == 0:
            continue
        sims = x[rows] @ x[cols].T
        over = vecs.exceeds(sims, rows, cols, threshold) & (cols[None, :] != rows[:, None])
        r, k = np.nonzero(over)  # found from either side: oriented, then deduplicated below
        found.append((np.maximum(rows[r], cols[k]), np.minimum(rows[r], cols[k]), sims[r, k]))
    pairs = _unique(_concat(found), n)
    pairs.info = {"search": "ivf", "rows": n, "cells": nlist, "nprobe": probe}
    return pairs


def _groups(keys: np.ndarray, count: int, values: np.ndarray | None = None) -> list[np.ndarray]:
    """values (default: positions) grouped by key 0..count-1, each group sorted."""
    values = np.arange(len(keys)) if values is None else values
    order = np.lexsort((values, keys))
    bounds = np.searchsorted(keys[order], np.arange(count + 1))
    ordered = values[order]
    return [ordered[bounds[c]:bounds[c + 1]] for c in range(count)]


def _concat(found: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Pairs:
    if not found:
        empty = np.zeros(0, dtype=np.int64)
        return Pairs(empty, empty.copy(), np.zeros(0))
    src = np.concatenate([f[0] for f in found]).astype(np.int64)
    dst = np.concatenate([f[1] for f in found]).astype(np.int64)
    sim = np.concatenate([f[2] for f in found]).astype(np.float64)
    return Pairs(src, dst, sim)


def _unique(pairs: Pairs, n: int) -> Pairs:
    key = pairs.src * n + pairs.dst
    _, first = np.unique(key, return_index=True)
    return Pairs(pairs.src[first], pairs.dst[first], pairs.sim[first], pairs.info)


def _pair_recall(vecs: UnitVectors, threshold: float, pairs: Pairs, sample: int,
                 seed: int) -> dict[str, Any]:
    """Share of the exact similar pairs of `sample` random rows that the search found."""
    n = len(vecs)
    rows = np.sort(np.random.default_rng(seed + 1).choice(n, size=min(sample, n), replace=False))
    sims = vecs.x32[rows] @ vecs.x32.T
    over = vecs.exceeds(sims, rows, np.arange(n), threshold)
    over[np.arange(len(rows)), rows] = False
    r, c = np.nonzero(over)
    a, b = np.maximum(rows[r], c), np.minimum(rows[r], c)
    truth = np.unique(a * n + b)
    found = np.unique(pairs.src * n + pairs.dst)
    hits = np.isin(truth, found).sum()
    recall = 1.0 if len(truth) == 0 else float(hits / len(truth))
    return {"pair_recall": round(recall, 4), "recall_pairs": len(truth),
            "recall_rows": len(rows)}


def priority_order(data: pl.DataFrame, keep_by: str | None) -> np.ndarray:
    """Row positions, highest `keep_by` first; ties keep input order, missing values last."""
    n = data.height
    if keep_by is None:
        return np.arange(n)
    if keep_by not in data.columns:
        raise ValueError(f"no column {keep_by!r} to keep by (columns: {', '.join(data.columns)})")
    return (data.select(pl.int_range(n).alias("i"), pl.col(keep_by).alias("k"))
            .sort("k", descending=True, nulls_last=True, maintain_order=True)["i"].to_numpy())


def explain(data: pl.DataFrame, order: np.ndarray, result: Resolution,
            reason: str) -> pl.DataFrame:
    """`data` in its own order with `duplicate_of` (the kept twin's id), `similarity` and the
    drop reason on every dropped row."""
    n = data.height
    kept, twin, sim = np.empty(n, dtype=bool), np.full(n, -1, dtype=np.int64), np.full(n, np.nan)
    kept[order] = result.kept
    has = result.twin >= 0
    twin[order[has]] = order[result.twin[has]]
    sim[order] = result.similarity
    return data.with_columns(
        pl.when(pl.Series(twin >= 0)).then(pl.col("id").gather(pl.Series(np.maximum(twin, 0))))
        .alias("duplicate_of"),
        pl.Series("similarity", sim, pl.Float64).fill_nan(None),
        pl.when(pl.Series(~kept)).then(pl.lit(reason)).alias(DROP),
    )
