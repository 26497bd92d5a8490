"""Score-first greedy selection under a cosine threshold: deita's Repr Filter, made to scale.

The reference (docs/methods.md §3.2) walks the rows in score order and keeps a row unless its
cosine similarity with a kept row is > τ; with `batch_size` b > 1 a row is also rejected when
it is > τ with any earlier row of its own batch, kept or not. It re-copies the kept set for
every row. Here the kept set lives in one preallocated matrix that rows are appended to, the
candidates are compared with it a block at a time (one BLAS product per block), and only the
conflicts inside a block are resolved in order. The result is the reference's, row for row.

Similarities are computed in float32; the few within `EXACT_MARGIN` of τ are recomputed in
float64, so a decision never depends on BLAS summation order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EXACT_MARGIN = 1e-4  # float32 dot products of unit vectors err far less than this
SELECTED, SIMILAR, NOT_REACHED = 0, 1, 2


@dataclass
class Selection:
    """Per input row: `status` (SELECTED, SIMILAR, or NOT_REACHED once the budget was met)
    and, for SIMILAR rows, the similarity and position of the row that excluded it.
    `order` lists the selected positions in selection order."""

    order: np.ndarray
    status: np.ndarray
    similarity: np.ndarray
    twin: np.ndarray


class UnitVectors:
    """Rows scaled to unit norm as float32 for BLAS, with exact float64 dot products on demand
    (computed from the input, so no float64 copy of the whole matrix is kept)."""

    def __init__(self, vectors: np.ndarray) -> None:
        raw = np.asarray(vectors)
        if raw.ndim != 2:
            raise ValueError(f"embeddings must be a matrix, got shape {raw.shape}")
        self.raw = raw
        norms = np.sqrt(np.einsum("ij,ij->i", raw, raw, dtype=np.float64))
        if not np.isfinite(norms).all():  # a NaN or infinite entry makes its row's norm so
            raise ValueError("embeddings contain NaN or infinite values")
        self.inv = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0)
        self.x32 = np.empty(raw.shape, dtype=np.float32)
        np.multiply(raw, self.inv[:, None].astype(np.float32), out=self.x32, casting="unsafe")

    def __len__(self) -> int:
        return self.x32.shape[0]

    def exact(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Cosine of rows a[k] and b[k] in float64 (zero rows give 0)."""
        dots = np.einsum("ij,ij->i", self.raw[a].astype(np.float64), self.raw[b].astype(np.float64))
        return dots * self.inv[a] * self.inv[b]

    def exceeds(self, sims: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                threshold: float) -> np.ndarray:
        """sims[i, j] > τ for the pairs (rows[i], cols[j]), near-τ entries decided exactly."""
        out = sims > threshold + EXACT_MARGIN
        near_r, near_c = np.nonzero(np.abs(sims - threshold) <= EXACT_MARGIN)
        if len(near_r):
            out[near_r, near_c] = self.exact(rows[near_r], cols[near_c]) > threshold
        return out


def greedy_select(
    vectors: np.ndarray | UnitVectors,
    threshold: float,
    budget: int = -1,
    batch_size: int = 1,
    block: int = 2048,
) -> Selection:
    """Select rows of `vectors` (already in score order) as deita's IterativeFilter does.

    Row 0 is always selected; selection stops once `budget` rows are selected (-1: no cap).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    vecs = vectors if isinstance(vectors, UnitVectors) else UnitVectors(vectors)
    n = len(vecs)
    status = np.full(n, NOT_REACHED, dtype=np.int8)
    similarity = np.full(n, np.nan)
    twin = np.full(n, -1, dtype=np.int64)
    if n == 0 or budget == 0:
        return Selection(np.zeros(0, dtype=np.int64), status, similarity, twin)
    cap = n if budget < 0 else min(n, budget)
    kept = _KeptSet(vecs, cap, threshold)
    kept.add(np.array([0]))
    status[0] = SELECTED
    step = batch_size * max(1, block // batch_size)  # a block holds whole reference batches
    start = 1
    while start < n and kept.size < cap:
        rows = np.arange(start, min(n, start + step))
        hit, best, where = kept.conflicts(rows)
        similarity[rows[hit]], twin[rows[hit]] = best[hit], where[hit]
        if batch_size == 1:
            accepted = _resolve_in_order(vecs, rows[~hit], threshold, similarity, twin)
        else:
            accepted = _resolve_batches(vecs, rows, hit, batch_size, threshold, similarity, twin)
        room = cap - kept.size
        if len(accepted) >= room:  # the budget is met inside this block: stop at that row
            accepted = accepted[:room]
            beyond = rows[rows > accepted[-1]]
            status[beyond], similarity[beyond], twin[beyond] = NOT_REACHED, np.nan, -1
            rows = rows[rows <= accepted[-1]]
        status[rows] = SIMILAR
        status[accepted] = SELECTED
        similarity[accepted], twin[accepted] = np.nan, -1
        kept.add(accepted)
        start += step
    return Selection(kept.positions(), status, similarity, twin)


class _KeptSet:
    """The selected rows as a preallocated float32 matrix, appended to in place."""

    def __init__(self, vecs: UnitVectors, cap: int, threshold: float) -> None:
        self.vecs, self.threshold = vecs, threshold
        self.matrix = np.empty((cap, vecs.x32.shape[1]), dtype=np.float32)
        self.index = np.empty(cap, dtype=np.int64)
        self.size = 0

    def add(self, rows: np.ndarray) -> None:
        end = self.size + len(rows)
        self.matrix[self.size:end] = self.vecs.x32[rows]
        self.index[self.size:end] = rows
        self.size = end

    def positions(self) -> np.ndarray:
        return self.index[: self.size].copy()

    def conflicts(self, rows: np.ndarray, chunk: int = 8192) -> tuple[np.ndarray, ...]:
        """Per row: whether a kept row is > τ, the best similarity and that kept row."""
        best = np.full(len(rows), -np.inf, dtype=np.float32)
        where = np.full(len(rows), -1, dtype=np.int64)
        hit = np.zeros(len(rows), dtype=bool)
        queries = self.vecs.x32[rows]
        every = np.arange(len(rows))
        for lo in range(0, self.size, chunk):
            hi = min(self.size, lo + chunk)
            sims = queries @ self.matrix[lo:hi].T
            arg = sims.argmax(1)
            top = sims[every, arg]
            better = top > best
            best[better], where[better] = top[better], self.index[lo + arg[better]]
            hit |= self.vecs.exceeds(sims, rows, self.index[lo:hi], self.threshold).any(1)
        return hit, best.astype(np.float64), where


def _resolve_in_order(vecs: UnitVectors, cand: np.ndarray, threshold: float,
                      similarity: np.ndarray, twin: np.ndarray) -> np.ndarray:
    """batch_size 1: a candidate survives unless it is > τ with an earlier *accepted* one.
    Only candidates in conflict with an earlier one need the sequential pass."""
    if len(cand) == 0:
        return cand
    sims = vecs.x32[cand] @ vecs.x32[cand].T
    conflict = np.tril(vecs.exceeds(sims, cand, cand, threshold), -1)
    accepted = ~conflict.any(1)
    for r in np.flatnonzero(~accepted):
        blockers = conflict[r, :r] & accepted[:r]
        if blockers.any():
            k = np.flatnonzero(blockers)[np.argmax(sims[r, :r][blockers])]
            similarity[cand[r]], twin[cand[r]] = sims[r, k], cand[k]
        else:
            accepted[r] = True
    return cand[accepted]


def _resolve_batches(vecs: UnitVectors, rows: np.ndarray, hit: np.ndarray, batch_size: int,
                     threshold: float, similarity: np.ndarray, twin: np.ndarray) -> np.ndarray:
    """batch_size b > 1, the reference's rule: a row is rejected when > τ with a kept row
    (earlier batches, of this block too) or with any earlier row of its own batch."""
    sims = vecs.x32[rows] @ vecs.x32[rows].T
    conflict = vecs.exceeds(sims, rows, rows, threshold)
    accepted = np.zeros(len(rows), dtype=bool)
    for lo in range(0, len(rows), batch_size):
        hi = min(len(rows), lo + batch_size)
        blockers = conflict[lo:hi, :hi].copy()
        blockers[:, :lo] &= accepted[:lo]  # earlier batches: only their kept rows count
        blockers[:, lo:hi] = np.tril(blockers[:, lo:hi], -1)  # own batch: every earlier row
        blocked = blockers.any(1)
        accepted[lo:hi] = ~(hit[lo:hi] | blocked)
        explain = np.flatnonzero(blocked & ~hit[lo:hi])
        if len(explain):
            masked = np.where(blockers[explain], sims[lo + explain, :hi], -np.inf)
            k = masked.argmax(1)
            similarity[rows[lo + explain]] = masked[np.arange(len(explain)), k]
            twin[rows[lo + explain]] = rows[k]
    return rows[accepted]


def embedding_matrix(series: object, column: str = "embedding") -> np.ndarray:
    """A polars list/array column of equal-length vectors as an (n, d) float32 matrix,
    without a Python loop (a missing or ragged vector is an error naming the row)."""
    import polars as pl

    assert isinstance(series, pl.Series)
    if isinstance(series.dtype, pl.Array):
        if series.null_count():
            raise ValueError(f"column {column!r}: row {series.is_null().arg_true()[0]} has no vector")
        return np.ascontiguousarray(series.to_numpy(), dtype=np.float32)
    if not isinstance(series.dtype, pl.List):
        raise ValueError(f"column {column!r} holds {series.dtype}, not vectors (run `embed` first)")
    lengths = series.list.len()
    if series.null_count():
        raise ValueError(f"column {column!r}: row {series.is_null().arg_true()[0]} has no vector")
    if len(series) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    dim = int(lengths[0])
    ragged = (lengths != dim).arg_true()
    if len(ragged):
        raise ValueError(f"column {column!r}: row {ragged[0]} has {lengths[ragged[0]]} values, "
                         f"row 0 has {dim}")
    flat = series.explode().to_numpy()
    return np.ascontiguousarray(flat.reshape(len(series), dim), dtype=np.float32)
