"""Real rows from data/ and their MiniLM embeddings, made once per test process.

2,000 prompts: GSM8K test questions (1,319), IFEval prompts (541) and the last user turns of
the first 140 HH-RLHF pairs. Embedding them takes ~25 s on two idle cores, so every test
that needs them shares one copy: per process, between the workers of one `pytest -n` run
(a file in the run's shared folder, see conftest, made by the first worker under a lock),
and between runs when WORKBENCH_TEST_CACHE names a folder (while developing).
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
    from workbench.store.atomic import file_lock

    folder = os.environ.get("WORKBENCH_TEST_CACHE") or os.environ.get("WORKBENCH_TEST_SHARED")
    if folder is None:
        return embed(prompts()["text"].to_list())
    path = Path(folder) / "realrows-minilm.npy"
    with file_lock(path.with_suffix(".lock")):  # one worker embeds, the others wait for it
        if not path.exists():
            scratch = path.with_suffix(".partial.npy")
            np.save(scratch, embed(prompts()["text"].to_list()))
            scratch.replace(path)
    return np.load(path)

