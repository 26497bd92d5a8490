"""Decontamination: a quoted benchmark question is caught through case and whitespace
changes, short shared phrases are not, and the report counts hits per benchmark."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import polars as pl
import pytest
from conftest import DATA

from workbench.io.importer import load
from workbench.registry import get
from workbench.transform import DROP, Context


def rows(*turns: str | list[str]) -> pl.DataFrame:
    prompts = []
    for t in turns:
        messages = [t] if isinstance(t, str) else t
        roles = ["user", "assistant"] * len(messages)
        prompts.append([{"role": r, "content": m} for r, m in zip(roles, messages, strict=False)])
    return pl.DataFrame({"id": [f"r{i}" for i in range(len(turns))], "prompt": prompts,
                         "response": ["ok"] * len(turns)})


def run(frame: pl.DataFrame, **config) -> tuple[pl.DataFrame, dict]:
    ctx = Context()
    out = get("decontaminate")(config)(frame.lazy(), ctx).collect()
    return out, ctx.notes["report"]


def test_quoted_questions_are_caught_and_short_phrases_are_not():
    gsm = load(DATA / "benchmarks/gsm8k_test.jsonl")[0]["prompt"].list.last().struct.field("content")
    mt_bench = [json.loads(line) for line in (DATA / "benchmarks/mt_bench_questions.jsonl")
                .read_text().splitlines()]
    ifeval = load(DATA / "benchmarks/ifeval_input_data.jsonl")[0]
    shouted = " \n ".join(gsm[3].upper().split())  # changed case and whitespace
    second_turn = mt_bench[4]["turns"][1]
    frame = rows(
        f"Here is a puzzle for you:  {shouted}  Thanks!",
        ["Hi!", "Hello.", second_turn.lower()],  # a later user turn quotes MT-Bench turn 2
        "How many apples does she have left at the end of the day?",  # common phrase only
        ifeval["prompt"][0][0]["content"][:60],  # an IFEval prompt's opening words
        "Tell me about the history of Rome.",
    )
    out, report = run(frame)
    by_id = {r["id"]: r for r in out.iter_rows(named=True)}
    assert by_id["r0"]["contaminated_by"] == "gsm8k:3" and by_id["r0"]["overlap"] == 1.0
    assert by_id["r1"]["contaminated_by"] == f"mt_bench:{mt_bench[4]['question_id']}#turn2"
    for kept in ("r2", "r3", "r4"):
        assert by_id[kept][DROP] is None and by_id[kept]["contaminated_by"] is None
        assert by_id[kept]["overlap"] <= 0.5
    assert 0 < by_id["r3"]["overlap"] < 0.5  # shares the 8-grams of a prompt's first words
    assert by_id["r0"][DROP] == "contaminated: 8-gram overlap > 0.5 with a benchmark"
    assert report["contaminated_rows"] == 2
    assert report["benchmarks"]["gsm8k"] == {"instances": 1319, "rows_hit": 1, "items_hit": 1}
    assert report["benchmarks"]["mt_bench"]["instances"] == 160  # two turns each
    assert report["benchmarks"]["humaneval"]["rows_hit"] == 0
    flagged, _ = run(frame, action="flag")
    assert DROP not in flagged.columns
    assert flagged["contaminated"].to_list() == [True, True, False, False, False]


def test_threshold_is_strict_and_short_instances_match_exactly(tmp_path: Path):
    bench = tmp_path / "mine.jsonl"
    bench.write_text(json.dumps({"id": "q1", "question": "What is 2 + 2?"}) + "\n"
                     + json.dumps({"id": "q2", "question": " ".join(f"w{i}" for i in range(16))})
                     + "\n")
    half = " ".join(f"w{i}" for i in range(8))  # 8 of 16 tokens: overlap exactly 0.5
    frame = rows("what is 2+2", "What is 2 + 2? Explain.", half)
    out, report = run(frame, shipped=[], benchmarks=[str(bench)])
    assert out["contaminated_by"].to_list() == ["mine:q1", None, None]
    assert out["overlap"].to_list() == [1.0, 0.0, 0.5]  # 0.5 is not > 0.5
    assert report["benchmarks"]["mine"]["rows_hit"] == 1
    out, _ = run(frame, shipped=[], benchmarks=[{"path": str(bench), "name": "m"}],
                 threshold=0.4)
    assert out["contaminated_by"].to_list() == ["m:q1", None, "m:q2"]
    with pytest.raises(ValueError, match="unknown shipped benchmark 'alpaca_eval'"):
        get("decontaminate")({"shipped": ["alpaca_eval"]})


def test_real_contaminated_set_and_mmlu_from_shared(shared: Path):
    """Every Tulu-1 human-eval prompt is an AlpacaEval instruction (SOURCES.md); MMLU's original
    headerless CSVs in ../shared load through a glob (the shipped copy keeps the questions)."""
    tulu = load(shared / "open_instruct/eval_instances_tulu_1.jsonl")[0]
    with open(shared / "mmlu/test/astronomy_test.csv", newline="") as f:
        question = next(csv.reader(f))[0]
    extra = rows(f"Answer this: {question}")
    frame = pl.concat([tulu.select("id", "prompt"), extra.select("id", "prompt")])
    out, report = run(frame, shipped=[], benchmarks=[
        str(shared / "alpaca_eval/alpaca_eval.jsonl"),
        {"path": str(shared / "mmlu/test/*.csv"), "name": "mmlu",
         "csv_columns": ["question", "A", "B", "C", "D", "answer"]}])
    caught = out.filter(pl.col("contaminated_by").is_not_null())
    assert caught.height == frame.height
    assert caught["contaminated_by"].str.starts_with("alpaca_eval:").sum() == tulu.height
    assert out.filter(pl.col("id") == "r0")["contaminated_by"].item().startswith("mmlu:astronomy_test/")
    assert report["benchmarks"]["mmlu"]["instances"] == 14042
    assert report["benchmarks"]["alpaca_eval"]["items_hit"] == 332
