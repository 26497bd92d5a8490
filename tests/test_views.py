"""Checkpoints as views: a `keeps_content` step keeps its rows' ids and writes their
positions and its own columns, not the rows; reading the view gives the rows a step that
wrote them in full gives; a step that changed content after all is caught and written in
full with new ids."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import DATA

from workbench import schema
from workbench.engine import parts, positional
from workbench.engine.finalize import DATA_DIR, ROWS_DIR, Numbering, finalize
from workbench.engine.source import ROW, Source
from workbench.io.importer import load
from workbench.pipeline import build_pipeline
from workbench.runner import run_pipeline
from workbench.transform import Context, StepConfig, transform
from workbench.workspace import Workspace


class NoOptions(StepConfig):
    pass


@transform("test_views_shout_rows", scope="row", keeps_content=True, stateless=True,
           config=NoOptions)
def shout_rows(frame: pl.LazyFrame, config: NoOptions, ctx: Context) -> pl.LazyFrame:
    """Declared to keep content, but upper-cases `chosen` (a row step)."""
    return frame.with_columns(pl.col("chosen").str.to_uppercase())


@transform("test_views_shout_stream", scope="global", keeps_content=True, config=NoOptions)
def shout_stream(frame: pl.LazyFrame, config: NoOptions, ctx: Context) -> pl.LazyFrame:
    """Declared to keep content, but upper-cases `chosen` as the rows stream past."""
    rows = positional.height(frame, ctx)
    flag = pl.Series([True] * rows)
    return positional.attach(frame, flag, "seen", ctx).with_columns(
        pl.col("chosen").str.to_uppercase())


@transform("test_views_shout_plain", scope="row", config=NoOptions)
def shout_plain(frame: pl.LazyFrame, config: NoOptions, ctx: Context) -> pl.LazyFrame:
    """The same change, declared as one."""
    return frame.with_columns(pl.col("chosen").str.to_uppercase())


STEPS = [{"filter": {"where": {"chosen": {"min_chars": 40}}}},
         {"dedup_exact": {"columns": ["prompt"]}},
         {"split": {"test_size": 0.25}}]


@pytest.fixture(params=["extra column", "canonical columns only"])
def ws(tmp_path: Path, request: pytest.FixtureRequest) -> Workspace:
    ws = Workspace(tmp_path / "ws")
    frame = load(DATA / "hh_rlhf_harmless_test_600.jsonl.gz")[0].drop("id")
    if request.param == "canonical columns only":  # a view then has no column of its own
        frame = frame.select("prompt", "chosen", "rejected")
    ws.write_dataset("hh", pl.concat([frame, frame.head(40)]), "preference")
    return ws


def run(ws: Workspace, steps: list[dict], name: str = "v", batch_size: int = 64):
    pipeline = build_pipeline({"name": name, "input": "hh", "seed": 5, "steps": steps,
                               "output": f"{name}_out", "batch_size": batch_size})
    return run_pipeline(pipeline, ws, progress=False)


def test_keeps_content_steps_write_views_that_read_as_their_rows(ws: Workspace):
    result = run(ws, STEPS)
    base = ws.resolve("hh").path / "data.parquet"
    for step in result.steps:
        assert step.detail["view"] is True and step.detail["ids"] == "kept"
        assert step.source is not None and step.source.base == (base,)  # one base, flattened
        assert not (step.checkpoint / DATA_DIR).exists()
        own = parts.schema(parts.files(step.checkpoint / ROWS_DIR)).names()
        assert ROW in own and not set(own) & {"prompt", "chosen", "rejected", "id"}
    last = result.steps[-1]
    assert last.source.columns == tuple(ws.read("v_out").columns)
    streamed = pl.concat(list(last.source.batches(37)))
    assert streamed.equals(ws.read("v_out"))
    assert last.source.read_rows(100, 50).equals(streamed.slice(100, 50))
    assert last.source.scan().collect().equals(streamed)
    # written out on demand, for whoever needs files
    assert pl.read_parquet(parts.files(last.data)).equals(streamed)
    assert (last.checkpoint / DATA_DIR).is_dir()
    # dropped rows are kept whole, with what dedup found
    dropped = parts.scan(result.steps[1].checkpoint / "dropped").collect()
    assert dropped.height == result.steps[1].dropped["duplicate"] > 0
    assert dropped["duplicate_of"].null_count() == 0 and dropped["chosen"].null_count() == 0


def test_a_cached_view_serves_the_next_run_and_a_global_step_after_it_gets_files(ws):
    run(ws, STEPS)
    again = run(ws, [*STEPS, {"sql": {"query": "SELECT * FROM input WHERE split = 'test'"}}])
    assert [s.status for s in again.steps] == ["cached", "cached", "cached", "ran"]
    assert (again.steps[2].checkpoint / DATA_DIR).is_dir()  # written out for the SQL step
    expected = ws.read("v_out@1").filter(pl.col("split") == "test")
    assert ws.read("v_out@2").sort("id").equals(expected.sort("id"))


@pytest.mark.parametrize("step", ["test_views_shout_rows", "test_views_shout_stream"])
def test_a_step_that_changes_content_anyway_is_written_in_full_with_new_ids(ws, step):
    declared = run(ws, [{step: {}}], name="declared")
    run(ws, [{"test_views_shout_plain": {}}], name="honest")
    got, expected = ws.read("declared_out"), ws.read("honest_out")
    assert declared.steps[0].detail["view"] is False
    assert declared.steps[0].detail["ids"] == "hashed"
    assert got.drop("seen", strict=False).equals(expected)
    assert (got["chosen"] == got["chosen"].str.to_uppercase()).all()
    assert got["parent_id"].null_count() < got.height  # the changed rows name their old id


def test_ids_of_a_dataset_that_are_not_content_hashes_are_replaced_as_before(ws, tmp_path):
    frame = ws.read("hh").with_columns(
        ("mine-" + pl.int_range(pl.len()).cast(pl.String)).alias("id"))
    parts.write_part(frame, tmp_path / "custom", 0)
    ws.publish_parts("custom", tmp_path / "custom", "preference")
    pipeline = build_pipeline({"name": "c", "input": "custom", "output": "c_out",
                               "steps": [STEPS[0]]})
    result = run_pipeline(pipeline, ws, progress=False)
    out = ws.read("c_out")
    assert result.steps[0].detail["ids"] == "hashed"
    assert out["parent_id"].str.starts_with("mine-").all()
    assert (out["id"].str.slice(0, 16) == schema.content_hashes(out, "preference")).all()


def test_a_resumed_step_drops_batches_written_the_other_way(ws):
    from workbench.engine.checkpoints import batch_path, write_batch
    from workbench.engine.run_steps import _reusable
    from workbench.engine.step_notes import StepNotes
    from workbench.executors import StepJob
    from workbench.registry import get

    source = Source.of(ws.resolve("hh").path / "data.parquet")
    partial = ws.root / "partial"
    job = StepJob(transform=get("filter")(STEPS[0]["filter"]), label="1:filter", source=source,
                  partial=partial, seed=0, workspace=ws.root, base_dir=None, batch_rows=100,
                  batches=7)
    rows = ws.read("hh").head(100)
    write_batch(partial, 0, rows, StepNotes())  # written in full
    write_batch(partial, 1, rows.with_columns(pl.lit(5, pl.UInt64).alias(ROW)), StepNotes())
    write_batch(partial, 9, rows, StepNotes())  # past the input's batches
    assert _reusable(job, view=True) == [1]
    assert not batch_path(partial, 0).exists() and not batch_path(partial, 9).exists()
    assert _reusable(job, view=False) == []


def test_numbering_across_batches_equals_numbering_the_whole():
    rng = np.random.default_rng(3)
    hashes = rng.integers(0, 500, size=20_000).astype(np.uint64)
    numbering = Numbering()
    got = np.concatenate([numbering.number(hashes[i:i + 777])
                          for i in range(0, len(hashes), 777)])
    expected = schema.occurrences(pl.Series(hashes)).to_numpy()
    assert (got == expected).all() and got.max() > 20


def test_finalize_keeps_ids_and_still_rejects_a_bad_row(tmp_path: Path):
    frame = schema.with_ids(load(DATA / "hh_rlhf_harmless_test_600.jsonl.gz")[0].drop("id"),
                            "preference")
    parts.write_part(frame, tmp_path / "raw", 0)
    done = finalize(parts.files(tmp_path / "raw"), "preference", tmp_path / "out", "x",
                    batch_rows=100, keep_ids=True)
    assert done.ids == "kept"
    assert parts.scan(tmp_path / "out" / DATA_DIR).collect().equals(frame)
    broken = frame.with_columns(pl.when(pl.int_range(pl.len()) == 250).then(
        pl.col("prompt").list.head(0)).otherwise(pl.col("prompt")).alias("prompt"))
    parts.write_part(broken, tmp_path / "bad", 0)
    with pytest.raises(schema.SchemaError, match="row 250"):
        finalize(parts.files(tmp_path / "bad"), "preference", tmp_path / "out2", "x",
                 batch_rows=100, keep_ids=True)


def test_prefetch_passes_errors_on_and_stops_when_left():
    def numbers(fail_at: int | None):
        for i in range(1000):
            if i == fail_at:
                raise ValueError("broken at 3")
            yield i

    assert list(parts.prefetch(numbers(None))) == list(range(1000))
    with pytest.raises(ValueError, match="broken at 3"):
        list(parts.prefetch(numbers(3)))
    before = threading.active_count()
    for i in parts.prefetch(numbers(None)):
        if i == 5:
            break
    assert threading.active_count() == before  # the producer ended with the loop
    assert list(parts.map_ahead(lambda x: x * 2, iter(range(10)))) == list(range(0, 20, 2))


def test_a_file_of_batches_run_together_counts_them_all(tmp_path: Path):
    from workbench.engine.checkpoints import batch_files, batch_notes, finished_batches, write_batch
    from workbench.engine.step_notes import StepNotes

    rows = pl.DataFrame({"x": range(25)})
    write_batch(tmp_path, 0, rows, StepNotes(nulled={"a": 2}), count=3)  # batches 0-2
    write_batch(tmp_path, 3, rows.head(5), StepNotes(nulled={"a": 1}))
    assert finished_batches(tmp_path) == {0, 1, 2, 3}
    assert [(first, count) for first, (_, count) in batch_files(tmp_path).items()] == [
        (0, 3), (3, 1)]
    assert batch_notes(tmp_path).nulled == {"a": 3}


def test_first_seen_across_batches_equals_the_first_row_per_key():
    rng = np.random.default_rng(4)
    keys = rng.integers(0, 3000, size=50_000).astype(np.uint64)
    seen = positional.FirstSeen()
    got = np.concatenate([seen.add(keys[i:i + 1234]) for i in range(0, len(keys), 1234)])
    frame = pl.DataFrame({"k": keys}).with_row_index("p")
    expected = frame.select(pl.col("p").first().over("k"))["p"].to_numpy()
    assert (got == expected).all() and (got < np.arange(len(keys))).sum() > 40_000
