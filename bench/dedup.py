"""Near-duplicate removal throughput: `dedup_minhash` and `dedup_embedding` at 10k and 100k
rows, in one process, with the growth from 10k to 100k (10.0 would be exactly linear).

dedup_minhash runs on texts built from real sentences in data/ (bench/synth.py, 10% near
copies). dedup_embedding runs on 384-d unit vectors (embedding 100k texts with MiniLM takes
~20 minutes on two cores), 10% near copies at cosine ≈ 0.98: once with its default search
(exact up to 20k rows, the IVF join above) and once with the IVF join at both sizes; the
IVF join's measured pair recall is printed with it.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/dedup.py [--sizes 10000 100000]
"""

from __future__ import annotations

import argparse
import time

import polars as pl
from deita_select import embeddings
from synth import frame

from workbench.registry import get
from workbench.transform import DROP, Context


def timed(step: str, config: dict, data: pl.DataFrame) -> tuple[float, int, dict]:
    ctx = Context()
    start = time.perf_counter()
    out = get(step)(config)(data.lazy(), ctx).collect()
    seconds = time.perf_counter() - start
    return seconds, out.height - out[DROP].null_count(), ctx.notes.get("report", {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
    runs = {
        "dedup_minhash": ({}, lambda n: frame(n)),
        "dedup_embedding (default)": ({}, None),
        "dedup_embedding (IVF)": ({"exact_up_to": 0}, None),
    }
    print(f"{'step':<28} {'rows':>8} {'seconds':>8} {'rows/s':>9} {'dropped':>8}  search")
    for name, (config, make) in runs.items():
        times = []
        for n in args.sizes:
            if make is not None:
                data = make(n)
            else:
                ids = pl.format("row{}", pl.int_range(n))
                data = pl.select(ids.alias("id")).with_columns(
                    pl.Series("embedding", embeddings(n, copies=0.1)))
            step = name.split()[0]
            seconds, dropped, report = timed(step, config, data)
            times.append(seconds)
            search = report.get("search", "minhash")
            if "pair_recall" in report:
                search += f", pair recall {report['pair_recall']:.4f}"
            print(f"{name:<28} {n:>8} {seconds:>8.2f} {n / seconds:>9.0f} {dropped:>8}  {search}")
        if len(times) > 1:
            print(f"{'':<28} growth {args.sizes[0]} -> {args.sizes[-1]} rows: "
                  f"{times[-1] / times[0]:.1f}x time for "
                  f"{args.sizes[-1] / args.sizes[0]:.0f}x rows")


if __name__ == "__main__":
    main()
