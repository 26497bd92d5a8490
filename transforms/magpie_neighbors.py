"""`magpie_neighbors`: `min_neighbor_distance`, `repeat_count` and `min_similar_id`, computed
exactly as Magpie's `gen_dis.py` does (docs/methods.md §1.6).

The first-turn instruction is embedded (unit vectors) and searched in a flat L2 index, so the
scores are squared L2 distances (2 − 2·cos for unit vectors), k = 500 per row:
- `min_neighbor_distance` = the second hit's distance (the first is assumed to be the row);
- neighbours other than the row itself with distance < `threshold` (0.05, i.e. cos > 0.975)
  are its near-duplicates, `repeat_count` counts them;
- `min_similar_id` = the id of the smallest index among them, or the row's own id when its
  index is smaller than all of them; null when it has none.
Magpie keeps a row iff `min_similar_id` is null or its own id; the dedup is not transitive
(§1.9), which is reproduced. Magpie's encoder is all-mpnet-base-v2; offline the embedded
MiniLM is the default (`encoder:` takes any sentence-transformers path).
"""

from __future__ import annotations

import numpy as np
import polars as pl
from pydantic import Field

from workbench.transform import Context, StepConfig, transform


class NeighborsConfig(StepConfig):
    encoder: str = Field("embedded", description="sentence-transformers model (reference: "
                         "all-mpnet-base-v2); embedded = all-MiniLM-L6-v2")
    k: int = Field(500, ge=2, description="neighbours searched per row")
    threshold: float = Field(0.05, gt=0, description="squared L2 below which rows are repeats")
    batch_size: int = Field(64, ge=1)


@transform("magpie_neighbors", scope="global", consumes="any", produces="same",
           keeps_content=True)
def magpie_neighbors(frame: pl.LazyFrame, config: NeighborsConfig,
                     ctx: Context) -> pl.LazyFrame:
    """Near-duplicate statistics of each instruction among all rows (FAISS, flat L2)."""
    from workbench.models.embeddings import embed

    data = frame.collect()
    first_user = pl.col("prompt").list.eval(
        pl.element().filter(pl.element().struct.field("role") == "user")
        .struct.field("content")).list.first().fill_null("")
    texts = data.select(first_user).to_series().to_list()
    vectors = embed(texts, model=config.encoder, batch_size=config.batch_size)
    distance, repeats, similar = neighbor_stats(vectors, data["id"].to_list(), config.k,
                                                config.threshold)
    return data.with_columns(
        pl.Series("min_neighbor_distance", distance, pl.Float64),
        pl.Series("repeat_count", repeats, pl.Int64),
        pl.Series("min_similar_id", similar, pl.String),
    ).lazy()


def neighbor_stats(vectors: np.ndarray, ids: list[str], k: int, threshold: float
                   ) -> tuple[list[float | None], list[int], list[str | None]]:
    """The three Magpie statistics from unit vectors, with a flat L2 FAISS index."""
    import faiss

    n = len(ids)
    if n == 0:
        return [], [], []
    index = faiss.IndexFlatL2(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    scores, hits = index.search(np.ascontiguousarray(vectors, dtype=np.float32), min(k, n))
    own = np.arange(n)[:, None]
    near = (scores < threshold) & (hits != own) & (hits >= 0)
    repeats = near.sum(axis=1)
    smallest = np.where(near, hits, n).min(axis=1)  # n: no near-duplicate
    min_distance = [float(s[1]) if len(s) > 1 else None for s in scores]
    similar = [None if repeats[i] == 0 else ids[i] if i < smallest[i] else ids[smallest[i]]
               for i in range(n)]
    return min_distance, repeats.astype(int).tolist(), similar
