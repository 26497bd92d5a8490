"""How fast `workbench import` reads a large JSON Lines preference file, and in how much memory.

Writes an N-row synthetic preference file (prompt 200-400 characters, chosen and rejected
600-1000 each, a `source` column null in a tenth of the rows) cut from the real text under
data/ at random offsets, so it is neither repetitive nor trivially compressible; runs the real
console script on it in a subprocess while sampling the RSS of that whole process tree every
50 ms; prints rows, seconds, rows/s and peak RSS for the large and the small file and their
ratios. Beside each import, the plain polars script a user would write instead
(`pl.read_ndjson` + `write_parquet`, no validation, no ids) runs on the same file the same
way, and the ratios are printed. With --baseline-rev it also imports the small file with
the importer of that commit (the whole-file path) for comparison. Goals: 1,000,000 rows
under 1 GB peak RSS, in at most 2x the polars script's time.
Everything lives in a temporary folder, deleted at the end.

    .venv/bin/python bench/import_scale.py [--rows 1000000] [--small 100000]
                                           [--baseline-rev 30a8f33] [--seed 0]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import psutil

from workbench.io import read

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
BASELINE_REV = "30a8f33"  # the last commit whose importer read the whole file at once
WRITE_BATCH = 100_000


@dataclass
class Result:
    label: str
    rows: int
    seconds: float
    peak_rss: int  # bytes, the whole process tree

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds

    def line(self) -> str:
        return (f"{self.label:<28} {self.rows:>10,} rows {self.seconds:>8.1f} s "
                f"{self.rows_per_second:>10,.0f} rows/s  peak RSS {self.peak_rss / 2**20:>7,.0f} MiB")


def corpus() -> str:
    """Real text from data/: the two public-domain chapters, HH-RLHF dialogues, GSM8K
    problems and solutions, IFEval and MT-Bench prompts, joined with single spaces."""
    texts = [(DATA / "documents/alice_ch1-2.txt").read_text()]
    texts += [json.loads(line)["text"]
              for line in (DATA / "documents/war_of_the_worlds_ch1-2.jsonl").read_text().splitlines()]
    with gzip.open(DATA / "hh_rlhf_harmless_test_600.jsonl.gz", "rt") as fh:
        for line in fh:
            row = json.loads(line)
            texts += [row["chosen"], row["rejected"]]
    for name, fields in (("gsm8k_test.jsonl", ("question", "answer")),
                         ("ifeval_input_data.jsonl", ("prompt",)),
                         ("mt_bench_questions.jsonl", ("turns",))):
        for line in (DATA / "benchmarks" / name).read_text().splitlines():
            row = json.loads(line)
            for field in fields:
                value = row[field]
                texts += value if isinstance(value, list) else [value]
    return " ".join(" ".join(text.split()) for text in texts)


def write_file(path: Path, rows: int, seed: int) -> int:
    """N preference rows, each text a random window of the corpus; returns the file size."""
    text = corpus()
    rng = np.random.default_rng(seed)
    with open(path, "wb") as out:
        for start in range(0, rows, WRITE_BATCH):
            n = min(WRITE_BATCH, rows - start)
            columns = {}
            for name, low, high in (("prompt", 200, 400), ("chosen", 600, 1000),
                                    ("rejected", 600, 1000)):
                length = rng.integers(low, high + 1, n)
                offset = rng.integers(0, len(text) - high, n)
                columns[name] = pl.Series([text[o:o + k] for o, k in zip(offset, length, strict=True)])
            source = pl.Series([f"synthetic-{i % 7}" for i in range(start, start + n)])
            columns["source"] = source.scatter(np.flatnonzero(rng.random(n) < 0.1), None)
            pl.DataFrame(columns).write_ndjson(out)
    return path.stat().st_size


POLARS = """\
import sys
import polars as pl

frame = pl.read_ndjson(sys.argv[1])
frame.write_parquet(sys.argv[2])
print(f"imported {frame.height} rows")
"""


def run_polars(source: Path, folder: Path, env: dict[str, str]) -> Result:
    """The plain polars script on the same file, measured the same way."""
    script = folder / "plain_polars.py"
    script.write_text(POLARS)
    return run_command("plain polars", [sys.executable, str(script), str(source),
                                        str(folder / "plain.parquet")], folder, env)


def run_import(label: str, source: Path, workspace: Path, cwd: Path,
               env: dict[str, str]) -> Result:
    """`workbench import` in a subprocess; the RSS of its process tree sampled every 50 ms."""
    return run_command(label, [sys.executable, "-m", "workbench.cli", "--workspace",
                               str(workspace), "import", str(source), "--name", "big"], cwd, env)


def run_command(label: str, command: list[str], cwd: Path, env: dict[str, str]) -> Result:
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    peak = [0]
    done = threading.Event()
    sampler = threading.Thread(target=_sample, args=(child.pid, peak, done), daemon=True)
    sampler.start()
    out, err = child.communicate()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    if child.returncode != 0:
        raise SystemExit(f"{label}: import failed ({child.returncode}): {err.strip()}")
    rows = int(out.split("imported ", 1)[1].split()[0])
    return Result(label, rows, seconds, peak[0])


def _sample(pid: int, peak: list[int], done: threading.Event) -> None:
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    while not done.is_set():
        try:
            tree = [root, *root.children(recursive=True)]
            total = sum(p.memory_info().rss for p in tree if p.is_running())
        except psutil.Error:
            total = 0
        peak[0] = max(peak[0], total)
        time.sleep(0.05)


def baseline_tree(rev: str, folder: Path) -> Path:
    """The package as it was at `rev` (git archive), to run its importer unchanged."""
    archive = folder / "baseline.tar"
    with open(archive, "wb") as out:
        subprocess.run(["git", "archive", rev, "workbench", "transforms"], cwd=ROOT, stdout=out,
                       check=True)
    target = folder / "baseline"
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    archive.unlink()
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--baseline-rev", default=BASELINE_REV,
                        help="commit whose whole-file importer runs on the small file ('' to skip)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    print(f"chunks: at most {read.CHUNK_ROWS:,} rows and about {read.CHUNK_BYTES >> 20} MiB of "
          f"JSON Lines; {psutil.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="import-scale-") as tmp:
        folder = Path(tmp)
        results: dict[str, Result] = {}
        for label, rows in (("small", args.small), ("large", args.rows)):
            source = folder / f"prefs_{rows}.jsonl"
            size = write_file(source, rows, args.seed)
            print(f"wrote {rows:,} rows, {size / 2**20:,.0f} MiB: {source.name}", flush=True)
            plain = run_polars(source, folder, env)
            print(plain.line(), flush=True)
            (folder / "plain.parquet").unlink()
            result = run_import(f"streaming, {rows:,}", source, folder / f"ws-{label}", ROOT, env)
            print(result.line(), flush=True)
            print(f"workbench / polars on {rows:,} rows: seconds x"
                  f"{result.seconds / plain.seconds:.2f}, peak RSS "
                  f"x{result.peak_rss / plain.peak_rss:.2f}", flush=True)
            results[label] = result
            if label == "small" and args.baseline_rev:
                old = baseline_tree(args.baseline_rev, folder)
                base = run_import(f"whole-file {args.baseline_rev}, {rows:,}", source,
                                  folder / "ws-baseline", old, {**env, "PYTHONPATH": str(old)})
                print(base.line(), flush=True)
                results["baseline"] = base
            source.unlink()
        small, large = results["small"], results["large"]
        print(f"large / small: rows x{large.rows / small.rows:.1f}, seconds "
              f"x{large.seconds / small.seconds:.2f}, peak RSS x{large.peak_rss / small.peak_rss:.2f}")
        if "baseline" in results:
            base = results["baseline"]
            print(f"streaming / whole-file on {small.rows:,} rows: seconds "
                  f"x{small.seconds / base.seconds:.2f}, peak RSS x{small.peak_rss / base.peak_rss:.2f}")
        print(f"goal: {large.rows:,} rows under 1 GB peak RSS: "
              f"{'met' if large.peak_rss < 1e9 else 'NOT met'} ({large.peak_rss / 1e9:.2f} GB); "
              f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
