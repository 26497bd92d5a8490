"""Out-of-core runs: `filter → dedup_exact → split` on a synthetic preference dataset at
100k and 1M rows, reporting wall time and the peak RSS of the whole `workbench run` process
tree (sampled every 50 ms), each step's seconds from the run log, and beside it the plain
in-memory polars script a user would write instead (read the Parquet file, filter, `unique`,
seeded split, write Parquet), run on the same file in the same way, with the ratios. Goals:
the run takes at most 2× the script's time and a third of its peak memory, and the 1M peak
stays within 1.5× the 100k one.

Rows join random real sentences from data/ (bench/synth.py): prompts of 3-6 sentences,
chosen of 6-14, rejected of 4-12 (about 2.4 kB a row, 2.4 GB of text at 1M rows); 2% of
rows repeat an earlier row exactly, so dedup has work to do. The dataset is published into
a fresh workspace first (streamed, outside the measured process), then the pipeline runs in
a subprocess.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/scale.py [--sizes 100000 1000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import psutil
from synth import sentences

from workbench.engine import parts
from workbench.engine.finalize import DATA_DIR, finalize
from workbench.workspace import DATA_FILE, Workspace

CHUNK = 100_000
PIPELINE = """\
name: scale
input: synthetic
steps:
  - filter: {where: {chosen: {min_chars: 200}}, reason: short chosen}
  - dedup_exact: {columns: [prompt, chosen, rejected]}
  - split: {test_size: 0.05}
output: scale_out
"""


def synthetic_chunk(pool: pl.Series, rows: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)

    def texts(low: int, high: int) -> pl.Series:
        counts = rng.integers(low, high + 1, size=rows)
        picks = pool.gather(rng.integers(0, pool.len(), size=int(counts.sum())))
        owner = np.repeat(np.arange(rows), counts)
        return (pl.DataFrame({"row": owner, "s": picks}).group_by("row", maintain_order=True)
                .agg(pl.col("s").str.join(" "))["s"])

    prompt = texts(3, 6)
    frame = pl.DataFrame({"q": prompt, "chosen": texts(6, 14), "rejected": texts(4, 12)})
    repeat = rng.random(rows) < 0.02  # exact copies of an earlier row of the chunk
    source = np.where(repeat, rng.integers(0, np.maximum(np.arange(rows), 1)), np.arange(rows))
    frame = frame[source]
    message = pl.struct(pl.lit("user").alias("role"), pl.col("q").alias("content"))
    return frame.select(pl.concat_list(message).alias("prompt"), "chosen", "rejected")


BASELINE = """\
import sys
import polars as pl

frame = pl.read_parquet(sys.argv[1])
frame = frame.filter(pl.col("chosen").str.len_chars() >= 200)
frame = frame.unique(subset=["prompt", "chosen", "rejected"], keep="first", maintain_order=True)
rank = pl.int_range(frame.height, eager=True).shuffle(seed=0)
test = pl.Series(rank < round(frame.height * 0.05))
frame = frame.with_columns(split=pl.when(test).then(pl.lit("test")).otherwise(pl.lit("train")))
frame.write_parquet(sys.argv[2])
print(frame.height)
"""


def build(ws: Workspace, rows: int) -> float:
    """Publish `synthetic` with `rows` rows, chunk by chunk; returns seconds."""
    started = time.perf_counter()
    pool = pl.Series(sentences())
    staging = Path(tempfile.mkdtemp(dir=ws.cache_dir))
    try:
        for index, start in enumerate(range(0, rows, CHUNK)):
            chunk = synthetic_chunk(pool, min(CHUNK, rows - start), seed=index)
            parts.write_part(chunk, staging / "raw", index)
        finalize(parts.files(staging / "raw"), "preference", staging / "final", "synthetic")
        ws.publish_parts("synthetic", staging / "final" / DATA_DIR, "preference",
                         {"bench": "scale.py"})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return time.perf_counter() - started


def peak_tree_rss(proc: subprocess.Popen) -> tuple[int, float]:
    """Run until `proc` exits; the largest sum of RSS over it and its children, and seconds."""
    peak, started = 0, time.perf_counter()
    root = psutil.Process(proc.pid)
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    proc.wait()
    seconds = time.perf_counter() - started
    stop.set()
    thread.join()
    return peak, seconds


def timed(command: list[str], what: str) -> tuple[str, int, float]:
    """Run `command`; its stdout, the peak RSS of its process tree and its seconds."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, seconds = peak_tree_rss(proc)
    out, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"{what} failed:\n{err}")
    return out, peak, seconds


def measure(rows: int, keep: Path | None) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"scale-{rows}-", dir=keep))
    try:
        ws = Workspace(root / "ws")
        built = build(ws, rows)
        pipeline = root / "scale.yaml"
        pipeline.write_text(PIPELINE)
        script = root / "baseline.py"
        script.write_text(BASELINE)
        base_out, base_peak, base_s = timed(
            [sys.executable, str(script), str(ws.resolve("synthetic").path / DATA_FILE),
             str(root / "baseline.parquet")], f"the polars baseline at {rows} rows")
        out, peak, seconds = timed([sys.executable, "-m", "workbench.cli", "--workspace",
                                    str(root / "ws"), "run", str(pipeline), "--no-progress"],
                                   f"the run at {rows} rows")
        print(out.strip().splitlines()[0])
        result = ws.resolve("scale_out")
        run_id = result.lineage["run_id"]
        steps = {f"{s['step_index']}:{s['step']}": s["seconds"] for s in ws.step_logs(run_id)}
        return {"rows": rows, "build_s": built, "run_s": seconds, "peak_mb": peak / 2**20,
                "rows_out": result.rows, "base_s": base_s, "base_peak_mb": base_peak / 2**20,
                "base_rows_out": int(base_out.split()[-1]), "steps": steps}
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--keep", type=Path, help="keep the workspaces under this folder")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    results = [measure(n, args.keep) for n in args.sizes]
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print(f"{'rows':>10} {'rows out':>10} {'build s':>8} {'run s':>8} {'rows/s':>9} "
          f"{'peak RSS MB':>12} {'polars s':>9} {'polars MB':>10} {'× time':>7} {'× peak':>7}")
    for r in results:
        print(f"{r['rows']:>10,} {r['rows_out']:>10,} {r['build_s']:>8.1f} {r['run_s']:>8.1f} "
              f"{r['rows'] / r['run_s']:>9,.0f} {r['peak_mb']:>12.0f} {r['base_s']:>9.1f} "
              f"{r['base_peak_mb']:>10.0f} {r['run_s'] / r['base_s']:>7.2f} "
              f"{r['peak_mb'] / r['base_peak_mb']:>7.2f}")
    for r in results:
        other = r["run_s"] - sum(r["steps"].values())
        print(f"{r['rows']:>10,} rows, seconds by step: "
              + ", ".join(f"{name} {s:.1f}" for name, s in r["steps"].items())
              + f", start, input and publish {other:.1f}"
              + f"; rows out {r['rows_out']:,}, polars {r['base_rows_out']:,}")
    print("goals: time ≤ 2× polars, peak ≤ 1/3 of polars'")
    if len(results) > 1:
        first, last = results[0], results[-1]
        print(f"peak RSS at {last['rows']:,} rows is {last['peak_mb'] / first['peak_mb']:.2f}× "
              f"the peak at {first['rows']:,} ({last['rows'] / first['rows']:.0f}× the rows); "
              "goal ≤ 1.5×")


if __name__ == "__main__":
    main()
