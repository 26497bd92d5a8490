"""Importing the real files under ../shared/data: kinds, row counts, layouts, ids."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import polars as pl
import pytest
from conftest import DATA, cli

from workbench.io.importer import import_path, load

# file, kind, layout; counts come from parsing the source file itself in the test
REAL_FILES = [
    ("hh_rlhf/harmless-base/test.jsonl.gz", "preference", "hh-rlhf"),
    ("magpie/data_po/example_instructions_5res_armorm.json", "candidates", "candidates"),
    ("magpie/data_po/example_instructions.jsonl", "instruction", "instruction"),
    ("alpaca/seed_tasks.jsonl", "sft", "self-instruct"),
    ("llama_factory/alpaca_en_demo.json", "sft", "alpaca"),
    ("llama_factory/kto_en_demo.json", "sft", "kto"),
    ("fastchat/dummy_conversation.json", "sft", "sharegpt"),
    ("cs336/sft_sample.jsonl", "sft", "prompt-response"),
    ("open_instruct/eval_instances_tulu_1.jsonl", "candidates", "candidates"),
    ("mt_bench/question.jsonl", "instruction", "turns"),
    ("alpaca_eval/alpaca_eval.jsonl", "sft", "alpaca"),
    ("gsm8k/test.jsonl", "sft", "question-answer"),
    ("gsm8k/train.jsonl", "sft", "question-answer"),
    ("humaneval/HumanEval.jsonl.gz", "instruction", "prompt"),
    ("ifeval/input_data.jsonl", "instruction", "prompt"),
]


def count_records(path: Path) -> int:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        if ".jsonl" in path.name:
            return sum(1 for line in fh if line.strip())
        return len(json.load(fh))


@pytest.mark.parametrize(("relpath", "kind", "layout"), REAL_FILES)
def test_real_file_imports_with_kind_and_count(shared: Path, ws, relpath, kind, layout):
    path = shared / relpath
    version = import_path(ws, path, "d")
    assert version.kind == kind
    assert version.lineage["import"]["layout"] == layout
    assert version.rows == count_records(path)
    frame = ws.read("d")
    assert frame.height == count_records(path)
    assert frame["id"].n_unique() == frame.height


def test_hh_rlhf_splits_transcripts_into_messages(shared: Path):
    frame, kind, _ = load(shared / "hh_rlhf/harmless-base/test.jsonl.gz")
    with gzip.open(shared / "hh_rlhf/harmless-base/test.jsonl.gz", "rt") as fh:
        raw = json.loads(fh.readline())
    row = frame.row(0, named=True)
    assert kind == "preference"
    turns = re.findall(r"\n\n(Human|Assistant): ", raw["chosen"])
    expected = [{"Human": "user", "Assistant": "assistant"}[t] for t in turns[:-1]]
    assert [m["role"] for m in row["prompt"]] == expected
    assert row["prompt"][0]["content"] == "what are some pranks with a pen i can do?"
    # chosen/rejected are the final assistant replies, the common prefix is the prompt
    assert raw["chosen"].endswith(row["chosen"]) and raw["rejected"].endswith(row["rejected"])
    assert "\n\nHuman:" not in row["chosen"]
    # every prompt is multi-turn-capable and ends with a user turn
    roles = frame.select(pl.col("prompt").list.last().struct.field("role")).to_series()
    assert set(roles.to_list()) == {"user"}
    assert frame["prompt"].list.len().max() > 3
    # the five malformed transcripts are kept and flagged, not dropped
    assert frame["import_warning"].drop_nulls().len() == 5


def test_layout_details(shared: Path):
    magpie, _, _ = load(shared / "magpie/data_po/example_instructions_5res_armorm.json")
    raw = json.loads((shared / "magpie/data_po/example_instructions_5res_armorm.json").read_text())
    assert magpie["responses"].list.len().to_list() == [5] * 5
    assert magpie["scores"][0].to_list() == [r["score"] for r in raw[0]["rewards_armorm"]]
    sharegpt, _, _ = load(shared / "fastchat/dummy_conversation.json")
    first = sharegpt.row(0, named=True)
    assert first["prompt"][0] == {"role": "user", "content": "Who are you?"}
    assert first["source_id"] == "identity_0"
    alpaca, _, _ = load(shared / "llama_factory/alpaca_en_demo.json")
    raw_alpaca = json.loads((shared / "llama_factory/alpaca_en_demo.json").read_text())
    with_input = next(i for i, r in enumerate(raw_alpaca) if r["input"])
    # LLaMA-Factory joins instruction and input with one newline (its data/README.md)
    assert alpaca["prompt"][with_input][0]["content"] == (
        raw_alpaca[with_input]["instruction"] + "\n" + raw_alpaca[with_input]["input"])
    tulu, _, _ = load(shared / "open_instruct/eval_instances_tulu_1.jsonl")
    assert tulu["models"][0].to_list() == ["tulu_65B", "chatgpt"]


def test_ids_are_stable_content_hashes(tmp_path: Path):
    a, _, _ = load(DATA / "benchmarks/gsm8k_test.jsonl")
    b, _, _ = load(DATA / "benchmarks/gsm8k_test.jsonl")
    assert a["id"].to_list() == b["id"].to_list()
    # the same row in another file gets the same id; a changed row gets another
    lines = (DATA / "benchmarks/gsm8k_test.jsonl").read_text().splitlines()
    edited = json.loads(lines[1])
    edited["answer"] += " (edited)"
    (tmp_path / "slice.jsonl").write_text(lines[0] + "\n" + json.dumps(edited) + "\n")
    c, _, _ = load(tmp_path / "slice.jsonl")
    assert c["id"][0] == a["id"][0]
    assert c["id"][1] != a["id"][1]


def test_duplicate_rows_get_distinct_stable_ids(tmp_path: Path):
    row = json.dumps({"prompt": "hi", "response": "hello"})
    (tmp_path / "dup.jsonl").write_text(f"{row}\n{row}\n{row}\n")
    frame, _, _ = load(tmp_path / "dup.jsonl")
    base = frame["id"][0]
    assert frame["id"].to_list() == [base, f"{base}-1", f"{base}-2"]


def test_other_formats_csv_parquet_hf_folder(tmp_path: Path, ws):
    import datasets

    frame = pl.DataFrame({"prompt": ["a?", "b?"], "chosen": ["x", "y"], "rejected": ["z", "w"]})
    frame.write_csv(tmp_path / "p.csv")
    frame.write_parquet(tmp_path / "p.parquet")
    datasets.DatasetDict({
        "train": datasets.Dataset.from_polars(frame),
        "test": datasets.Dataset.from_polars(frame.head(1)),
    }).save_to_disk(str(tmp_path / "hf"))
    conversational = [{"prompt": [{"role": "user", "content": "a?"}],
                       "chosen": [{"role": "assistant", "content": "x"}],
                       "rejected": [{"role": "assistant", "content": "z"}]}]
    (tmp_path / "conv.json").write_text(json.dumps(conversational))
    implicit = [{"chosen": [{"role": "user", "content": "a?"}, {"role": "assistant", "content": "x"}],
                 "rejected": [{"role": "user", "content": "a?"}, {"role": "assistant", "content": "z"}]}]
    (tmp_path / "implicit.json").write_text(json.dumps(implicit))
    for name, rows in (("p.csv", 2), ("p.parquet", 2), ("hf", 3), ("conv.json", 1),
                       ("implicit.json", 1)):
        version = import_path(ws, tmp_path / name, name.replace(".", "_"))
        assert (version.kind, version.rows) == ("preference", rows)
    implicit_row = ws.read("implicit_json").row(0, named=True)
    assert implicit_row["prompt"] == [{"role": "user", "content": "a?"}]
    assert (implicit_row["chosen"], implicit_row["rejected"]) == ("x", "z")
    assert sorted(ws.read("hf")["split"].to_list()) == ["test", "train", "train"]


def test_map_option_maps_custom_columns(tmp_path: Path):
    (tmp_path / "qa.jsonl").write_text(json.dumps({"q": "2+2?", "a": "4"}) + "\n")
    result = cli("import", str(tmp_path / "qa.jsonl"), "--name", "qa", "--map", "prompt=q",
                 "--map", "response=a", workspace=tmp_path / "ws")
    assert result.returncode == 0, result.stderr
    assert "1 sft rows" in result.stdout


# malformed input: exit non-zero, name file and line/column, leave nothing behind -----------
def _assert_rejected(tmp_path: Path, path: Path, *expected: str) -> None:
    workspace = tmp_path / "ws"
    result = cli("import", str(path), "--name", "bad", workspace=workspace)
    assert result.returncode != 0
    message = result.stderr.strip()
    assert message.startswith("error: ") and len(message.splitlines()) == 1
    assert str(path) in message
    for fragment in expected:
        assert fragment in message, message
    listed = cli("datasets", "--json", workspace=workspace)
    assert json.loads(listed.stdout) == []
    assert not any((workspace / "datasets").iterdir())


def test_broken_jsonl_line(tmp_path: Path):
    lines = (DATA / "benchmarks/gsm8k_test.jsonl").read_text().splitlines()[:5]
    lines[3] = lines[3][:40]  # truncated record on line 4
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join(lines) + "\n")
    _assert_rejected(tmp_path, path, "line 4", "invalid JSON")


def test_missing_chosen_column(tmp_path: Path):
    path = tmp_path / "nochosen.jsonl"
    path.write_text(json.dumps({"prompt": "p", "rejected": "r"}) + "\n")
    _assert_rejected(tmp_path, path, "'chosen'", "missing")


def test_null_field_names_line(tmp_path: Path):
    rows = [{"prompt": "p", "chosen": "c", "rejected": "r"},
            {"prompt": "p2", "chosen": None, "rejected": "r"}]
    path = tmp_path / "nullchosen.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    _assert_rejected(tmp_path, path, "line 2", "'chosen'")


def test_empty_file(tmp_path: Path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    _assert_rejected(tmp_path, path, "empty")


def test_invalid_utf8(tmp_path: Path):
    good = json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"}).encode()
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(good + b"\n" + good.replace(b'"c"', b'"caf\xe9"') + b"\n")
    _assert_rejected(tmp_path, path, "line 2", "invalid UTF-8")


def test_unknown_layout_lists_columns(tmp_path: Path, shared: Path):
    _assert_rejected(tmp_path, shared / "mt_bench/reference_answer/gpt-4.jsonl",
                     "no known layout", "question_id", "--map")


def test_headerless_csv_with_column_names(tmp_path: Path, shared: Path):
    path = shared / "mmlu/test/anatomy_test.csv"
    result = cli("import", str(path), "--name", "mmlu", "--columns", "question,A,B,C,D,answer",
                 "--map", "prompt=question", workspace=tmp_path / "ws")
    assert result.returncode == 0, result.stderr
    assert "135 instruction rows" in result.stdout  # SOURCES.md: 135 anatomy questions


def test_a_name_ending_in_a_newline_is_refused(tmp_path: Path):
    """`$` in a regex matches before a final newline: names are checked with a full match."""
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"}) + "\n")
    for bad in ("hh\n", "hh\r\n", "\nhh"):
        result = cli("import", str(path), "--name", bad, workspace=tmp_path / "ws")
        assert result.returncode == 1 and "invalid dataset name" in result.stderr, bad
    assert json.loads(cli("datasets", "--json", workspace=tmp_path / "ws").stdout) == []


@pytest.mark.parametrize(("field", "text"), [
    ("chosen_score", "NaN"), ("chosen_score", "Infinity"), ("rejected_score", "-Infinity"),
    ("chosen_score", "1e400"), ("scores", "[1.0, NaN]")])
def test_non_finite_scores_are_an_error_naming_file_line_and_field(tmp_path: Path, field, text):
    """JSON's NaN and Infinity (which Python reads) and overflowing numbers are refused."""
    good = {"prompt": "p", "chosen": "c", "rejected": "r", "chosen_score": 1.0,
            "rejected_score": 0.5, "scores": [1.0, 0.5]}
    bad = json.dumps({**good, field: "HERE"}).replace('"HERE"', text)
    path = tmp_path / "scores.jsonl"
    path.write_text(json.dumps(good) + "\n" + bad + "\n")
    _assert_rejected(tmp_path, path, "line 2", f"field {field!r}", "not a finite number")


def test_non_finite_scores_in_csv_and_parquet_are_refused(tmp_path: Path):
    frame = pl.DataFrame({"prompt": ["p", "q"], "chosen": ["c", "c"], "rejected": ["r", "r"],
                          "chosen_score": [1.0, float("inf")]})
    frame.write_parquet(tmp_path / "s.parquet")
    _assert_rejected(tmp_path, tmp_path / "s.parquet", "record 1", "'chosen_score'",
                     "not a finite number")
    (tmp_path / "shp.csv").write_text(
        "history,human_ref_A,human_ref_B,labels,score_A,score_B\n"
        "q,a,b,1,3,1\nq2,a,b,0,NaN,2\n")
    _assert_rejected(tmp_path, tmp_path / "shp.csv", "line 3", "not a finite number")


def test_a_duplicate_csv_header_is_an_error(tmp_path: Path):
    path = tmp_path / "dup.csv"
    path.write_text("prompt,chosen,rejected,chosen\np,c,r,c2\n")
    _assert_rejected(tmp_path, path, "the header names column 'chosen' twice (columns 2 and 4)")


def test_csv_errors_name_the_physical_line(tmp_path: Path):
    """A quoted field spanning lines: the bad record starts on line 5, the 3rd record."""
    path = tmp_path / "multi.csv"
    path.write_text('prompt,chosen,rejected\np1,"one\ntwo",r\np2,"three\nfour",r\np3,,r\n')
    _assert_rejected(tmp_path, path, "line 6", "'chosen'")
    ragged = tmp_path / "ragged.csv"
    ragged.write_text('prompt,chosen,rejected\np1,"one\ntwo",r\np2,c,r,extra\n')
    _assert_rejected(tmp_path, ragged, "line 4", "4 fields where the header has 3")


@pytest.mark.parametrize("depth", [40, 100_000])
@pytest.mark.parametrize("suffix", ["jsonl", "json"])
def test_deeply_nested_json_is_an_error_naming_file_and_line(tmp_path: Path, depth, suffix):
    good = json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"})
    deep = '{"prompt": "p", "chosen": "c", "rejected": "r", "x": ' + "[" * depth + "]" * depth + "}"
    path = tmp_path / f"deep.{suffix}"
    path.write_text(good + "\n" + deep + "\n" if suffix == "jsonl" else
                    "[\n" + good + ",\n" + deep + "\n]\n")
    _assert_rejected(tmp_path, path, "line 2" if suffix == "jsonl" else "line 3",
                     "nested more than 32 levels")
