"""Sandboxed code checking throughput: HumanEval's 164 canonical solutions, each in its own
sandboxed process, run one at a time and then through the bounded pool, printed as programs
per second and the pool's speed-up over the sequential run.

    .venv/bin/python bench/verify_code.py [--workers N] [--repeat R]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from pathlib import Path

from workbench.verifiers.code import check_many
from workbench.verifiers.sandbox import default_workers, guards

DATA = Path(__file__).resolve().parent.parent / "data" / "benchmarks" / "humaneval.jsonl.gz"


def items(repeat: int) -> list[tuple[str, str, str]]:
    with gzip.open(DATA, "rt") as lines:
        problems = [json.loads(line) for line in lines]
    return [(p["prompt"] + p["canonical_solution"], p["test"], p["entry_point"])
            for p in problems] * repeat


def timed(programs: list[tuple[str, str, str]], workers: int) -> tuple[float, int]:
    start = time.perf_counter()
    verdicts = check_many(programs, workers=workers)
    return time.perf_counter() - start, sum(v.passed for v in verdicts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=None,
                        help="pool size (default: the checker's, twice the CPUs)")
    parser.add_argument("--repeat", type=int, default=1, help="run the 164 programs R times")
    args = parser.parse_args()
    programs = items(args.repeat)
    workers = args.workers or default_workers()
    print(f"{len(programs)} programs, {len(os.sched_getaffinity(0))} CPUs, "
          f"namespaces: {guards()['namespaces']}")
    print(f"{'run':<22} {'seconds':>8} {'programs/s':>11} {'passed':>7}")
    rates = {}
    for name, n in (("sequential", 1), (f"pool of {workers}", workers)):
        seconds, passed = timed(programs, n)
        rates[name] = len(programs) / seconds
        print(f"{name:<22} {seconds:>8.2f} {rates[name]:>11.1f} {passed:>7}")
    first, second = rates.values()
    print(f"pool / sequential: {second / first:.2f}x")


if __name__ == "__main__":
    main()
