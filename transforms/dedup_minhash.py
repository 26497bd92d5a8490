"""`dedup_minhash`: near-duplicate text by MinHash-LSH over word or character n-grams.

The text (columns joined, lowercased, whitespace and, for words, punctuation ignored) is cut
into n-gram shingles; MinHash signatures estimate the Jaccard similarity of two shingle sets,
LSH bands propose candidate pairs, and a pair counts when its estimated Jaccard is > threshold.
Rows are then kept greedily by `keep_by` (else input order), as in `dedup_embedding`: each
dropped row names its kept twin (`duplicate_of`) and their estimated Jaccard (`similarity`).
Memory stays bounded: n × num_perm uint32 signatures, shingles hashed a chunk at a time.
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
import polars as pl
from pydantic import Field

from workbench.algorithms.minhash import (
    candidate_pairs,
    estimated_jaccard,
    optimal_bands,
    signatures,
)
from workbench.algorithms.neardup import Pairs, explain, priority_order, resolve
from workbench.algorithms.ngrams import ngram_table, whole_keys
from workbench.schema import as_text
from workbench.transform import Context, StepConfig, transform


class DedupMinhashConfig(StepConfig):
    columns: list[str] = Field(["prompt"], min_length=1, description="text columns compared")
    shingle: Literal["word", "char"] = Field("word", description="n-grams of words or chars")
    n: int = Field(3, ge=1, description="shingle length in tokens (texts shorter than n "
                   "tokens are one shingle)")
    threshold: float = Field(0.8, gt=0, lt=1, description="estimated Jaccard > this is a "
                             "duplicate")
    num_perm: int = Field(128, ge=8, le=1024, description="MinHash permutations")
    keep_by: str | None = Field(None, description="keep the row with the highest value of "
                                "this column in each cluster (default: the first row)")
    bucket_cap: int = Field(100, ge=1, description="pairs per row and LSH bucket, at most")


@transform("dedup_minhash", scope="global", keeps_content=True)
def dedup_minhash(frame: pl.LazyFrame, config: DedupMinhashConfig,
                  ctx: Context) -> pl.LazyFrame:
    """Keeps one row per cluster of near-duplicate texts; the others name their kept twin."""
    data = frame.collect()
    missing = [c for c in config.columns if c not in data.columns]
    if missing:
        raise ValueError(f"no column {missing[0]!r} (columns: {', '.join(data.columns)})")
    order = priority_order(data, config.keep_by)
    texts = data.select(pl.concat_str([as_text(data.schema, c) for c in config.columns],
                                      separator="\n", ignore_nulls=True)).to_series()[order]
    sig = _signatures(texts, config)
    bands, rows = _bands(config.threshold, config.num_perm)
    src, dst = candidate_pairs(sig, bands, rows, config.bucket_cap)
    sim = estimated_jaccard(sig, src, dst)
    similar = sim > config.threshold
    pairs = Pairs(src[similar], dst[similar], sim[similar])
    result = resolve(len(order), pairs)
    ctx.report({"candidates": len(src), "pairs": int(similar.sum()),
                           "bands": bands, "rows_per_band": rows,
                           "dropped": int((~result.kept).sum()), "threshold": config.threshold})
    reason = f"near-duplicate (MinHash Jaccard > {config.threshold:g})"
    return explain(data, order, result, reason).lazy()


def _signatures(texts: pl.Series, config: DedupMinhashConfig) -> np.ndarray:
    """Signatures of each text's n-grams; a text shorter than n tokens is one shingle."""
    grams, counts = ngram_table(texts, config.n, config.shingle)
    short = np.flatnonzero((counts > 0) & (counts < config.n))
    if len(short):
        whole = whole_keys(texts[short], config.shingle)
        extra = pl.DataFrame({"row": short.astype(np.int64), "start": np.zeros(len(short),
                              dtype=np.int64), "key": whole})
        grams = pl.concat([grams, extra]).sort("row", maintain_order=True)
    return signatures(grams["row"].to_numpy(), grams["key"].to_numpy(), len(texts),
                      config.num_perm)


@functools.cache
def _bands(threshold: float, num_perm: int) -> tuple[int, int]:
    return optimal_bands(threshold, num_perm)
