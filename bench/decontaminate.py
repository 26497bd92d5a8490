"""`decontaminate` against every shipped benchmark: rows per second at 10k and 100k rows, and
a ratio against a straightforward reference of docs/methods.md §7.5 run side by side on the
same rows.

Rows come from bench/synth.py (real sentences of GSM8K, IFEval and HH-RLHF joined three at a
time, so many rows quote part of a benchmark question). The reference is what one would write
by hand: a dict from each benchmark n-gram to its instances, then per training document its
n-grams looked up one by one and the covered tokens of each hit instance counted in Python. It
runs on the first `--reference-rows` rows only (it is slow); the flagged rows of both on those
rows are compared.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/decontaminate.py [--sizes 10000 100000]
"""

from __future__ import annotations

import argparse
import re
import time
from collections import defaultdict

from synth import frame

from transforms.decontaminate import DecontaminateConfig, load_benchmarks
from workbench.registry import get
from workbench.transform import DROP, Context

WORD = re.compile(r"\w+")


def reference(texts: list[str], instances: list[str], n: int, threshold: float) -> list[bool]:
    """docs/methods.md §7.5 by hand: score(i, d) = |tokens of i covered by an n-gram d
    shares| / |tokens of i|; a short text (fewer than n tokens) matches only by exact
    normalised text."""
    inst_tokens = [WORD.findall(t.lower()) for t in instances]
    index: dict[tuple[str, ...], list[tuple[int, int]]] = defaultdict(list)
    short: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, toks in enumerate(inst_tokens):
        if 0 < len(toks) < n:
            short[tuple(toks)].append(i)
        for start in range(len(toks) - n + 1):
            index[tuple(toks[start:start + n])].append((i, start))
    flagged = []
    for text in texts:
        toks = WORD.findall(text.lower())
        if 0 < len(toks) < n:
            flagged.append(bool(short.get(tuple(toks))) and threshold < 1.0)
            continue
        covered: dict[int, set[int]] = defaultdict(set)
        for start in range(len(toks) - n + 1):
            for i, at in index.get(tuple(toks[start:start + n]), ()):
                covered[i].update(range(at, at + n))
        best = max((len(c) / len(inst_tokens[i]) for i, c in covered.items()), default=0.0)
        flagged.append(best > threshold)
    return flagged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--reference-rows", type=int, default=10_000)
    args = parser.parse_args()
    config = DecontaminateConfig()
    instances = load_benchmarks(config)
    print(f"benchmarks: {instances['benchmark'].value_counts().sort('benchmark').rows()} "
          f"({instances.height} instances), n={config.n}, threshold={config.threshold}")
    print(f"{'rows':>8} {'seconds':>8} {'rows/s':>9} {'flagged':>8}")
    step = get("decontaminate")({})
    ours_small = None
    for n in args.sizes:
        data = frame(n)
        start = time.perf_counter()
        out = step(data.lazy(), Context()).collect()
        seconds = time.perf_counter() - start
        flagged = out[DROP].is_not_null()
        print(f"{n:>8} {seconds:>8.2f} {n / seconds:>9.0f} {int(flagged.sum()):>8}")
        if ours_small is None:
            ours_small = (n, seconds, flagged)
    n, seconds, flagged = ours_small
    m = min(args.reference_rows, n)
    texts = frame(n)["prompt"].list.last().struct.field("content").to_list()[:m]
    start = time.perf_counter()
    ref = reference(texts, instances["text"].to_list(), config.n, config.threshold)
    ref_seconds = time.perf_counter() - start
    same = ref == flagged[:m].to_list()
    print(f"reference on {m} rows: {ref_seconds:.2f} s ({m / ref_seconds:.0f} rows/s); "
          f"decontaminate {n / seconds:.0f} rows/s at {n} rows -> "
          f"{(n / seconds) / (m / ref_seconds):.1f}x; same flagged rows: {same} "
          f"({sum(ref)} flagged)")


if __name__ == "__main__":
    main()
