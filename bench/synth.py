"""Benchmark inputs at any size, built from the real texts in data/: each row joins a few
random sentences of GSM8K, IFEval and HH-RLHF, and a share of rows are near-copies of an
earlier row (case changed, one word dropped), so dedup and decontamination have work to do."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl

DATA = Path(__file__).resolve().parent.parent / "data"


def sentences() -> list[str]:
    from workbench.io.importer import load

    texts: list[str] = []
    for name in ("benchmarks/gsm8k_test.jsonl", "benchmarks/ifeval_input_data.jsonl"):
        frame = load(DATA / name)[0]
        texts += frame["prompt"].list.last().struct.field("content").to_list()
    texts += load(DATA / "hh_rlhf_harmless_test_600.jsonl.gz")[0]["chosen"].to_list()
    found = [s.strip() for t in texts for s in re.split(r"(?<=[.?!])\s+", t)]
    return sorted({s for s in found if len(s.split()) >= 4})


def texts(n: int, copies: float = 0.1, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    pool = sentences()
    picks = rng.integers(0, len(pool), size=(n, 3))
    out = [" ".join(pool[j] for j in row) for row in picks]
    for i in np.flatnonzero(rng.random(n) < copies):
        if i == 0:
            continue
        words = out[int(rng.integers(0, i))].split()
        del words[int(rng.integers(0, len(words)))]
        out[i] = " ".join(words).upper()
    return out


def frame(n: int, **kwargs: float) -> pl.DataFrame:
    """An instruction frame (`id`, `prompt`) of `texts(n)`."""
    from workbench.schema import user

    return pl.DataFrame({"text": texts(n, **kwargs)}).select(
        pl.format("row{}", pl.int_range(pl.len())).alias("id"), user("text").alias("prompt"))
