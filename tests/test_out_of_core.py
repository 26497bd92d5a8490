"""The runner's out-of-core path (parts, streamed global steps, two-pass ids) gives exactly
the rows of the same transforms applied to the whole frame in memory."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from conftest import DATA

from workbench import schema
from workbench.engine import parts
from workbench.engine.finalize import DATA_DIR, finalize
from workbench.io.importer import load
from workbench.pipeline import build_pipeline
from workbench.registry import get
from workbench.runner import run_pipeline
from workbench.transform import DROP, Context
from workbench.workspace import Workspace

STEPS = [
    {"filter": {"where": {"chosen": {"min_chars": 40}}}},
    {"dedup_exact": {"columns": ["prompt"]}},
    {"sample": {"fraction": 0.8}},
    {"split": {"test_size": 0.25}},
    {"sql": {"query": "SELECT *, length(chosen) AS chosen_chars FROM input"}},
]


def in_memory(frame: pl.DataFrame, seed: int) -> pl.DataFrame:
    """Each step on the whole frame, then drops removed and ids set, as the runner did
    before checkpoints were streamed."""
    for spec in STEPS:
        (name, config), = spec.items()
        out = get(name)(config)(frame.lazy(), Context(seed=seed)).collect()
        if DROP in out.columns:
            out = out.filter(pl.col(DROP).is_null()).drop(DROP)
        frame = schema.with_ids(out, "preference")
    return frame


@pytest.mark.parametrize("batch_size", [50, 1000])
def test_streamed_run_equals_whole_frame(tmp_path: Path, batch_size: int):
    source = DATA / "hh_rlhf_harmless_test_600.jsonl.gz"
    frame = load(source)[0]
    frame = pl.concat([frame, frame.head(40)])  # exact duplicates for dedup and the ids
    ws = Workspace(tmp_path / "ws")
    ws.write_dataset("hh", frame, "preference")
    pipeline = build_pipeline({"name": "ooc", "input": "hh", "seed": 3, "steps": STEPS,
                               "output": "out", "batch_size": batch_size,
                               "memory_limit": "200MB"})
    result = run_pipeline(pipeline, ws, progress=False)
    got = ws.read("out")
    expected = in_memory(ws.read("hh"), seed=3)
    assert got.height == expected.height > 300
    assert got.equals(expected.select(got.columns)), "the streamed run changed rows or order"
    filtered = get("filter")(STEPS[0]["filter"])(ws.scan("hh"), Context()).collect()
    filtered = filtered.filter(pl.col(DROP).is_null()).drop(DROP)
    marks = get("dedup_exact")(STEPS[1]["dedup_exact"])(filtered.lazy(), Context()).collect()
    duplicates = marks[DROP].drop_nulls().len()
    assert duplicates >= 30 and result.steps[1].dropped == {"duplicate": duplicates}
    # row-local steps ran batch by batch; every checkpoint is a folder of parts, with the
    # dropped rows beside them
    assert result.steps[0].detail["batches"] == -(-frame.height // batch_size)
    assert parts.files(result.steps[0].data)[0].parent.name == "data"
    dropped = parts.scan(result.steps[1].checkpoint / "dropped").collect()
    assert dropped.height == result.steps[1].dropped["duplicate"]
    assert dropped["duplicate_of"].null_count() == 0


def test_finalize_numbers_duplicates_across_batches_like_with_ids(tmp_path: Path):
    frame = load(DATA / "hh_rlhf_harmless_test_600.jsonl.gz")[0]
    doubled = pl.concat([frame, frame.head(50), frame.head(5)]).with_columns(
        pl.when(pl.int_range(pl.len()) % 9 == 0).then(pl.lit("odd")).alias(DROP))
    for index, start in enumerate(range(0, doubled.height, 64)):
        parts.write_part(doubled.slice(start, 64), tmp_path / "raw", index)
    done = finalize(parts.files(tmp_path / "raw"), "preference", tmp_path / "out", "test",
                    batch_rows=50)
    expected = schema.with_ids(doubled.filter(pl.col(DROP).is_null()).drop(DROP), "preference")
    got = parts.scan(tmp_path / "out" / DATA_DIR).collect()
    assert got.equals(expected)
    assert got["id"].str.ends_with("-2").sum() > 0  # third copies numbered across batches
    assert done.dropped == {"odd": doubled.height - expected.height}


def test_a_bad_row_in_a_later_batch_is_named_by_its_row(tmp_path: Path):
    frame = load(DATA / "hh_rlhf_harmless_test_600.jsonl.gz")[0].drop("id")
    broken = frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 437).then(pl.col("prompt").list.head(0))
        .otherwise(pl.col("prompt")).alias("prompt"))
    for index, start in enumerate(range(0, broken.height, 100)):
        parts.write_part(broken.slice(start, 100), tmp_path / "raw", index)
    with pytest.raises(schema.SchemaError, match=r"row 437 .*prompt is empty"):
        finalize(parts.files(tmp_path / "raw"), "preference", tmp_path / "out", "output of x",
                 batch_rows=30)
