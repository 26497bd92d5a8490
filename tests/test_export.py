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
    """One real DPO, SFT and KTO optimisation step on the exports, with the embedded model's
    tokenizer and chat template (what TRL reads the rows through) on a 2-layer Llama of its
    architecture: with TRL 1.16 one DPO step of the full 135M model takes about a minute on
    2 cores, the 2-layer one about 2 s, and the format handling under test is the same."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer, SFTConfig, SFTTrainer

    from workbench.models.embedded import ensure_converted

    embedded = ensure_converted()
    tokenizer = AutoTokenizer.from_pretrained(embedded)
    config = AutoConfig.from_pretrained(embedded, num_hidden_layers=2, hidden_size=64,
                                        intermediate_size=128, num_attention_heads=4,
                                        num_key_value_heads=2, head_dim=16)
    torch.manual_seed(0)
    path = tmp_path / "small-llama"  # the trainers load their reference models from a path
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
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

    import_path(ws, shared / "llama_factory/kto_en_demo.json", "kto")
    export_dataset(ws, "kto", tmp_path / "kto", fmt="hf", trl="kto")
    kto_data = datasets.load_from_disk(str(tmp_path / "kto"))["train"]
    labels = kto_data["label"]
    pick = [i for i, x in enumerate(labels) if x][:2] + [i for i, x in enumerate(labels) if not x][:2]
    kto_data = kto_data.select(pick)  # two desirable, two undesirable
    assert kto_data["label"] == [True, True, False, False]
    kto = KTOTrainer(model=model, args=KTOConfig(output_dir=str(tmp_path / "o3"), max_length=128,
                                                 **common),
                     train_dataset=kto_data, processing_class=tokenizer)
    assert kto.train().training_loss > 0


# both loaders, every format -----------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["hf", "parquet", "jsonl"])
def test_every_format_loads_with_load_dataset(ws, shared: Path, tmp_path: Path, fmt: str):
    """The card's `configs` name the files written, so `load_dataset(DIR)` reads exactly the
    rows `load_from_disk` (hf) or the files themselves hold, split by split."""
    import_path(ws, shared / "llama_factory/alpaca_en_demo.json", "alpaca")
    out = tmp_path / fmt
    result = export_dataset(ws, "alpaca", out, fmt=fmt, split_test=0.1)
    assert result["splits"] == {"train": 899, "test": 100}
    loaded = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache"))
    assert set(loaded) == {"train", "test"}
    if fmt == "hf":
        reference = datasets.load_from_disk(str(out))
        expected = {split: reference[split].to_list() for split in reference}
    else:
        read = pl.read_parquet if fmt == "parquet" else pl.read_ndjson
        expected = {split: read(out / f"{split}.{'parquet' if fmt == 'parquet' else 'jsonl'}").to_dicts()
                    for split in ("train", "test")}
    for split in ("train", "test"):
        assert loaded[split].column_names == ["prompt", "completion"]
        assert loaded[split].to_list() == expected[split]
    assert loaded["test"][0]["completion"][0]["role"] == "assistant"


# KTO ------------------------------------------------------------------------------------------
def _rows(dataset) -> list[tuple[str, str, bool]]:
    return sorted((json.dumps(r["prompt"]), json.dumps(r["completion"]), r["label"]) for r in dataset)


def test_kto_export_of_labelled_sft(ws, shared: Path, tmp_path: Path):
    raw = json.loads((shared / "llama_factory/kto_en_demo.json").read_text())
    import_path(ws, shared / "llama_factory/kto_en_demo.json", "kto")
    out = tmp_path / "kto"
    result = cli("export", "kto", "--trl", "kto", "--format", "jsonl", "--out", str(out),
                 workspace=ws.root)
    assert result.returncode == 0, result.stderr
    assert "unpaired-preference" in result.stdout
    loaded = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache"))["train"]
    assert loaded.column_names == ["prompt", "completion", "label"]
    assert loaded["label"] == [r["label"] for r in raw]
    assert loaded[0]["prompt"] == raw[0]["messages"][:-1]
    assert loaded[0]["completion"] == [{"role": "assistant", "content": raw[0]["messages"][-1]["content"]}]


def test_kto_export_of_pairs_matches_trl_unpairing(demo, tmp_path: Path):
    from trl.data_utils import unpair_preference_dataset

    export_dataset(demo, "prefs", tmp_path / "dpo", fmt="hf")
    result = export_dataset(demo, "prefs", tmp_path / "kto", fmt="hf", trl="kto")
    assert result["task"] == "unpaired-preference"
    paired = datasets.load_from_disk(str(tmp_path / "dpo"))
    unpaired = datasets.load_from_disk(str(tmp_path / "kto"))
    for split in ("train", "test"):
        assert unpaired[split].num_rows == 2 * paired[split].num_rows
        assert _rows(unpaired[split]) == _rows(unpair_preference_dataset(paired[split]))
    first = unpaired["train"].select(range(2)).to_list()
    assert [r["label"] for r in first] == [True, False]  # each pair: chosen, then rejected
    assert first[0]["prompt"] == first[1]["prompt"]


def test_kto_export_refuses_other_data(ws, shared: Path, tmp_path: Path):
    import_path(ws, shared / "llama_factory/alpaca_en_demo.json", "alpaca")  # sft, no label
    import_path(ws, DATA / "benchmarks/ifeval_input_data.jsonl", "ifeval")  # instruction
    for name in ("alpaca", "ifeval"):
        with pytest.raises(WorkbenchError, match="--trl kto needs a preference dataset"):
            export_dataset(ws, name, tmp_path / name, trl="kto")
        assert not (tmp_path / name).exists()


# ties ------------------------------------------------------------------------------------------
def _arena_file(tmp_path: Path) -> Path:
    def battle(winner: str, a: str, b: str) -> dict:
        q = {"role": "user", "content": f"Question for {winner}?"}
        return {"question_id": winner, "model_a": "vicuna-13b", "model_b": "koala-13b",
                "winner": winner, "conversation_a": [q, {"role": "assistant", "content": a}],
                "conversation_b": [q, {"role": "assistant", "content": b}], "turn": 1}
    rows = [battle("model_a", "A wins", "B loses"), battle("model_b", "A loses", "B wins"),
            battle("tie", "A tie", "B tie"), battle("tie (bothbad)", "A bad", "B bad")]
    path = tmp_path / "arena.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_ties_are_excluded_unless_kept(ws, tmp_path: Path):
    import_path(ws, _arena_file(tmp_path), "arena")
    result = cli("export", "arena", "--format", "parquet", "--out", str(tmp_path / "out"),
                 workspace=ws.root)
    assert result.returncode == 0, result.stderr
    assert "2 tied pairs excluded" in result.stdout
    chosen = pl.read_parquet(tmp_path / "out" / "train.parquet")["chosen"].to_list()
    assert [m[0]["content"] for m in chosen] == ["A wins", "B wins"]
    assert "2 tied pairs excluded" in (tmp_path / "out" / "README.md").read_text()
    kept = export_dataset(ws, "arena", tmp_path / "kept", fmt="parquet", keep_ties=True)
    assert (kept["ties_excluded"], kept["splits"]) == (0, {"train": 4})
    # a person who picks a side resolves the tie; the other tie stays excluded
    tie_id = ws.read("arena").filter(pl.col("tie") & ~pl.col("both_bad"))["id"][0]
    ws.add_label("arena", tie_id, "ann", "b", a_is_chosen=True)
    labelled = export_dataset(ws, "arena", tmp_path / "lab", fmt="parquet", labels=True)
    assert (labelled["ties_excluded"], labelled["labels"]["swapped"]) == (1, 1)
    chosen = pl.read_parquet(tmp_path / "lab" / "train.parquet")["chosen"].to_list()
    assert [m[0]["content"] for m in chosen] == ["A wins", "B wins", "B tie"]


# label policies ------------------------------------------------------------------------------
@pytest.fixture
def voted(ws, tmp_path: Path):
    """Six pairs labelled by three annotators who disagree (a_is_chosen: whether the dataset's
    chosen reply was shown as A)."""
    rows = [{"prompt": f"q{i}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(6)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    import_path(ws, path, "pairs")
    ids = ws.read("pairs")["id"].to_list()
    votes = [  # row, annotator, choice, a_is_chosen
        (0, "ann1", "a", True), (0, "ann2", "a", True), (0, "ann3", "b", True),  # 2 of 3: chosen
        (1, "ann1", "b", True), (1, "ann2", "a", False), (1, "ann3", "tie", True),  # 2 of 3: rejected
        (2, "ann1", "a", True), (2, "ann2", "b", True),  # 1 to 1: no majority
        (3, "ann1", "tie", True), (3, "ann2", "both_bad", False), (3, "ann3", "a", True),
        (4, "ann1", "a", True), (4, "ann1", "b", True),  # a relabel: ann1's latest is rejected
    ]  # row 5: unlabelled
    for row, annotator, choice, a_is_chosen in votes:
        ws.add_label("pairs", ids[row], annotator, choice, a_is_chosen=a_is_chosen)
    return ws


def _chosen_by_prompt(out: Path) -> dict[str, str]:
    frame = pl.read_parquet(out / "train.parquet")
    return {p[0]["content"]: c[0]["content"] for p, c in zip(frame["prompt"], frame["chosen"], strict=True)}


def test_label_policy_majority(voted, tmp_path: Path):
    result = export_dataset(voted, "pairs", tmp_path / "m", fmt="parquet", labels=True)
    assert _chosen_by_prompt(tmp_path / "m") == {"q0": "c0", "q1": "r1", "q4": "r4", "q5": "c5"}
    assert result["labels"] == {"policy": "majority", "labelled": 5, "swapped": 2,
                                "excluded_tie_or_both_bad": 0, "excluded_no_majority": 2}
    card = (tmp_path / "m" / "README.md").read_text()
    assert "policy: majority" in card and "excluded no majority: 2" in card


def test_label_policy_latest(voted, tmp_path: Path):
    result = export_dataset(voted, "pairs", tmp_path / "l", fmt="parquet", labels=True,
                            label_policy="latest")
    # latest across annotators: row 0 ann3 (b), row 1 ann3 (tie), row 2 ann2 (b), row 3 ann3 (a)
    assert _chosen_by_prompt(tmp_path / "l") == {"q0": "r0", "q2": "r2", "q3": "c3", "q4": "r4",
                                                 "q5": "c5"}
    assert result["labels"] == {"policy": "latest", "labelled": 5, "swapped": 3,
                                "excluded_tie_or_both_bad": 1}


def test_label_policy_one_annotator_through_cli(voted, tmp_path: Path):
    out = tmp_path / "a2"
    result = cli("export", "pairs", "--format", "parquet", "--out", str(out), "--labels",
                 "--label-policy", "annotator:ann2", workspace=voted.root)
    assert result.returncode == 0, result.stderr
    assert "swapped 2" in result.stdout and "excluded tie or both bad 1" in result.stdout
    # ann2: row 0 chosen, rows 1 and 2 rejected, row 3 both_bad; rows 4 and 5 unlabelled by ann2
    assert _chosen_by_prompt(out) == {"q0": "c0", "q1": "r1", "q2": "r2", "q4": "c4", "q5": "c5"}
    bad = cli("export", "pairs", "--out", str(tmp_path / "x"), "--labels", "--label-policy",
              "annotator:nobody", workspace=voted.root)
    assert bad.returncode == 1 and "no labels by 'nobody'" in bad.stderr
    assert "annotators: ann1, ann2, ann3" in bad.stderr
    no_labels = cli("export", "pairs", "--out", str(tmp_path / "y"), "--label-policy", "latest",
                    workspace=voted.root)
    assert no_labels.returncode == 1 and "--label-policy applies with --labels" in no_labels.stderr
