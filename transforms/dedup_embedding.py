"""`dedup_embedding`: near-duplicates by cosine similarity of embeddings, explained.

Rows are ranked by `keep_by` (highest first; ties and missing values keep input order) and a
row is dropped when a kept row ranked above it has cosine > threshold with it. Each dropped
row names that kept row (`duplicate_of`, the most similar one) and the `similarity`, so a
reviewer sees both texts side by side. Search is exact up to `exact_up_to` rows, an IVF join
(FAISS k-means cells) above it, whose pair recall is measured and written to the run log.
"""

from __future__ import annotations

import polars as pl
from pydantic import Field

from workbench.algorithms.diversity import embedding_matrix
from workbench.algorithms.neardup import cosine_pairs, explain, priority_order, resolve
from workbench.transform import Context, StepConfig, transform


class DedupEmbeddingConfig(StepConfig):
    embedding: str = Field("embedding", description="vector column (from `embed`)")
    threshold: float = Field(0.95, ge=-1, le=1, description="cosine > this is a duplicate")
    keep_by: str | None = Field(None, description="keep the row with the highest value of "
                                "this column in each cluster (default: the first row)")
    exact_up_to: int = Field(20_000, ge=0, description="exact search up to this many rows, "
                             "an IVF join above (recall measured and logged)")
    cell: int = Field(128, ge=8, description="IVF: rows per k-means cell")
    nprobe: int = Field(8, ge=1, description="IVF: cells each row is compared with")


@transform("dedup_embedding", scope="global", keeps_content=True)
def dedup_embedding(frame: pl.LazyFrame, config: DedupEmbeddingConfig,
                    ctx: Context) -> pl.LazyFrame:
    """Keeps one row per cluster of near-duplicates; the others name their kept twin."""
    data = frame.collect()
    if config.embedding not in data.columns:
        raise ValueError(f"no column {config.embedding!r}: run `embed` first "
                         f"(columns: {', '.join(data.columns)})")
    order = priority_order(data, config.keep_by)
    vectors = embedding_matrix(data[config.embedding], config.embedding)[order]
    pairs = cosine_pairs(vectors, config.threshold, config.exact_up_to, config.cell,
                         config.nprobe, seed=ctx.seed)
    result = resolve(len(order), pairs)
    reason = f"near-duplicate (cosine > {config.threshold:g})"
    ctx.report({**pairs.info, "pairs": len(pairs.src),
                           "dropped": int((~result.kept).sum()), "threshold": config.threshold})
    return explain(data, order, result, reason).lazy()
