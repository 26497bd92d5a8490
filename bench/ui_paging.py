"""How fast the app pages and labels a million-row dataset, through the same library calls its
pages make (`query.browse` for Browse; `labels.label` then `queues.next_items` for Label).

Builds an N-row preference dataset (default 1,000,000; reused when the workspace has it),
then reports the median of several tries of: the first page, a filtered + searched + sorted
page, and a label round trip (write one label, fetch the next row). Goals on this machine:
first and filtered page under 2 s, round trip under 300 ms.

    .venv/bin/python bench/ui_paging.py [--rows 1000000] [--workspace DIR] [--tries 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import polars as pl

from workbench.labeling import labels, queues
from workbench.query.query import browse
from workbench.workspace import Workspace

TEXT = ("the model should answer the question clearly and safely with a short example "
        "because people read this response before they trust it")


def build(ws: Workspace, rows: int) -> str:
    """A synthetic preference dataset: varied prompts, replies of varied length, judge scores,
    a source column."""
    if ws.has_dataset("big") and ws.resolve("big").rows == rows:
        return "big"
    i = pl.int_range(rows, eager=True).alias("i")
    frame = pl.DataFrame(i).with_columns(
        pl.format("question {} about {}", "i", pl.col("i") % 997).alias("q"),
        pl.format("{} {}", pl.lit(TEXT), "i").str.slice(0, (pl.col("i") * 7919) % 180 + 20)
        .alias("chosen"),
        pl.format("{} {}", pl.lit(" ".join(reversed(TEXT.split()))), "i")
        .str.slice(0, (pl.col("i") * 104729) % 160 + 10).alias("rejected"),
        ((pl.col("i") * 31) % 100 / 10).alias("chosen_score"),
        ((pl.col("i") * 17) % 100 / 10).alias("rejected_score"),
        pl.when(pl.col("i") % 3 == 0).then(pl.lit("web")).when(pl.col("i") % 3 == 1)
        .then(pl.lit("synthetic")).otherwise(pl.lit("forum")).alias("source"),
    ).select(pl.concat_list(pl.struct(pl.lit("user").alias("role"), pl.col("q").alias("content")))
             .alias("prompt"), "chosen", "rejected", "chosen_score", "rejected_score", "source")
    started = time.perf_counter()
    ws.write_dataset("big", frame, "preference")
    print(f"built {rows:,} rows in {time.perf_counter() - started:.1f} s")
    return "big"


def timed(call) -> tuple[float, object]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workspace", type=Path, default=None)
    parser.add_argument("--tries", type=int, default=5)
    args = parser.parse_args()
    root = args.workspace or Path(tempfile.mkdtemp(prefix="ui-paging-"))
    ws = Workspace(root)
    name = build(ws, args.rows)
    where = "len(chosen) > 120 AND source = 'forum' AND chosen_score > rejected_score"

    first, filtered, trips = [], [], []
    for attempt in range(args.tries):
        fresh = Workspace(root)  # nothing cached between tries
        seconds, (page, total) = timed(lambda w=fresh: browse(w, name, limit=25))
        first.append(seconds)
        seconds, (page, matched) = timed(lambda w=fresh, a=attempt: browse(
            w, name, where=where, search="question 4", order_by="chosen_score DESC",
            limit=25, offset=25 * a))
        filtered.append(seconds)
    queue = queues.create_queue(ws, "bench", name, "source <> 'web'", min_labels=2)
    buffer: list[queues.Item] = []  # what the Label page keeps in its session
    seconds, item = timed(lambda: queues.next_item(ws, queue, "bench-annotator", buffer=buffer))
    print(f"first row of a new queue: {seconds * 1000:.0f} ms (fetches {queues.BATCH} at once)")
    for _ in range(args.tries * 2):
        seconds, item = timed(lambda it=item: (
            labels.label(ws, name, it.row_id, "bench-annotator", "a", it.a_is_chosen,
                         queue="bench"),
            queues.next_item(ws, queue, "bench-annotator", buffer=buffer))[1])
        trips.append(seconds)

    def show(what: str, values: list[float], goal: float) -> None:
        median = statistics.median(values)
        verdict = "ok" if median < goal else "OVER GOAL"
        print(f"{what:<38} median {median * 1000:7.0f} ms  (min {min(values) * 1000:.0f}, "
              f"max {max(values) * 1000:.0f}; goal < {goal * 1000:.0f} ms: {verdict})")

    print(f"dataset {name}: {total:,} rows; filter matches {matched:,}; workspace {root}")
    show("first page (25 rows)", first, 2.0)
    show("filtered + searched + sorted page", filtered, 2.0)
    show("label round trip (write + next row)", trips, 0.3)


if __name__ == "__main__":
    main()
