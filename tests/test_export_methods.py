"""Exports keep what the methods made: the method columns (rationale, scores, margin, Curry-DPO's
ranks, CHES) by default, the RDPO and LongPO layouts by name. The datasets come from the real
steps (pairs, rationale, short_to_long) on a scripted model, exported through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import polars as pl
import pytest
from conftest import cli
from method_datasets import QUESTIONS, explain, long_pairs_in

from workbench.errors import WorkbenchError
from workbench.io.export import export_dataset
from workbench.io.layouts_longpo import longpo_messages


@pytest.fixture
def explained(ws, tmp_path: Path, monkeypatch):
    return explain(ws, tmp_path, monkeypatch)


@pytest.fixture
def long_pairs(ws, tmp_path: Path, monkeypatch):
    return long_pairs_in(ws, tmp_path, monkeypatch)


def test_default_export_keeps_the_method_columns(explained, tmp_path: Path):
    out = tmp_path / "default"
    result = cli("export", "explained", "--format", "jsonl", "--out", str(out),
                 workspace=explained.root)
    assert result.returncode == 0, result.stderr
    assert "method columns: chosen_score" in result.stdout
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    source = explained.read("explained")
    assert len(rows) == source.height == 3 + 2  # best against each worse response
    assert list(rows[0]) == ["prompt", "chosen", "rejected", "chosen_score", "rejected_score",
                             "margin", "pair_method", "pair_rank", "curriculum_iteration",
                             "rationale", "rationale_prompt", "rationale_chosen_above"]
    for row, src in zip(rows, source.iter_rows(named=True), strict=True):
        assert row["rationale"] == src["rationale"] and row["rationale"].startswith("Response ")
        assert row["rationale_prompt"] == src["rationale_prompt"]
        assert row["curriculum_iteration"] == row["pair_rank"] == src["pair_rank"]
        assert row["margin"] == row["chosen_score"] - row["rejected_score"]
    # Curry-DPO: scores (4, 1, 3, 2) give (r1, r2), (r1, r4), (r1, r3) as iterations 1, 2, 3
    first = [r for r in rows if r["prompt"][0]["content"] == QUESTIONS[0]]
    assert [(r["rejected"][0]["content"], r["curriculum_iteration"]) for r in first] == [
        ("Blue is one.", 1), ("Yellow, with red and blue.", 2), ("Purple polka dots.", 3)]
    card = (out / "README.md").read_text()
    assert "## Method columns" in card and "- `rationale`: why the chosen" in card
    assert "- `curriculum_iteration`:" in card
    assert json.loads((out / "workbench_export.json").read_text())["columns"] == "method"


def test_columns_minimal_keeps_prompt_chosen_rejected(explained, tmp_path: Path):
    out = tmp_path / "minimal"
    result = cli("export", "explained", "--format", "parquet", "--columns", "minimal",
                 "--out", str(out), workspace=explained.root)
    assert result.returncode == 0, result.stderr
    assert pl.read_parquet(out / "train.parquet").columns == ["prompt", "chosen", "rejected"]
    assert "## Method columns" not in (out / "README.md").read_text()
    bad = cli("export", "explained", "--columns", "all", "--out", str(tmp_path / "x"),
              workspace=explained.root)
    assert bad.returncode == 1 and "unknown --columns 'all'" in bad.stderr


def test_standard_layout_keeps_them_too(explained, tmp_path: Path):
    export_dataset(explained, "explained", tmp_path / "std", fmt="parquet", trl="standard")
    frame = pl.read_parquet(tmp_path / "std" / "train.parquet")
    assert frame["prompt"].dtype == pl.String and "rationale" in frame.columns


def test_rdpo_layout(explained, tmp_path: Path):
    out = tmp_path / "rdpo"
    result = cli("export", "explained", "--trl", "rdpo", "--format", "hf", "--out", str(out),
                 workspace=explained.root)
    assert result.returncode == 0, result.stderr
    loaded = datasets.load_from_disk(str(out))["train"]
    assert loaded.column_names == ["prompt", "chosen", "rejected", "rationale",
                                   "rationale_prompt"]
    source = explained.read("explained")
    assert loaded["rationale"] == source["rationale"].to_list()
    assert loaded[0]["chosen"][0]["role"] == "assistant"
    assert "rdpo layout" in (out / "README.md").read_text()


def test_rdpo_layout_needs_rationales(ws, tmp_path: Path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "q?", "chosen": "a", "rejected": "b"}) + "\n")
    from workbench.io.importer import import_path

    import_path(ws, path, "plain")
    with pytest.raises(WorkbenchError, match="--trl rdpo needs the `rationale` and "
                                             "`rationale_prompt` column"):
        export_dataset(ws, "plain", tmp_path / "r", trl="rdpo")
    assert not (tmp_path / "r").exists()


def test_a_label_that_swaps_a_pair_clears_its_rationale(explained, tmp_path: Path):
    """A rationale explains why the original chosen side won: once a person prefers the other
    side it is wrong, so it is cleared, the margin flips, and the rdpo layout leaves it out."""
    rows = explained.read("explained")
    swapped = rows["id"][0]
    explained.add_label("explained", swapped, "ann", "b", a_is_chosen=True)
    export_dataset(explained, "explained", tmp_path / "lab", fmt="parquet", labels=True)
    out = pl.read_parquet(tmp_path / "lab" / "train.parquet")
    first = out.row(0, named=True)
    assert first["chosen"][0]["content"] == rows["rejected"][0]
    assert first["rationale"] is None and first["rationale_prompt"] is None
    assert first["margin"] == -rows["margin"][0] == first["chosen_score"] - first["rejected_score"]
    assert out["rationale"].null_count() == 1
    result = export_dataset(explained, "explained", tmp_path / "rd", fmt="jsonl", trl="rdpo",
                            labels=True)
    assert result["splits"] == {"train": rows.height - 1}
    assert result["left_out"] == {"pairs without a rationale": 1}
    assert "pairs without a rationale: 1" in (tmp_path / "rd" / "README.md").read_text()


# LongPO ----------------------------------------------------------------------------------------
def test_longpo_layout_writes_one_record_per_context(long_pairs, tmp_path: Path):
    out = tmp_path / "longpo"
    result = cli("export", "pairs", "--trl", "longpo", "--format", "jsonl", "--out", str(out),
                 workspace=long_pairs.root)
    assert result.returncode == 0, result.stderr
    assert "longpo-records" in result.stdout
    records = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    rows = long_pairs.read("pairs")
    assert len(records) == rows["context_id"].n_unique() == 3
    for record in records:
        assert list(record) == ["context_id", "prompt", "short_prompts", "questions",
                                "chosens", "rejecteds"]
        turns = rows.filter(pl.col("context_id") == record["context_id"]).sort("turn")
        assert len(record["questions"]) == turns.height == 2
        assert record["prompt"] == turns["long_prompt"][0]
        assert record["questions"] == turns["question"].to_list()
        assert record["chosens"] == turns["chosen"].to_list()
        assert all(short in record["prompt"] for short in record["short_prompts"])
        messages = longpo_messages(record)
        assert messages["chosen"][0]["content"] == turns["prompt"][0][0]["content"]
    with pytest.raises(WorkbenchError, match="--labels does not apply to --trl longpo"):
        export_dataset(long_pairs, "pairs", tmp_path / "l", trl="longpo", labels=True)


def test_longpo_layout_refuses_other_pairs(explained, tmp_path: Path):
    with pytest.raises(WorkbenchError, match="--trl longpo needs the preference rows a "
                                             "`short_to_long` step writes"):
        export_dataset(explained, "explained", tmp_path / "l", trl="longpo")
