"""MinHash signatures and LSH banding, vectorised with numpy (datasketch's scheme, faster).

Each shingle hash x (32 bits) goes through `num_perm` hashes h_k(x) = (a_k·x + b_k) >> 32
over 64-bit words (multiply-shift, a 2-universal family like datasketch's (a·x + b) mod p,
but without the 64-bit modulo that dominates the cost); a text's signature is the minimum
per k, and the share of equal entries estimates the Jaccard similarity of two shingle sets.
Bands of `rows` entries go to buckets; texts that share a bucket in any band are candidate
pairs. `optimal_bands` picks the band shape for a threshold as datasketch's MinHashLSH does
(least weighted false positives and negatives).

Memory is bounded: signatures are n × num_perm uint32, shingles are hashed a chunk at a time.
"""

from __future__ import annotations

import numpy as np

LOW32 = np.uint64((1 << 32) - 1)
EMPTY = np.uint32((1 << 32) - 1)  # the signature entry of a text with no shingles


def permutations(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64)
    return a, b  # a odd: multiply-shift needs it


def signatures(rows: np.ndarray, keys: np.ndarray, n: int, num_perm: int = 128, seed: int = 1,
               chunk: int = 65_536) -> np.ndarray:
    """MinHash signatures (n x num_perm, uint32) of the shingles `keys` of each row `rows`
    (sorted by row). Rows without shingles keep the all-max signature."""
    a, b = permutations(num_perm, seed)
    sig = np.full((n, num_perm), EMPTY, dtype=np.uint32)
    x = (keys & LOW32).astype(np.uint64)
    shift = np.uint64(32)
    with np.errstate(over="ignore"):
        for lo in range(0, len(x), chunk):
            hi = min(len(x), lo + chunk)
            h = ((x[lo:hi, None] * a[None, :] + b[None, :]) >> shift).astype(np.uint32)
            r = rows[lo:hi]
            starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
            mins = np.minimum.reduceat(h, starts, axis=0)
            owners = r[starts]
            sig[owners] = np.minimum(sig[owners], mins)  # a row may span two chunks
    return sig


def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.1,
                  fn_weight: float = 0.9) -> tuple[int, int]:
    """(bands, rows per band) minimising weighted false-positive and false-negative areas.

    datasketch weighs both 0.5 because its candidates are its answer; here every candidate
    is checked against its estimated Jaccard, so a false positive costs one comparison and
    the default leans to recall (at threshold 0.7: a pair with Jaccard 0.8 is a candidate
    with probability 0.998 instead of 0.87)."""
    best, shape = np.inf, (1, num_perm)
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            s = np.linspace(0, 1, 1001)
            p = 1 - (1 - s**rows) ** bands
            fp = np.trapezoid(np.where(s < threshold, p, 0), s)
            fn = np.trapezoid(np.where(s >= threshold, 1 - p, 0), s)
            error = fp * fp_weight + fn * fn_weight
            if error < best:
                best, shape = error, (bands, rows)
    return shape


def candidate_pairs(sig: np.ndarray, bands: int, rows: int,
                    bucket_cap: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """(src, dst) positions sharing a bucket in some band, src > dst. Inside a bucket each
    row is paired with at most the `bucket_cap` first (highest-priority) rows of it, so a
    huge bucket costs n·cap pairs, not n²."""
    n = sig.shape[0]
    srcs, dsts = [], []
    for band in range(bands):
        part = np.ascontiguousarray(sig[:, band * rows:(band + 1) * rows])
        key = _band_keys(part)
        order = np.lexsort((np.arange(n), key))
        k = key[order]
        start = np.r_[True, k[1:] != k[:-1]]
        group_start = np.maximum.accumulate(np.where(start, np.arange(n), 0))
        rank = np.arange(n) - group_start  # position inside its bucket
        take = np.minimum(rank, bucket_cap)
        member = np.repeat(np.arange(n), take)
        offset = np.arange(take.sum()) - np.repeat(np.cumsum(take) - take, take)
        srcs.append(order[member])
        dsts.append(order[group_start[member] + offset])
    if not srcs:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    src, dst = np.concatenate(srcs), np.concatenate(dsts)
    key = np.unique(src.astype(np.int64) * n + dst)
    return key // n, key % n


def _band_keys(part: np.ndarray) -> np.ndarray:
    """One uint64 per row for a band's entries (a polynomial hash; equal bands, equal keys)."""
    key = np.zeros(part.shape[0], dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in part.T:
            key = key * np.uint64(0x100000001B3) + column.astype(np.uint64) + np.uint64(1)
    return key


def estimated_jaccard(sig: np.ndarray, src: np.ndarray, dst: np.ndarray,
                      chunk: int = 500_000) -> np.ndarray:
    """Share of equal signature entries per pair."""
    out = np.empty(len(src))
    for lo in range(0, len(src), chunk):
        hi = min(len(src), lo + chunk)
        out[lo:hi] = (sig[src[lo:hi]] == sig[dst[lo:hi]]).mean(1)
    return out
