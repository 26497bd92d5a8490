"""Exports that TRL's trainers load as they are, with a lineage card."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import polars as pl
import pytest
from conftest import DATA, cli

from workbench.errors import WorkbenchError
from workbench.io.export import export_dataset
from workbench.io.importer import import_path
from workbench.pipeline import build_pipeline
from workbench.runner import run_pipeline

HH = str(DATA / "hh_rlhf_harmless_test_600.jsonl.gz")


@pytest.fixture
def demo(ws):
    spec = build_pipeline({"name": "exp", "input": HH, "output": "prefs",
                           "steps": [{"filter": {"where": {"chosen": {"min_chars": 20}}}},
                                     {"split": {"test_size": 0.25}}]})
    run_pipeline(spec, ws, progress=False)
    return ws


def test_hf_conversational_preference_export(demo, tmp_path: Path):
    out = tmp_path / "hf"
    result = cli("export", "prefs", "--format", "hf", "--out", str(out), workspace=demo.root)
    assert result.returncode == 0, result.stderr
    loaded = datasets.load_from_disk(str(out))
    assert isinstance(loaded, datasets.DatasetDict)
    rows = demo.read("prefs")
    assert set(loaded) == {"train", "test"}
    assert loaded["test"].num_rows == (rows["split"] == "test").sum()
    for split in loaded.values():
        assert split.column_names == ["prompt", "chosen", "rejected"]
    example = loaded["train"][0]
    from trl.data_utils import is_conversational

    assert is_conversational(example)
    assert example["chosen"][0]["role"] == "assistant" and example["prompt"][-1]["role"] == "user"
    card = (out / "README.md").read_text()
    assert HH in card  # the source file
    assert "pipeline `exp`" in card and "| 1 | filter | 600 |" in card
    assert "chosen shorter than 20 chars" in card and "name: exp" in card


def test_standard_layouts_and_formats(ws, shared: Path, tmp_path: Path):
    import_path(ws, shared / "llama_factory/alpaca_en_demo.json", "alpaca")
    out = tmp_path / "sft"
    export_dataset(ws, "alpaca", out, fmt="hf", trl="standard", split_test=0.1)
    loaded = datasets.load_from_disk(str(out))
    assert loaded["train"].column_names == ["prompt", "completion"]
    assert (loaded["train"].num_rows, loaded["test"].num_rows) == (899, 100)
    assert isinstance(loaded["train"][0]["prompt"], str)
    export_dataset(ws, "alpaca", tmp_path / "pq", fmt="parquet", trl="conversational")
    frame = pl.read_parquet(tmp_path / "pq" / "train.parquet")
    assert frame.columns == ["prompt", "completion"] and frame.height == 999
    assert frame["completion"][0][0]["role"] == "assistant"
    export_dataset(ws, "alpaca", tmp_path / "jl", fmt="jsonl", trl="standard")
    first = json.loads((tmp_path / "jl" / "train.jsonl").read_text().splitlines()[0])
    assert set(first) == {"prompt", "completion"}


def test_standard_layout_refuses_multi_turn(demo, tmp_path: Path):
    with pytest.raises(WorkbenchError, match="multi-turn"):
        export_dataset(demo, "prefs", tmp_path / "std", trl="standard")
    assert not (tmp_path / "std").exists()


def test_existing_output_is_not_clobbered(demo, tmp_path: Path):
    out = tmp_path / "x"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = cli("export", "prefs", "--out", str(out), workspace=demo.root)
    assert result.returncode == 1 and "--overwrite" in result.stderr
    assert (out / "keep.txt").read_text() == "mine"


def test_labels_swap_and_drop(demo, tmp_path: Path):
    rows = demo.read("prefs").filter(pl.col("split") == "train").head(3)
    ids = rows["id"].to_list()
    demo.add_label("prefs", ids[0], "ann", "b", a_is_chosen=True)   # prefers rejected: swap
    demo.add_label("prefs", ids[1], "ann", "a", a_is_chosen=False)  # also the rejected side
    demo.add_label("prefs", ids[2], "ann", "tie", a_is_chosen=True)  # dropped
    out = tmp_path / "lab"
    export_dataset(demo, "prefs", out, fmt="parquet", labels=True)
    train = pl.read_parquet(out / "train.parquet")
    chosen = [m[0]["content"] for m in train["chosen"].to_list()]
    assert rows["rejected"][0] in chosen and rows["rejected"][1] in chosen
    assert rows["chosen"][2] not in chosen
    total = demo.read("prefs").filter(pl.col("split") == "train").height
    assert train.height == total - 1
    assert "swapped: 2" in (out / "README.md").read_text()


@pytest.mark.slow
def test_trl_trainers_take_the_exports(demo, ws, shared: Path, tmp_path: Path):
    """One real DPO and one SFT optimisation step on the exports, with the embedded model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    from workbench.models.embedded import ensure_converted

    path = ensure_converted()
    tokenizer = AutoTokenizer.from_pretrained(path)
    export_dataset(demo, "prefs", tmp_path / "dpo", fmt="hf")
    dpo_data = datasets.load_from_disk(str(tmp_path / "dpo"))["train"].select(range(4))
    model = AutoModelForCausalLM.from_pretrained(path)
    common = {"per_device_train_batch_size": 2, "max_steps": 1, "report_to": [],
              "use_cpu": True, "save_strategy": "no", "logging_steps": 1}
    dpo = DPOTrainer(model=model, args=DPOConfig(output_dir=str(tmp_path / "o1"), max_length=128,
                                                 **common),
                     train_dataset=dpo_data, processing_class=tokenizer)
    assert dpo.train().training_loss > 0

    import_path(ws, shared / "llama_factory/alpaca_en_demo.json", "alpaca")
    export_dataset(ws, "alpaca", tmp_path / "sft", fmt="hf")
    sft_data = datasets.load_from_disk(str(tmp_path / "sft"))["train"].select(range(4))
    sft = SFTTrainer(model=model, args=SFTConfig(output_dir=str(tmp_path / "o2"), max_length=128,
                                                 **common),
                     train_dataset=sft_data, processing_class=tokenizer)
    assert sft.train().training_loss > 0
