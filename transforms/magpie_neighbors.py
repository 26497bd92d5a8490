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

0.05 is a distance of mpnet's: another encoder spreads distances differently, so the default
threshold is the one calibrated for the encoder (THRESHOLDS, measured by
scripts/calibrate_neighbors.py: the encoder's distance that flags the same pairs of real
instructions as mpnet's 0.05, docs/methods.md §1.6). An encoder without a calibrated value
needs `threshold:`; the step report records the encoder and threshold used.
"""

from __future__ import annotations

from pathlib import PurePath

import numpy as np
import polars as pl
from pydantic import Field, model_validator

from workbench.transform import Context, StepConfig, transform

REFERENCE_ENCODER = "all-mpnet-base-v2"
# Repeat thresholds (squared L2 of unit vectors) per encoder, by model name: mpnet's is
# Magpie's; MiniLM's flags as many of 3,275 (real instruction, light edit) pairs as mpnet's
# 0.05 does (2,022), measured with scripts/calibrate_neighbors.py (docs/methods.md §1.6).
THRESHOLDS = {REFERENCE_ENCODER: 0.05, "all-minilm-l6-v2": 0.031}
EMBEDDED_ENCODER = "all-minilm-l6-v2"


class NeighborsConfig(StepConfig):
    encoder: str = Field("embedded", description="sentence-transformers model (reference: "
                         "all-mpnet-base-v2); embedded = all-MiniLM-L6-v2")
    k: int = Field(500, ge=2, description="neighbours searched per row")
    threshold: float | None = Field(None, gt=0, description="squared L2 below which rows are "
                                    "repeats; default: calibrated for the encoder (0.05 for "
                                    "all-mpnet-base-v2, Magpie's)")
    batch_size: int = Field(64, ge=1)

    @model_validator(mode="after")
    def _threshold_known(self) -> NeighborsConfig:
        if self.threshold is None:
            calibrated_threshold(self.encoder)  # raises at validation, naming the encoder
        return self


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
    threshold = config.threshold or calibrated_threshold(config.encoder)
    texts = data.select(first_user).to_series().to_list()
    vectors = embed(texts, model=config.encoder, batch_size=config.batch_size)
    distance, repeats, similar = neighbor_stats(vectors, data["id"].to_list(), config.k,
                                                threshold)
    ctx.report({"encoder": config.encoder, "threshold": threshold,
                "threshold_from": "set" if config.threshold else "calibrated for the encoder",
                "rows_with_repeats": int(sum(r > 0 for r in repeats))})
    return data.with_columns(
        pl.Series("min_neighbor_distance", distance, pl.Float64),
        pl.Series("repeat_count", repeats, pl.Int64),
        pl.Series("min_similar_id", similar, pl.String),
    ).lazy()


def calibrated_threshold(encoder: str) -> float:
    """The repeat threshold calibrated for `encoder` (a name or path; `embedded` is
    all-MiniLM-L6-v2), found by its model name; raises for an encoder never calibrated."""
    name = EMBEDDED_ENCODER if encoder == "embedded" else PurePath(encoder.rstrip("/")).name
    if name.lower() in THRESHOLDS:
        return THRESHOLDS[name.lower()]
    raise ValueError(
        f"magpie_neighbors: no repeat threshold is calibrated for encoder {encoder!r} (known: "
        f"{', '.join(sorted(THRESHOLDS))}); set `threshold:` (scripts/calibrate_neighbors.py "
        f"measures the one that flags the pairs mpnet's 0.05 does)")


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
