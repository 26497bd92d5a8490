"""CHES cost against a bare forward pass over the same tokens, side by side in one process.

Same model object, same token sequences (prompt + chosen and prompt + rejected of real
HH-RLHF pairs), same batches (sorted by length, left padded). "Bare" is what a user would
write: `model(input_ids, attention_mask, position_ids)`, logits and all. CHES is the backend's
`hidden_states(pool="sum")` for both sides, and the whole `ches_score` step (tokenizing, the
call cache, the formula) in a fresh workspace each repeat. Repeats alternate so drift hits
all alike; the target is under 1.3x.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/ches.py [--pairs 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import polars as pl

from workbench.io.importer import load
from workbench.models import load_backend
from workbench.models.spec import ModelSpec
from workbench.registry import get
from workbench.transform import Context
from workbench.workspace import Workspace

DATA = Path(__file__).resolve().parent.parent / "data"


def pairs(count: int) -> pl.DataFrame:
    hh = load(DATA / "hh_rlhf_harmless_test_600.jsonl.gz")[0]
    return hh.filter(pl.col("chosen").str.len_chars().is_between(100, 600),
                     pl.col("rejected").str.len_chars().is_between(100, 600)).head(count)


def bare(backend, sequences: list[list[int]]) -> None:
    import torch

    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    for lo in range(0, len(order), backend.batch_size):
        ids, mask = backend._pad_left([sequences[i] for i in order[lo:lo + backend.batch_size]])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            backend.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                          use_cache=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    backend = load_backend(ModelSpec(backend="transformers", model="embedded"))
    frame = pairs(args.pairs)
    prompts = frame["prompt"].to_list()
    sides = [frame[c].to_list() for c in ("chosen", "rejected")]
    sequences = [backend._joint_ids(p, r)[0] for side in sides
                 for p, r in zip(prompts, side, strict=True)]
    tokens = sum(len(s) for s in sequences)
    timings: dict[str, list[float]] = {"bare forward": [], "hidden_states(sum)": [],
                                       "ches_score step": []}
    bare(backend, sequences[:2])  # warm up
    for _ in range(args.repeats):
        start = time.perf_counter()
        bare(backend, sequences)
        timings["bare forward"].append(time.perf_counter() - start)
        start = time.perf_counter()
        for side in sides:
            backend.hidden_states(prompts, side, pool="sum")
        timings["hidden_states(sum)"].append(time.perf_counter() - start)
        with tempfile.TemporaryDirectory() as folder:
            ctx = Context(workspace=Workspace(folder), model_loader=lambda name: backend)
            start = time.perf_counter()
            get("ches_score")({})(frame.lazy(), ctx).collect()
            timings["ches_score step"].append(time.perf_counter() - start)
    base = statistics.median(timings["bare forward"])
    print(f"{args.pairs} pairs, {len(sequences)} sequences, {tokens} tokens, "
          f"batch {backend.batch_size}, {backend.device}, median of {args.repeats}")
    for name, values in timings.items():
        median = statistics.median(values)
        print(f"  {name:<20} {median:7.2f} s  {tokens / median:8.0f} tokens/s  "
              f"{median / base:5.2f}x bare")


if __name__ == "__main__":
    main()
