"""deita's Repr Filter on two representations of the same 2,000 real rows: MiniLM over the
instruction (what `embed` does without `model`) and deita's CLM embedder (`embed: {model:
...}`: the conversation in vicuna_v1.1, the final hidden state at the last token) on the
embedded SmolLM2-135M. Both orderings are the same (score = words of the instruction,
stable); prints, per threshold, how many rows each selects within the budget and how many of
those selections are shared (overlap = |A ∩ B| / budget).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/deita_embedders.py [--budget 500]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import polars as pl

from workbench.algorithms.diversity import greedy_select

DATA = Path(__file__).resolve().parent.parent / "data"


def rows() -> pl.DataFrame:
    """2,000 real instructions: GSM8K test (1,319), IFEval (541), 140 HH-RLHF first turns."""
    from workbench.io.importer import load

    parts = [load(DATA / "benchmarks/gsm8k_test.jsonl")[0],
             load(DATA / "benchmarks/ifeval_input_data.jsonl")[0],
             load(DATA / "hh_rlhf_harmless_test_600.jsonl.gz")[0].head(140)]
    frame = pl.concat([p.select("id", "prompt") for p in parts])
    return frame.with_columns(pl.col("prompt").list.last().struct.field("content").alias("text"))


def clm_vectors(frame: pl.DataFrame) -> np.ndarray:
    from transforms.embed import EmbedConfig, _conversation
    from workbench.models import load_backend
    from workbench.models.spec import ModelSpec

    prompts_only = frame.select("prompt")
    texts = prompts_only.select(_conversation(prompts_only.schema, EmbedConfig(model="m")))
    backend = load_backend(ModelSpec(backend="transformers", model="embedded",
                                     options={"batch_size": 32}))
    states = backend.hidden_states(texts.to_series().to_list(), [""] * frame.height)
    x = np.stack([np.asarray(s)[-1] for s in states]).astype(np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=int, default=500)
    args = parser.parse_args()
    frame = rows()
    order = np.argsort(-frame["text"].str.count_matches(r"\S+").to_numpy(), kind="stable")
    from workbench.models.embeddings import embed

    t0 = time.perf_counter()
    minilm = np.asarray(embed(frame["text"].to_list()), dtype=np.float64)
    t1 = time.perf_counter()
    clm = clm_vectors(frame)
    t2 = time.perf_counter()
    print(f"rows {frame.height}; MiniLM {t1 - t0:.1f} s, CLM (SmolLM2-135M) {t2 - t1:.1f} s")
    for name, x in (("MiniLM", minilm), ("CLM", clm)):
        sims = x[order[:500]] @ x[order[:500]].T
        print(f"  {name}: mean pairwise cosine of 500 rows {sims[np.triu_indices(500, 1)].mean():.3f}")
    print(f"budget {args.budget}: threshold, selected by MiniLM, by CLM, shared, overlap")
    for threshold in (0.5, 0.7, 0.9, 0.95, 0.99):
        picks = []
        for x in (minilm, clm):
            chosen = greedy_select(x[order], threshold, budget=args.budget)
            picks.append({int(order[i]) for i in chosen.order})
        shared = len(picks[0] & picks[1])
        print(f"  {threshold:.2f}  {len(picks[0]):5d}  {len(picks[1]):5d}  {shared:5d}  "
              f"{shared / args.budget:.2f}")


if __name__ == "__main__":
    main()
