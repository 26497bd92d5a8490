"""`step_pairs` (Step-DPO) on real GSM8K problems from data/: with a scripted model whose
continuations are right exactly while the prefix holds only the reference's steps, the first
wrong step is found, the prefix is a true prefix of the solution, the chosen step's
continuation verifies and the rejected step's does not; the `--trl step-dpo` export is the
reference's record layout; and one small run on the embedded model."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import datasets
import polars as pl
import pytest
from conftest import DATA, cli
from scripted_backend import ScriptedBackend, install

from transforms.step_pairs import split_steps
from workbench.pipeline import build_pipeline
from workbench.runner import run_pipeline
from workbench.verifiers.math import check

WRONG_END = "#### 999999"


def gsm8k(limit: int) -> list[dict]:
    with (DATA / "benchmarks" / "gsm8k_test.jsonl").open() as lines:
        return [json.loads(line) for line in itertools.islice(lines, limit)]


def wrong_solution(reference: str, j: int) -> str:
    """The reference's steps up to j, then a wrong step j and a wrong final answer."""
    steps = split_steps(reference)
    return "".join(steps[:j]) + "Then I add 999990 more, so the total is 999999.\n" + WRONG_END


def scripted(problems: dict[str, str], unsolvable: set[str]):
    """Continue a prefix of the reference with its remaining steps (right), anything else
    with a wrong ending; `unsolvable` questions are answered wrongly from the start too."""
    def reply(messages: list[dict[str, str]]) -> str:
        question = messages[0]["content"]
        prefix = messages[-1]["content"] if messages[-1]["role"] == "assistant" else ""
        reference = problems[question]
        if question not in unsolvable and reference.startswith(prefix):
            return reference[len(prefix):]
        return WRONG_END
    return reply


def step_rows(tmp_path: Path, n: int = 8) -> tuple[Path, list[dict], dict[str, str]]:
    rows = gsm8k(n)
    problems = {r["question"]: r["answer"] for r in rows}
    table = []
    for i, row in enumerate(rows):
        n_steps = len(split_steps(row["answer"]))
        j = i % n_steps  # the wrong step's index: first, middle and last steps all occur
        table.append({"prompt": row["question"], "answer": row["answer"], "wrong_at": j,
                      "response": wrong_solution(row["answer"], j)})
    table[-1]["response"] = rows[-1]["answer"]  # a right solution: nothing to find
    source = tmp_path / "gsm8k_solutions.parquet"
    pl.DataFrame(table).write_parquet(source)
    return source, table, problems


def pipeline(source: Path, model: dict, **options) -> dict:
    return {"name": "steps", "input": str(source), "output": "step_pairs", "seed": 0,
            "models": {"default": model},
            "steps": [{"step_pairs": {"samples": 2, "max_new_tokens": 64, **options}}]}


def test_step_pairs_find_the_first_wrong_step_on_gsm8k(ws, tmp_path: Path, monkeypatch):
    source, table, problems = step_rows(tmp_path)
    unsolvable = {table[1]["prompt"]}
    backend = ScriptedBackend(scripted(problems, unsolvable), "step-dpo")
    result = run_pipeline(build_pipeline(pipeline(source, install(monkeypatch, backend))), ws,
                          progress=False)
    out = ws.read("step_pairs")
    expected = [r for r in table[:-1] if r["prompt"] not in unsolvable]
    assert out.height == len(expected) == 6
    for row, want in zip(out.iter_rows(named=True), expected, strict=True):
        solution, answer = want["response"], want["answer"]
        steps = split_steps(solution)
        assert row["step_index"] == want["wrong_at"]
        # the prefix is a true prefix of the solution, made of its first step_index steps
        assert row["prefix"] == "".join(steps[:row["step_index"]])
        assert solution.startswith(row["prefix"] + row["rejected_step"])
        assert row["rejected_step"] == steps[row["step_index"]]
        # the chosen step is the reference's next step, and its continuation verifies
        assert row["chosen_step"] == split_steps(answer)[row["step_index"]]
        assert row["chosen_full"].startswith(row["prefix"] + row["chosen_step"])
        assert check(row["chosen_full"], answer).passed
        # the rejected step's continuations do not verify, nor does the solution
        after = scripted(problems, unsolvable)(
            [{"role": "user", "content": want["prompt"]},
             {"role": "assistant", "content": row["prefix"] + row["rejected_step"]}])
        assert not check(row["prefix"] + row["rejected_step"] + after, answer).passed
        assert not check(row["rejected_full"], answer).passed
        # the pair both sides start with the prefix (the default export trains Step-DPO's loss)
        assert row["chosen"] == row["prefix"] + row["chosen_step"]
        assert row["rejected"] == row["prefix"] + row["rejected_step"]
        assert row["chosen_step"].strip() != row["rejected_step"].strip()
    report = result.steps[0].detail["report"]
    assert report["wrong_solutions"] == 7 and report["pairs"] == 6
    assert report["pairs_by_step_index"] == {
        str(k): n for k, n in pl.Series([r["wrong_at"] for r in expected]).value_counts()
        .iter_rows()}
    assert result.steps[0].dropped == {"solution verifies: no wrong step": 1,
                              "no continuation from the question verifies": 1}
    # every continuation came through the call cache: a fresh run asks the model nothing
    asked = len(backend.prompts)
    run_pipeline(build_pipeline(pipeline(source, install(monkeypatch, backend))), ws,
                 progress=False, fresh=True)
    assert len(backend.prompts) == asked


def test_step_dpo_export_is_the_reference_record_layout(ws, tmp_path: Path, monkeypatch):
    source, table, problems = step_rows(tmp_path, 4)
    backend = ScriptedBackend(scripted(problems, set()), "step-dpo")
    run_pipeline(build_pipeline(pipeline(source, install(monkeypatch, backend))), ws,
                 progress=False)
    out = tmp_path / "step-dpo"
    result = cli("export", "step_pairs", "--trl", "step-dpo", "--out", str(out),
                 workspace=ws.root)
    assert result.returncode == 0, result.stderr
    data = datasets.load_from_disk(str(out))["train"]
    assert data.column_names == ["prompt", "initial_reason_steps", "chosen", "rejected",
                                 "answer", "step_index", "full_chosen", "full_rejected"]
    pairs = ws.read("step_pairs")
    for record, row in zip(data, pairs.iter_rows(named=True), strict=True):
        assert record["prompt"] == row["prompt"][0]["content"]
        assert record["initial_reason_steps"] + record["rejected"] == row["rejected"]
        assert record["initial_reason_steps"] + record["chosen"] == row["chosen"]
    assert "## Step-DPO records" in (out / "README.md").read_text()
    refused = cli("export", "step_pairs", "--trl", "grpo", "--out", str(tmp_path / "g"),
                  workspace=ws.root)
    assert refused.returncode != 0 and "verify" in refused.stderr
    ws.write_dataset("plain", pl.DataFrame({"prompt": [[{"role": "user", "content": "q"}]],
                                            "chosen": ["a"], "rejected": ["b"]}),
                     "preference")
    refused = cli("export", "plain", "--trl", "step-dpo", "--out", str(tmp_path / "p"),
                  workspace=ws.root)
    assert refused.returncode != 0 and "step_pairs" in refused.stderr


def test_split_steps_keeps_the_text_and_cuts_at_markers_lines_or_sentences():
    samples = ["Let's think step by step.\nStep 1: 2 + 3 = 5.\nStep 2: 5 * 2 = 10.\n"
               "Step 3: The answer is \\boxed{10}.",
               "Janet has 3.\nShe buys 2 * 3 = <<2*3=6>>6.\n\n#### 6",
               "It is 2.5 units long. Twice that is 5. The answer is 5."]
    cut = [split_steps(text) for text in samples]
    assert all("".join(steps) == text for steps, text in zip(cut, samples, strict=True))
    assert [len(steps) for steps in cut] == [4, 3, 3]
    assert cut[0][1] == "Step 1: 2 + 3 = 5.\n" and cut[1][1] == "She buys 2 * 3 = <<2*3=6>>6.\n\n"
    assert cut[2][0] == "It is 2.5 units long. "  # a decimal point ends no sentence
    assert split_steps("\nStep 2: x\nStep 3: y") == ["\nStep 2: x\n", "Step 3: y"]


@pytest.mark.slow
def test_step_pairs_runs_on_the_embedded_model(ws, tmp_path: Path):
    """Easy problems with a solution wrong at its last step, and two GSM8K problems: what the
    small model emits keeps the structure."""
    easy = [("What is 3 + 4? Answer with the number only.", "3 + 4 = 8.\nThe answer is 8.", "7"),
            ("What is 2 + 2? Answer with the number only.", "2 + 2 = 5.\nThe answer is 5.", "4"),
            ("What is 5 + 1? Answer with the number only.", "5 + 1 = 7.\nThe answer is 7.", "6")]
    rows = [{"prompt": q, "response": s, "answer": a} for q, s, a in easy]
    rows += [{"prompt": r["question"], "answer": r["answer"],
              "response": wrong_solution(r["answer"], 1)} for r in gsm8k(2)]
    source = tmp_path / "easy.parquet"
    pl.DataFrame(rows).write_parquet(source)
    spec = {"name": "steps-embedded", "input": str(source), "output": "embedded_steps",
            "seed": 0, "models": {"default": {"backend": "transformers", "model": "embedded"}},
            "steps": [{"step_pairs": {"samples": 3, "max_new_tokens": 24, "max_steps": 6}}]}
    step = run_pipeline(build_pipeline(spec), ws, progress=False).steps[0]
    # seeded: the model finds a correct next step for two of the easy sums (2 records, 3
    # rows dropped for no verifying continuation, on 1 or 2 torch threads); at least one
    # record, so the checks below cannot pass on an empty output
    assert step.rows_out >= 1
    out = ws.read("embedded_steps")
    assert step.rows_in == 5 and step.rows_out + sum(step.dropped.values()) >= 5
    assert set(step.dropped) <= {"no continuation from the question verifies",
                                   "every verifying continuation repeats the wrong step",
                                   "more than 6 steps"}
    truth = {r["prompt"]: r for r in rows}
    for row in out.iter_rows(named=True):
        source_row = truth[row["prompt"][0]["content"]]
        steps = split_steps(source_row["response"])
        assert row["prefix"] == "".join(steps[:row["step_index"]])
        assert row["rejected_step"] == steps[row["step_index"]]
        assert check(row["chosen_full"], source_row["answer"]).passed
        assert row["chosen_full"].startswith(row["prefix"] + row["chosen_step"])
        assert not check(row["rejected_full"], source_row["answer"]).passed


def test_transforms_json_lists_step_pairs_and_the_verified_pair_options():
    items = {t["name"]: t for t in json.loads(cli("transforms", "--json").stdout)}
    step = items["step_pairs"]
    assert (step["consumes"], step["produces"], step["scope"]) == ("sft", "preference", "row")
    assert {"model", "answer", "solution", "split", "samples", "pairs_per_step", "max_steps",
            "temperature", "top_p", "max_new_tokens"} <= {f["name"] for f in step["fields"]}
    pairs = {f["name"]: f for f in items["pairs"]["fields"]}
    assert "verified" in pairs["method"]["type"]
    assert pairs["pairs_per_prompt"]["default"] == 1 and "first" in pairs["prefer"]["type"]
