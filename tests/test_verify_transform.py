"""`verify` through real pipeline runs on sft, candidates and preference rows: the columns
each kind gets, the report's counts over several batches, null ground truth, reasoning
traces, config errors, and HumanEval's 164 canonical solutions passing in a run."""

from __future__ import annotations

import gzip
import json

import polars as pl
import pytest
import yaml

from tests.conftest import DATA, cli
from workbench.errors import PipelineError
from workbench.pipeline import build_pipeline
from workbench.runner import run_pipeline


def prompt(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def run(ws, source: str, steps: list, batch_size: int = 1000):
    spec = {"name": "v", "input": source, "batch_size": batch_size, "steps": steps,
            "output": "verified"}
    result = run_pipeline(build_pipeline(spec), ws, progress=False)
    return result, ws.read("verified"), ws.step_logs(result.run_id)[-1]["detail"]


def gsm8k(n: int) -> list[dict]:
    with (DATA / "benchmarks" / "gsm8k_test.jsonl").open() as lines:
        return [json.loads(line) for line, _ in zip(lines, range(n), strict=False)]


def final(answer: str) -> int:
    return int(answer.rsplit("####", 1)[1].strip().replace(",", ""))


def test_sft_rows_get_passed_and_detail_and_the_report_adds_up_over_batches(ws):
    rows = gsm8k(30)
    frame = pl.DataFrame({
        "prompt": [prompt(r["question"]) for r in rows],
        "response": [f"The answer is {final(r['answer']) + (i % 3 == 0)}." for i, r in
                     enumerate(rows)],
        "answer": [None if i == 29 else r["answer"] for i, r in enumerate(rows)],
    })
    ws.write_dataset("gsm", frame, "sft")
    result, out, detail = run(ws, "gsm", [{"verify": {"checker": "math", "answer": "answer"}}],
                              batch_size=7)
    assert out.height == 30 and out.schema["passed"] == pl.Boolean
    assert out.schema["verify_detail"] == pl.String
    expected = [None if i == 29 else i % 3 != 0 for i in range(30)]
    assert out["passed"].to_list() == expected
    assert out["verify_detail"][29] == "no ground truth"
    assert out["verify_detail"][0].endswith("expected " + str(final(rows[0]["answer"])))
    report = detail["report"]
    assert report["checker"] == "math"
    assert (report["checked"], report["passed"], report["failed"]) == (29, 19, 10)
    assert report["no_ground_truth"] == 1
    assert detail["nulled"] == {"verify: no ground truth": 1}
    assert result.steps[-1].rows_out == 30


def test_every_answer_layout_through_verify_on_250_gsm8k_problems(ws):
    """Acceptance 1 through the step: each problem's original GSM8K solution is the ground
    truth; each of five answer layouts passes with the right value and fails with it changed."""
    from tests.test_verify_math import LAYOUTS

    rows = gsm8k(250)
    prompts, responses, truths, wanted = [], [], [], []
    for row in rows:
        value = final(row["answer"])
        for layout in LAYOUTS:
            for n, right in ((value, True), (value + 7, False)):
                prompts.append(prompt(row["question"]))
                responses.append(layout.format(n=n))
                truths.append(row["answer"])
                wanted.append(right)
    ws.write_dataset("layouts", pl.DataFrame({"prompt": prompts, "response": responses,
                                              "answer": truths}), "sft")
    _, out, detail = run(ws, "layouts", [{"verify": {"checker": "math", "answer": "answer"}}])
    assert out.height == 2500
    wrong = out.filter(pl.col("passed") != pl.Series(wanted))
    assert wrong.select("response", "verify_detail").rows() == []
    assert (detail["report"]["passed"], detail["report"]["failed"]) == (1250, 1250)


def test_candidates_get_a_pass_rate_and_the_histogram_counts_prompts(ws):
    rows = gsm8k(12)
    # row i has i % 5 right answers out of 4 candidates (4 means all right)
    responses, rates = [], []
    for i, row in enumerate(rows):
        right = min(i % 5, 4)
        value = final(row["answer"])
        responses.append([f"#### {value if k < right else value + 1}" for k in range(4)])
        rates.append(right / 4)
    frame = pl.DataFrame({"prompt": [prompt(r["question"]) for r in rows],
                          "responses": responses, "gold": [r["answer"] for r in rows]})
    ws.write_dataset("cands", frame, "candidates")
    _, out, detail = run(ws, "cands", [{"verify": {"checker": "math", "answer": "gold"}}],
                         batch_size=5)
    assert out.schema["passed"] == pl.List(pl.Boolean)
    assert out.schema["verify_detail"] == pl.List(pl.String)
    assert out["pass_rate"].to_list() == rates
    assert out["passed"][1].to_list() == [True, False, False, False]
    histogram = detail["report"]["rows_by_pass_rate"]
    assert histogram == {"0": 3, "(0, 0.25]": 3, "(0.25, 0.5]": 2, "(0.5, 0.75]": 2,
                         "(0.75, 1)": 0, "1": 2}
    assert detail["report"]["checked"] == 48


def test_pass_rate_band_keeps_prompts_between_bounds(ws):
    rows = gsm8k(5)
    frame = pl.DataFrame({
        "prompt": [prompt(r["question"]) for r in rows],
        "responses": [[f"\\boxed{{{final(r['answer']) + (k >= i)}}}" for k in range(4)]
                      for i, r in enumerate(rows)],
        "gold": [r["answer"] for r in rows]})
    ws.write_dataset("band", frame, "candidates")
    _, out, _ = run(ws, "band", [{"verify": {"checker": "math", "answer": "gold"}},
                                 {"filter": {"expr": "pass_rate >= 0.2 AND pass_rate <= 0.8"}}])
    assert out["pass_rate"].to_list() == [0.25, 0.5, 0.75]


def test_preference_rows_check_both_sides_and_leave_reasoning_out_by_default(ws):
    frame = pl.DataFrame({
        "prompt": [prompt("Reply with a JSON object holding a name.")] * 3,
        "chosen": ['{"name": "Ada"}', '```json\n{"name": "Bo"}\n```', '{"name": 3}'],
        "rejected": ["Ada", '{"nom": "x"}', '{"name": "Cy"}'],
        "chosen_reasoning": ["I should answer {bad json", None, None],
        "schema": [json.dumps({"type": "object", "required": ["name"],
                               "properties": {"name": {"type": "string"}}})] * 3,
    })
    ws.write_dataset("prefs", frame, "preference")
    _, out, detail = run(ws, "prefs", [{"verify": {"checker": "json_schema",
                                                   "answer": "schema"}}])
    assert out["chosen_passed"].to_list() == [True, True, False]
    assert out["rejected_passed"].to_list() == [False, False, True]
    assert out["rejected_verify_detail"][0].startswith("not JSON")
    assert "'name' is a required property" in out["rejected_verify_detail"][1]
    assert (detail["report"]["chosen_passed"], detail["report"]["rejected_passed"]) == (2, 1)
    with_trace = run(ws, "prefs", [{"verify": {"checker": "json_schema", "answer": "schema",
                                               "include_reasoning": True}}])[1]
    assert with_trace["chosen_passed"].to_list() == [False, True, False]  # trace came first


def test_reasoning_traces_of_sft_and_candidates(ws):
    frame = pl.DataFrame({
        "prompt": [prompt("Say hello.")] * 2,
        "response": ["Hello there", "Goodbye"],
        "reasoning": ["The user wants hello.", None],
        "pattern": ["^Hello", "^Hello"],
    })
    ws.write_dataset("s", frame, "sft")
    steps = [{"verify": {"checker": "regex", "answer": "pattern"}}]
    assert run(ws, "s", steps)[1]["passed"].to_list() == [True, False]
    steps[0]["verify"]["include_reasoning"] = True
    assert run(ws, "s", steps)[1]["passed"].to_list() == [False, False]
    cands = pl.DataFrame({"prompt": [prompt("Say hello.")],
                          "responses": [["Hello", "Hi"]],
                          "reasoning": [["Greeting wanted. Hello.", "Hmm"]],
                          "pattern": ["Hello"]})
    ws.write_dataset("c", cands, "candidates")
    steps = [{"verify": {"checker": "regex", "answer": "pattern", "match": "fullmatch"}}]
    assert run(ws, "c", steps)[1]["passed"].to_list() == [[True, False]]
    steps[0]["verify"]["include_reasoning"] = True
    out = run(ws, "c", steps)[1]
    assert out["passed"].to_list() == [[False, False]]
    assert out["verify_detail"][0][0] == "does not fully match /Hello/"


@pytest.mark.slow  # subprocesses end to end: `make test` only
def test_humaneval_canonical_solutions_all_pass_and_replaced_bodies_fail_in_a_run(ws):
    with gzip.open(DATA / "benchmarks" / "humaneval.jsonl.gz", "rt") as lines:
        problems = [json.loads(line) for line in lines]
    frame = pl.DataFrame({
        "prompt": [prompt(p["prompt"]) for p in problems],
        "responses": [[f"```python\n{p['prompt']}{p['canonical_solution']}```",
                       p["prompt"] + "    return None\n"] for p in problems],
        "test": [p["test"] for p in problems],
        "entry_point": [p["entry_point"] for p in problems],
    })
    ws.write_dataset("humaneval", frame, "candidates")
    _, out, detail = run(ws, "humaneval", [{"verify": {
        "checker": "code", "tests": "test", "entry_point": "entry_point", "workers": 4}}],
        batch_size=60)
    assert out.height == 164
    assert out["passed"].list.get(0).all(), out.filter(~pl.col("passed").list.get(0))
    assert not out["passed"].list.get(1).any()
    assert out["pass_rate"].to_list() == [0.5] * 164
    assert detail["report"]["rows_by_pass_rate"]["(0.25, 0.5]"] == 164
    assert (detail["report"]["checked"], detail["report"]["passed"]) == (328, 164)


def test_harmful_programs_fail_with_their_reason_and_the_run_completes(ws, tmp_path):
    """Acceptance 2 through the step: programs that fork, loop, allocate 10 GB, write outside
    their folder or open a connection each fail with their reason within the time limit,
    nothing is written or reached, and the run completes with every row checked."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    port = server.getsockname()[1]
    target = tmp_path / "outside.txt"
    programs = [
        ("def f():\n    return 1\n", ("all tests passed",)),
        ("import os\nwhile True:\n    os.fork()\n", ("process creation refused",)),
        ("def f():\n    while True:\n        pass\n", ("timeout after 2s", "CPU time limit (2s)")),
        ("block = bytearray(10 * 1024 ** 3)\n", ("memory limit",)),
        (f"open({str(target)!r}, 'w').write('x')\n", ("write outside sandbox refused",)),
        (f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n",
         ("network refused",)),
    ]
    frame = pl.DataFrame({"prompt": [prompt("Write f.")] * len(programs),
                          "response": [code for code, _ in programs],
                          "tests": ["assert f() == 1"] * len(programs)})
    ws.write_dataset("progs", frame, "sft")
    _, out, detail = run(ws, "progs", [{"verify": {"checker": "code", "tests": "tests",
                                                   "timeout_s": 2}}])
    try:
        server.accept()[0].close()
        reached = True
    except BlockingIOError:
        reached = False
    finally:
        server.close()
    assert out["passed"].to_list() == [True] + [False] * (len(programs) - 1)
    for detail_text, (_, reasons) in zip(out["verify_detail"], programs, strict=True):
        assert any(reason in detail_text for reason in reasons), detail_text
    assert not target.exists() and not reached
    assert detail["report"]["checked"] == len(programs)


def test_config_and_column_errors_name_the_step_and_column(ws):
    with pytest.raises(PipelineError, match=r"step 1 \(verify\).*needs `tests: COLUMN`"):
        build_pipeline({"name": "v", "steps": [{"verify": {"checker": "code"}}]})
    with pytest.raises(PipelineError, match=r"step 1 \(verify\).*needs `answer: COLUMN`"):
        build_pipeline({"name": "v", "steps": [{"verify": {"checker": "math"}}]})
    ws.write_dataset("s", pl.DataFrame({"prompt": [prompt("1+1?")], "response": ["2"]}), "sft")
    with pytest.raises(PipelineError, match=r"step 1 \(verify\): answer: no column 'gold'"):
        run(ws, "s", [{"verify": {"checker": "math", "answer": "gold"}}])
    ws.write_dataset("i", pl.DataFrame({"prompt": [prompt("1+1?")], "gold": ["2"]}),
                     "instruction")
    with pytest.raises(PipelineError, match="consumes"):
        run(ws, "i", [{"verify": {"checker": "math", "answer": "gold"}}])


def test_a_killed_run_resumes_and_the_report_still_counts_every_batch(ws, tmp_path):
    """`workbench run` on a YAML, killed after its second batch: the re-run reuses the
    finished batches and its report counts all rows, as an uninterrupted run's does."""
    rows = gsm8k(40)
    frame = pl.DataFrame({"prompt": [prompt(r["question"]) for r in rows],
                          "response": [f"#### {final(r['answer']) + (i % 4 == 0)}"
                                       for i, r in enumerate(rows)],
                          "answer": [r["answer"] for r in rows]})
    ws.write_dataset("gsm", frame, "sft")
    path = tmp_path / "verify.yaml"
    path.write_text(yaml.safe_dump({
        "name": "verify_gsm", "input": "gsm", "batch_size": 10, "output": "checked",
        "steps": [{"verify": {"checker": "math", "answer": "answer"}}]}))
    killed = cli("run", str(path), workspace=ws.root,
                 env={"WORKBENCH_CRASH_AT": "checkpoint.batch_written#2"})
    assert killed.returncode != 0
    done = cli("run", str(path), workspace=ws.root)
    assert done.returncode == 0, done.stderr
    log = ws.step_logs(ws.runs()[0]["run_id"])[-1]
    assert log["status"] == "resumed"
    report = log["detail"]["report"]
    assert (report["checked"], report["passed"], report["failed"]) == (40, 30, 10)
    assert ws.read("checked")["passed"].sum() == 30


def test_format_checkers_explain_bad_rules_and_violations():
    from workbench.verifiers import CHECKERS

    regex, schema = CHECKERS["regex"], CHECKERS["json_schema"]
    assert regex("Hello world", "world").passed
    assert regex("Hello world", "world", match="fullmatch") == (
        False, "does not fully match /world/")
    assert regex("x", "[").detail.startswith("bad pattern '[':")
    assert schema('{"name": 3}', '{"properties": {"name": {"type": "string"}}}') == (
        False, "schema violation at $.name: 3 is not of type 'string'")
    assert schema("{}", '{"type": 5}').detail.startswith("bad schema:")
    assert schema('"a@b.org"', '{"format": "email"}').passed
    assert not schema('"nope"', '{"format": "email"}').passed
