"""Real rows from data/ and their MiniLM embeddings, made once per test process.

2,000 prompts: GSM8K test questions (1,319), IFEval prompts (541) and the last user turns of
the first 140 HH-RLHF pairs. Embedding them takes ~25 s on two idle cores, so every test
that needs them shares one copy (set WORKBENCH_TEST_CACHE to a folder to keep it between
runs while developing).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import polars as pl

DATA = Path(__file__).resolve().parent.parent / "data"


@functools.cache
def prompts() -> pl.DataFrame:
    """`id`, `prompt` (messages) and `text` (the last user turn) of 2,000 real rows."""
    from workbench.io.importer import load

    parts = [load(DATA / "benchmarks/gsm8k_test.jsonl")[0],
             load(DATA / "benchmarks/ifeval_input_data.jsonl")[0],
             load(DATA / "hh_rlhf_harmless_test_600.jsonl.gz")[0].head(140)]
    frame = pl.concat([p.select("id", "prompt") for p in parts])
    return frame.with_columns(pl.col("prompt").list.last().struct.field("content").alias("text"))


@functools.cache
def embeddings() -> np.ndarray:
    """(2000, 384) unit float32 vectors of `prompts()["text"]`."""
    from workbench.models.embeddings import embed

    folder = os.environ.get("WORKBENCH_TEST_CACHE")
    path = Path(folder) / "realrows-minilm.npy" if folder else None
    if path is not None and path.exists():
        return np.load(path)
    vectors = embed(prompts()["text"].to_list())
    if path is not None:
        np.save(path, vectors)
    return vectors
