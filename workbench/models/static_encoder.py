"""Static embeddings distilled from a sentence-transformer, for embedding millions of texts on a
CPU (the Model2Vec recipe, written here so it needs no extra package).

Distillation, once per teacher and size, offline: every vocabulary token is run alone through
the teacher (`[CLS] token [SEP]`, mean-pooled as the teacher pools a sentence), the token
vectors are reduced by PCA, and each is scaled by a SIF weight a / (a + p) with p the token's
Zipf probability by vocabulary rank (WordPiece vocabularies are roughly frequency-ordered).
Encoding a text is then a tokenizer call and the mean of its tokens' rows: no transformer, so
it runs at tens of thousands of texts per second. It is a cheaper, rougher encoder than its
teacher (bench/embeddings.py measures both the speed and how far its neighbours agree); the
teacher stays the default where quality matters.

The result is cached under `<cache>/static/` keyed on the teacher's files, the size and the
recipe version; it is built in a temporary folder and renamed, so a killed build leaves nothing.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix

from workbench.store.atomic import atomic_dir, file_lock

RECIPE_VERSION = 1
DEFAULT_DIMS = 256
SIF_COEFFICIENT = 1e-4
MAX_TOKENS = 8192  # per text: a static mean does not need more, and it bounds memory
PREFIX = "static"


@dataclass(frozen=True)
class StaticEncoder:
    vectors: np.ndarray  # vocabulary x dims, float32
    tokenizer: Any  # tokenizers.Tokenizer
    folder: Path

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def encode(self, texts: list[str], batch_size: int = 4096) -> np.ndarray:
        """Unit-length mean token vectors (len(texts) x dim); a text with no tokens is zero."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for lo in range(0, len(texts), batch_size):
            batch = [t if isinstance(t, str) else "" for t in texts[lo:lo + batch_size]]
            ids = [e.ids[:MAX_TOKENS] for e in self.tokenizer.encode_batch(
                batch, add_special_tokens=False)]
            counts = np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids))
            flat = np.fromiter((t for i in ids for t in i), dtype=np.int64, count=int(counts.sum()))
            # token counts per text (sparse) times the token vectors: no gathered copy per token
            bag = csr_matrix((np.ones(len(flat), dtype=np.float32), flat,
                              np.r_[0, np.cumsum(counts)]), shape=(len(ids), len(self.vectors)))
            out[lo:lo + len(ids)] = (bag @ self.vectors) / np.maximum(counts, 1)[:, None]
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.ascontiguousarray(out / np.maximum(norms, 1e-12), dtype=np.float32)


def is_static(encoder: str) -> bool:
    """`static` (from the embedded MiniLM), `static:TEACHER`, `static@DIMS`, `static:TEACHER@DIMS`."""
    return encoder == PREFIX or encoder.startswith((PREFIX + ":", PREFIX + "@"))


def parse(encoder: str) -> tuple[str, int]:
    """(teacher, dims) of a `static...` encoder name."""
    rest = encoder[len(PREFIX):]
    dims = DEFAULT_DIMS
    if "@" in rest:
        rest, _, size = rest.rpartition("@")
        if not size.isdigit() or int(size) < 1:
            raise ValueError(f"encoder {encoder!r}: the size after @ must be a positive integer")
        dims = int(size)
    teacher = rest[1:] if rest.startswith(":") else "embedded"
    return teacher or "embedded", dims


@functools.lru_cache(maxsize=4)
def load(encoder: str = PREFIX) -> StaticEncoder:
    """The static encoder named by `encoder`, distilled first if the cache lacks it."""
    from tokenizers import Tokenizer

    folder = ensure_distilled(*parse(encoder))
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_truncation()  # the teacher's 256-token window does not apply to a mean
    tokenizer.no_padding()
    return StaticEncoder(np.load(folder / "vectors.npy"), tokenizer, folder)


def cache_dir(teacher: str, dims: int) -> Path:
    from workbench.models.embedded import cache_root
    from workbench.models.embeddings import model_path
    from workbench.models.fingerprint import folder_digest

    path = Path(model_path(teacher))
    if not path.is_dir():
        raise ValueError(f"static encoder: the teacher must be a local sentence-transformers "
                         f"folder or `embedded` (got {teacher!r})")
    ident = json.dumps({"teacher": folder_digest(path), "dims": dims, "recipe": RECIPE_VERSION,
                        "sif": SIF_COEFFICIENT})
    name = "all-MiniLM-L6-v2" if teacher == "embedded" else path.name
    return cache_root() / PREFIX / f"{name}-{dims}d-{hashlib.sha256(ident.encode()).hexdigest()[:12]}"


def ensure_distilled(teacher: str = "embedded", dims: int = DEFAULT_DIMS) -> Path:
    final = cache_dir(teacher, dims)
    if (final / "meta.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(final.parent / f".{final.name}.lock"):
        if (final / "meta.json").is_file():  # another process built it while we waited
            return final
        with atomic_dir(final) as tmp:
            meta = distill(teacher, dims, tmp)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    return final


def distill(teacher: str, dims: int, out: Path, batch_size: int = 512) -> dict[str, Any]:
    """Token vectors of `teacher`, PCA to `dims`, SIF-weighted; saved with its tokenizer."""
    import time

    import torch

    from workbench.models.embeddings import load_model

    start = time.perf_counter()
    st = load_model(teacher, "cpu")
    tokenizer = st.tokenizer
    transformer = st[0].auto_model.eval()
    vocab = len(tokenizer)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    token_vectors = np.zeros((vocab, transformer.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for lo in range(0, vocab, batch_size):
            ids = torch.arange(lo, min(vocab, lo + batch_size)).unsqueeze(1)
            parts = [ids] if cls is None else [torch.full_like(ids, cls), ids]
            if sep is not None:
                parts.append(torch.full_like(ids, sep))
            inputs = torch.cat(parts, dim=1)
            hidden = transformer(input_ids=inputs,
                                 attention_mask=torch.ones_like(inputs)).last_hidden_state
            token_vectors[lo:lo + len(ids)] = hidden.mean(dim=1).numpy()
    dims = min(dims, token_vectors.shape[1])
    centered = token_vectors - token_vectors.mean(axis=0)
    _, _, components = np.linalg.svd(centered, full_matrices=False)
    reduced = centered @ components[:dims].T
    inverse_rank = 1.0 / np.arange(2, vocab + 2)
    probability = inverse_rank / inverse_rank.sum()
    reduced *= (SIF_COEFFICIENT / (SIF_COEFFICIENT + probability))[:, None]
    np.save(out / "vectors.npy", reduced.astype(np.float32))
    tokenizer.backend_tokenizer.save(str(out / "tokenizer.json"))
    return {"teacher": teacher, "vocabulary": vocab, "dims": dims, "recipe": RECIPE_VERSION,
            "seconds": round(time.perf_counter() - start, 2)}
