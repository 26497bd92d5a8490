"""Reasoning traces: splitting `<think>` blocks off answers, and the columns that hold them."""

from __future__ import annotations

import polars as pl
import pytest
from conftest import ROOT, cli

from workbench.algorithms.reasoning import join, split_columns, split_texts

CASES = [  # text, trace, answer
    ("<think>\nlet me see\n</think>\n\nFour.", "let me see", "Four."),
    ("  \n<think>2+2 is</think>4", "2+2 is", "4"),
    ("<think>cut off while thinking", "cut off while thinking", ""),
    ("R1 starts inside the block</think>\n\nAnswer.", "R1 starts inside the block", "Answer."),
    ("<think>\n\n</think>\n\nThinking was off.", None, "Thinking was off."),
    ("<think>a</think>b <think>c</think> d", "a", "b <think>c</think> d"),
    ("Wrap it in <think> and </think> tags.", None, "Wrap it in <think> and </think> tags."),
    ("plain answer  \n", None, "plain answer  \n"),
    ("", None, ""),
    (None, None, None),
]


@pytest.mark.parametrize(("text", "trace", "answer"), CASES)
def test_split_recognises_the_documented_shapes(text, trace, answer):
    traces, answers = split_texts([text])
    assert (traces[0], answers[0]) == (trace, answer)


def test_join_puts_the_trace_back_in_r1_layout_and_splits_again():
    traces, answers = split_texts([t for t, _, _ in CASES])
    joined = pl.DataFrame({"r": traces, "a": answers}, schema={"r": pl.String, "a": pl.String}
                          ).select(join(pl.col("r"), pl.col("a")).alias("j"))["j"].to_list()
    assert joined[0] == "<think>\nlet me see\n</think>\n\nFour."
    assert joined[7] == "plain answer  \n"  # no trace: the answer alone, untouched
    assert split_texts(joined) == (traces, answers)


def test_split_columns_per_kind_and_only_when_there_are_traces():
    plain = pl.DataFrame({"response": ["a", "b"]})
    assert split_columns(plain, "sft").equals(plain)  # nothing to split: no new column
    sft = split_columns(pl.DataFrame({"response": ["<think>t</think>a", "b"]}), "sft")
    assert sft.to_dict(as_series=False) == {"response": ["a", "b"], "reasoning": ["t", None]}

    empty_blocks = split_columns(pl.DataFrame({"response": ["<think></think>\n\na"]}), "sft")
    assert empty_blocks.to_dict(as_series=False) == {"response": ["a"]}

    cands = split_columns(pl.DataFrame({"responses": [["<think>x</think>X", "Y"], [], None]}),
                          "candidates")
    assert cands["responses"].to_list() == [["X", "Y"], [], None]
    assert cands["reasoning"].to_list() == [["x", None], [], None]

    pairs = pl.DataFrame({"chosen": ["<think>c</think>C", "D"], "rejected": ["R", "S"]})
    out = split_columns(pairs, "preference", {"rejected": pl.Series(["field", None])})
    assert out.to_dict(as_series=False) == {
        "chosen": ["C", "D"], "rejected": ["R", "S"],
        "chosen_reasoning": ["c", None], "rejected_reasoning": ["field", None]}


def test_a_given_trace_wins_and_the_block_still_leaves_the_answer():
    frame = pl.DataFrame({"response": ["<think>inline</think>A", "<think>inline</think>B"],
                          "reasoning": ["given", None]})
    out = split_columns(frame, "sft")
    assert out["response"].to_list() == ["A", "B"]
    assert out["reasoning"].to_list() == ["given", "inline"]


# -- import -----------------------------------------------------------------------------------

def write_jsonl(path, rows: list[dict]):
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


Q = [{"role": "user", "content": "What is 2+2?"}]


def test_import_finds_sft_traces_in_fields_and_text(ws, tmp_path):
    from workbench.io.importer import import_path

    messages = write_jsonl(tmp_path / "messages.jsonl", [
        {"messages": [*Q, {"role": "assistant", "content": "4", "reasoning_content": "2+2=4"}]},
        {"messages": [*Q, {"role": "assistant", "content": "<think>inline</think>\n\nFour"}]},
        {"messages": [*Q, {"role": "assistant", "content": "four"}]},
    ])
    version = import_path(ws, messages, "m")
    rows = ws.read("m")
    assert version.lineage["import"]["layout"] == "messages"
    assert rows["response"].to_list() == ["4", "Four", "four"]
    assert rows["reasoning"].to_list() == ["2+2=4", "inline", None]
    assert all(m.keys() == {"role", "content"} for m in rows["prompt"][0])

    top = write_jsonl(tmp_path / "top.jsonl", [
        {"prompt": "What is 2+2?", "response": "4", "reasoning_content": "add"},
        {"prompt": "What is 3+3?", "response": "R1 style</think>\n\n6", "reasoning_content": None},
    ])
    import_path(ws, top, "t")
    rows = ws.read("t")
    assert rows["response"].to_list() == ["4", "6"]
    assert rows["reasoning"].to_list() == ["add", "R1 style"]
    assert "reasoning_content" not in rows.columns  # moved, not copied


def test_import_splits_pairs_and_candidates_and_ids_hash_the_answer(ws, tmp_path):
    from workbench.io.importer import import_path

    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "What is 2+2?", "chosen": "<think>2 and 2</think>4", "rejected": "5"},
        {"prompt": "What is 2+2?", "chosen": "<think>other trace</think>4", "rejected": "5"},
    ])
    import_path(ws, pairs, "p")
    rows = ws.read("p")
    assert rows["chosen"].to_list() == ["4", "4"]
    assert rows["chosen_reasoning"].to_list() == ["2 and 2", "other trace"]
    assert rows["rejected_reasoning"].to_list() == [None, None]
    base = rows["id"][0]
    assert rows["id"].to_list() == [base, f"{base}-1"]  # same answer, same content

    conv = write_jsonl(tmp_path / "conv.jsonl", [
        {"chosen": [*Q, {"role": "assistant", "content": "4", "reasoning": "count"}],
         "rejected": [*Q, {"role": "assistant", "content": "<think>hm</think>5",
                           "reasoning": None}]}])
    import_path(ws, conv, "c")
    row = ws.read("c").row(0, named=True)
    assert (row["chosen"], row["chosen_reasoning"]) == ("4", "count")
    assert (row["rejected"], row["rejected_reasoning"]) == ("5", "hm")

    cands = write_jsonl(tmp_path / "cands.jsonl", [
        {"prompt": "What is 2+2?", "responses": ["<think>a</think>4", "5"]}])
    import_path(ws, cands, "k")
    row = ws.read("k").row(0, named=True)
    assert (row["responses"], row["reasoning"]) == (["4", "5"], ["a", None])


def test_import_without_traces_adds_no_column_and_refuses_a_non_text_trace(ws, tmp_path):
    from workbench.errors import InputError
    from workbench.io.importer import import_path

    plain = write_jsonl(tmp_path / "plain.jsonl", [{"prompt": "Hi", "response": "Hello"}])
    import_path(ws, plain, "plain")
    assert ws.read("plain").columns == ["id", "prompt", "response"]
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"prompt": "Hi", "response": "Hello",
                                                "reasoning": {"steps": 3}}])
    with pytest.raises(InputError, match="column 'reasoning' has type .*trace must be text"):
        import_path(ws, odd, "odd")


# -- generation -------------------------------------------------------------------------------

def thinking_reply(prompt) -> str:
    """A scripted reasoning model: the trace names the question, the answer follows."""
    if not prompt or not isinstance(prompt[0], dict):  # magpie's raw pre-query template
        return "What is 5+5?"
    question = prompt[-1]["content"]
    if "unfinished" in question:
        return "<think>I keep thinking and never answer"
    if "plain" in question:
        return "Just an answer."
    return f"<think>\nThe user asks: {question}\n</think>\n\nThe answer to '{question}'."


def run_steps(ws, monkeypatch, steps, rows=None, name="gen"):
    from scripted_backend import ScriptedBackend, install

    from workbench.pipeline import build_pipeline
    from workbench.runner import run_pipeline

    spec_input = {}
    if rows is not None:
        source = ws.root.parent / f"{name}.jsonl"
        write_jsonl(source, rows)
        spec_input = {"input": str(source)}
    model = install(monkeypatch, ScriptedBackend(thinking_reply, "thinking"))
    spec = build_pipeline({"name": name, **spec_input, "output": name,
                           "models": {"default": model}, "steps": steps})
    return run_pipeline(spec, ws, progress=False), ws.read(name)


def test_generate_keeps_traces_apart_and_drops_a_reply_that_never_answers(ws, monkeypatch):
    rows = [{"prompt": "What is 2+2?"}, {"prompt": "plain question"},
            {"prompt": "an unfinished thought"}]
    result, out = run_steps(ws, monkeypatch, [{"generate": {}}], rows)
    assert result.steps[0].dropped == {"generate: empty output": 1}
    by_prompt = {r["prompt"][0]["content"]: r for r in out.iter_rows(named=True)}
    assert by_prompt["What is 2+2?"]["response"] == "The answer to 'What is 2+2?'."
    assert by_prompt["What is 2+2?"]["reasoning"] == "The user asks: What is 2+2?"
    assert by_prompt["plain question"]["reasoning"] is None
    assert not out["response"].str.contains("think>").any()


def test_sample_responses_keeps_a_trace_list_parallel_to_responses(ws, monkeypatch):
    _, out = run_steps(ws, monkeypatch, [{"sample_responses": {"n": 3}}],
                       [{"prompt": "What is 3+3?"}, {"prompt": "plain question"}])
    row = {r["prompt"][0]["content"]: r for r in out.iter_rows(named=True)}
    assert row["What is 3+3?"]["responses"] == ["The answer to 'What is 3+3?'."] * 3
    assert row["What is 3+3?"]["reasoning"] == ["The user asks: What is 3+3?"] * 3
    assert row["plain question"]["reasoning"] == [None] * 3


def test_magpie_answers_keep_their_trace_apart(ws, monkeypatch):
    _, out = run_steps(ws, monkeypatch, [{"magpie": {"n": 2, "template": "llama3",
                                                     "responses": True}}], name="mag")
    assert out.height == 2
    assert out["response"].to_list() == ["The answer to 'What is 5+5?'."] * 2
    assert out["reasoning"].to_list() == ["The user asks: What is 5+5?"] * 2


class ReasoningServer:
    """A small OpenAI-compatible chat server that answers the way DeepSeek's API and vLLM's
    reasoning parsers do: the trace in `message.reasoning_content`, the answer in `content`."""

    def __init__(self) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        served = self.requests = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                served.append(self.path)
                question = body["messages"][-1]["content"]
                message = {"role": "assistant", "content": f"Answer to {question}"}
                if "plain" not in question:
                    message["reasoning_content"] = f"Thinking about {question}"
                payload = json.dumps({"choices": [{"message": message, "finish_reason": "stop"}],
                                      "usage": {"prompt_tokens": 5, "completion_tokens": 3}})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload.encode())

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ReasoningServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"


def test_openai_backend_keeps_a_servers_reasoning_content_through_the_cache(ws, tmp_path):
    from workbench.pipeline import build_pipeline
    from workbench.runner import run_pipeline

    source = write_jsonl(tmp_path / "q.jsonl", [{"prompt": "2+2?"}, {"prompt": "plain 3+3?"}])
    with ReasoningServer() as server:
        spec = build_pipeline({
            "name": "remote", "input": str(source), "output": "answers",
            "models": {"default": {"backend": "openai", "model": "reasoner",
                                   "options": {"base_url": server.url, "max_retries": 0}}},
            "steps": [{"generate": {"max_new_tokens": 8}}]})
        run_pipeline(spec, ws, progress=False)
        first = ws.read("answers")
        assert server.requests == ["/v1/chat/completions"] * 2
        again = run_pipeline(spec, ws, progress=False, fresh=True)  # calls come from the cache
        assert len(server.requests) == 2
    assert again.steps[0].detail["model_calls"]["hits"] == 2
    assert first.sort("response")["response"].to_list() == ["Answer to 2+2?", "Answer to plain 3+3?"]
    assert first.sort("response")["reasoning"].to_list() == ["Thinking about 2+2?", None]
    assert ws.read("answers").sort("response")["reasoning"].to_list() == ["Thinking about 2+2?",
                                                                          None]


# -- consumers --------------------------------------------------------------------------------

def judge_reply(prompt) -> str:
    """A JSON judge that gives 5 when it sees a trace and 2 otherwise, so which text it was
    shown is visible in the scores."""
    import json

    text = prompt[-1]["content"]
    return json.dumps({"rationale": "seen", "score": 5 if "<think>" in text else 2})


def judged(ws, monkeypatch, tmp_path, rows, include: bool, name: str):
    from scripted_backend import ScriptedBackend, install

    from workbench.pipeline import build_pipeline
    from workbench.runner import run_pipeline

    backend = ScriptedBackend(judge_reply, "judge")
    model = install(monkeypatch, backend)
    source = write_jsonl(tmp_path / f"{name}.jsonl", rows)
    spec = build_pipeline({"name": name, "input": str(source), "output": name,
                           "models": {"default": model},
                           "steps": [{"judge": {"method": "llm_json",
                                                "include_reasoning": include}}]})
    run_pipeline(spec, ws, progress=False)
    return ws.read(name), [p[-1]["content"] for p in backend.prompts]


def test_judge_sees_the_answer_unless_asked_to_include_the_trace(ws, monkeypatch, tmp_path):
    cands = [{"prompt": "What is 2+2?", "responses": ["<think>2 and 2</think>4", "5"]}]
    out, shown = judged(ws, monkeypatch, tmp_path, cands, False, "answers_only")
    assert out["scores"].to_list() == [[2.0, 2.0]]
    assert not any("2 and 2" in s for s in shown)
    out, shown = judged(ws, monkeypatch, tmp_path, cands, True, "with_traces")
    assert out["scores"].to_list() == [[5.0, 2.0]]  # the trace shown with its own answer only
    assert any("<think>\n2 and 2\n</think>\n\n4" in s for s in shown)

    pair = [{"prompt": "What is 2+2?", "chosen": "4", "rejected": "<think>guess</think>5"}]
    out, _ = judged(ws, monkeypatch, tmp_path, pair, True, "pair")
    assert (out["chosen_score"][0], out["rejected_score"][0]) == (2.0, 5.0)


def run_plain(ws, tmp_path, rows, steps, name):
    from workbench.pipeline import build_pipeline
    from workbench.runner import run_pipeline

    source = write_jsonl(tmp_path / f"{name}.jsonl", rows)
    result = run_pipeline(build_pipeline({"name": name, "input": str(source), "output": name,
                                          "steps": steps}), ws, progress=False)
    return result, ws.read(name)


SCORED = [{"prompt": "What is 2+2?", "scores": [1.0, 3.0, 2.0],
           "responses": ["<think>t-five</think>5", "<think>t-four</think>4", "four"]}]


@pytest.mark.parametrize("method", [{"method": "best_worst"}, {"method": "all_pairs",
                                                                 "anchor": "any"}])
def test_pairs_carry_each_sides_trace(ws, tmp_path, method):
    _, out = run_plain(ws, tmp_path, SCORED, [{"pairs": method}], "paired")
    traces = {"5": "t-five", "4": "t-four", "four": None}
    assert out.height == (1 if method["method"] == "best_worst" else 3)
    for row in out.iter_rows(named=True):
        assert row["chosen_reasoning"] == traces[row["chosen"]]
        assert row["rejected_reasoning"] == traces[row["rejected"]]
    assert out.row(0, named=True)["chosen"] == "4"


def test_spin_pairs_carry_the_response_trace(ws, tmp_path):
    rows = [{"prompt": "What is 2+2?", "response": "<think>sum</think>4", "generated": "5"}]
    _, out = run_plain(ws, tmp_path, rows, [{"pairs": {"method": "sft_vs_generated"}}], "spin")
    row = out.row(0, named=True)
    assert (row["chosen"], row["chosen_reasoning"], row["rejected_reasoning"]) == ("4", "sum", None)


def test_dedup_compares_answers_unless_the_trace_column_is_named(ws, tmp_path):
    rows = [{"prompt": "What is 2+2?", "response": f"<think>{t}</think>4"} for t in ("a", "b")]
    _, answers = run_plain(ws, tmp_path, rows,
                           [{"dedup_exact": {"columns": ["prompt", "response"]}}], "d1")
    assert answers.height == 1
    _, both = run_plain(ws, tmp_path, rows,
                        [{"dedup_exact": {"columns": ["prompt", "response", "reasoning"]}}], "d2")
    assert both.height == 2


def test_length_bias_reports_answer_and_reasoning_lengths_apart():
    from workbench.algorithms.length_bias import report

    prompts = [[{"role": "user", "content": f"q{i}"}] for i in range(6)]
    pairs = pl.DataFrame({
        "prompt": prompts,
        "chosen": ["ok"] * 6,  # short answers that win...
        "rejected": ["a much longer answer"] * 6,
        "chosen_reasoning": ["x" * 100, "x" * 90, "x" * 80, None, "x" * 120, "x" * 60],
        "rejected_reasoning": [None] * 6})  # ...after long thinking
    answer = report(pairs, bootstrap=50)
    assert answer["measured"] == "answer"
    assert answer["answer_length"] == {"chosen_mean": 2.0, "rejected_mean": 20.0}
    assert answer["share_chosen_longer"] == 0.0 and answer["coef"] < 0
    trace = answer["reasoning_length"]
    assert trace["pairs_with_trace"] == 5
    assert trace["chosen_mean"] == pytest.approx(75.0) and trace["rejected_mean"] == 0.0
    assert trace["share_chosen_longer"] == pytest.approx(5 / 6) and trace["coef"] > 0
    both = report(pairs, bootstrap=50, include_reasoning=True)
    assert both["measured"] == "answer and reasoning" and both["coef"] > 0
    assert "reasoning_length" not in report(pairs.drop("chosen_reasoning", "rejected_reasoning"),
                                            bootstrap=0)


# -- export -----------------------------------------------------------------------------------

def read_jsonl(path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines()]


TRACED_PAIRS = [
    {"prompt": "What is 2+2?", "chosen": "<think>2 and 2 make 4</think>\n\n4",
     "rejected": "<think>maybe 5</think>\n\n5"},
    {"prompt": "What is 3+3?", "chosen": "6", "rejected": "7"},
]


def test_export_keep_strip_inline_for_pairs_sft_and_kto(ws, tmp_path):
    from workbench.io.export import export_dataset
    from workbench.io.importer import import_path

    import_path(ws, write_jsonl(tmp_path / "p.jsonl", TRACED_PAIRS), "p")
    results = {mode: export_dataset(ws, "p", tmp_path / mode, fmt="jsonl", trl="standard",
                                    reasoning=mode) for mode in ("keep", "strip", "inline")}
    keep, strip, inline = (read_jsonl(tmp_path / m / "train.jsonl") for m in results)
    assert [r["chosen"] for r in keep] == ["4", "6"]
    assert [r["chosen_reasoning"] for r in keep] == ["2 and 2 make 4", None]
    assert [r["rejected_reasoning"] for r in keep] == ["maybe 5", None]
    assert all(set(r) == {"prompt", "chosen", "rejected"} for r in strip)
    assert "think>" not in (tmp_path / "strip" / "train.jsonl").read_text()
    assert [r["chosen"] for r in inline] == ["<think>\n2 and 2 make 4\n</think>\n\n4", "6"]
    assert all("chosen_reasoning" not in r for r in inline)
    assert {m: r["reasoning_rows"] for m, r in results.items()} == dict.fromkeys(results, 1)
    cards = {m: (tmp_path / m / "README.md").read_text() for m in results}
    assert "1 rows have a reasoning trace; exported with `--reasoning keep`" in cards["keep"]
    assert "`chosen_reasoning`, `rejected_reasoning`" in cards["keep"]
    assert "`--reasoning strip`, stripped" in cards["strip"]
    assert "`--reasoning inline`, inline" in cards["inline"]

    export_dataset(ws, "p", tmp_path / "kto", fmt="jsonl", trl="kto")
    kto = read_jsonl(tmp_path / "kto" / "train.jsonl")
    assert [(r["label"], r["reasoning"]) for r in kto][:2] == [(True, "2 and 2 make 4"),
                                                               (False, "maybe 5")]

    sft = [{"prompt": "Hi", "response": "<think>greet back</think>Hello"}]
    import_path(ws, write_jsonl(tmp_path / "s.jsonl", sft), "s")
    export_dataset(ws, "s", tmp_path / "s_conv", fmt="jsonl")
    row = read_jsonl(tmp_path / "s_conv" / "train.jsonl")[0]
    assert row["completion"] == [{"role": "assistant", "content": "Hello"}]
    assert row["reasoning"] == "greet back"


def test_export_refuses_an_unknown_mode_and_strips_blocks_left_in_text(ws, tmp_path):
    from workbench.errors import WorkbenchError
    from workbench.io.export import export_dataset

    # written directly, as an older version or a sql step could have: the block is in the text
    ws.write_dataset("raw", pl.DataFrame({
        "prompt": [[{"role": "user", "content": "Hi"}]], "chosen": ["<think>t</think>A"],
        "rejected": ["B"]}), "preference")
    with pytest.raises(WorkbenchError, match="unknown --reasoning 'hide'"):
        export_dataset(ws, "raw", tmp_path / "x", fmt="jsonl", reasoning="hide")
    export_dataset(ws, "raw", tmp_path / "s", fmt="jsonl", reasoning="strip")
    assert read_jsonl(tmp_path / "s" / "train.jsonl")[0]["chosen"] == [
        {"role": "assistant", "content": "A"}]


def test_export_page_offers_the_reasoning_modes(ws, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from workbench.io.importer import import_path

    import_path(ws, write_jsonl(tmp_path / "p.jsonl", TRACED_PAIRS), "p")
    monkeypatch.setenv("WORKBENCH_HOME", str(ws.root))
    monkeypatch.chdir(tmp_path)
    app = AppTest.from_file(str(ROOT / "ui" / "pages" / "7_Export.py"), default_timeout=60).run()
    app.selectbox(key="export_out_name").set_value("p").run()
    app.selectbox(key="exp_format").set_value("jsonl")
    app.selectbox(key="exp_reasoning").set_value("inline")
    app.text_input(key="exp_out").input("inlined")
    next(b for b in app.button if b.label == "Export").click().run()
    assert not app.exception and not app.error
    rows = read_jsonl(ws.root / "exports" / "inlined" / "train.jsonl")
    assert rows[0]["chosen"][0]["content"].startswith("<think>\n2 and 2 make 4\n</think>")


# -- acceptance 5: import -> judge -> pairs -> export, length bias apart ------------------------

QUESTIONS = ["What is 2+2?", "Name a primary colour.", "What is the capital of France?"]
ANSWERS = [["4", "5", "22"], ["Red.", "Purple.", "Blue is one."], ["Paris.", "Lyon.", "Rome."]]


@pytest.mark.slow
def test_traces_round_trip_import_judge_pairs_export(ws, tmp_path):
    import datasets

    from workbench.pipeline import build_pipeline
    from workbench.runner import run_pipeline

    traced = [{"prompt": q, "responses": [f"<think>\n{'Let me think. ' * (2 + 3 * j)}About "
                                          f"{q}\n</think>\n\n{a}" if j < 2 else a
                                          for j, a in enumerate(answers)]}
              for q, answers in zip(QUESTIONS, ANSWERS, strict=True)]
    plain = [{"prompt": q, "responses": answers} for q, answers in zip(QUESTIONS, ANSWERS,
                                                                         strict=True)]
    source = write_jsonl(tmp_path / "traced.jsonl", traced)
    imported = cli("import", str(source), "--name", "traced", workspace=ws.root)
    assert imported.returncode == 0, imported.stderr
    rows = ws.read("traced")
    assert rows["responses"].to_list() == ANSWERS
    assert rows["reasoning"].list.get(0).str.starts_with("Let me think.").all()
    assert rows["reasoning"].list.get(2).is_null().all()

    def pipeline(name: str, source: str) -> dict:
        return {"name": name, "input": source, "output": name,
                "models": {"default": {"backend": "transformers", "model": "embedded"}},
                "steps": [{"judge": {"method": "expected_score", "batch_size": 9}},
                          {"pairs": {"method": "best_worst"}},
                          {"length_bias": {"bootstrap": 50}}]}

    result = run_pipeline(build_pipeline(pipeline("prefs", "traced")), ws, progress=False)
    judged = result.steps[0].detail["model_calls"]
    assert judged["computed"] == 9
    # the judge saw the answers only: the same answers without traces are all cache hits
    write_jsonl(tmp_path / "plain.jsonl", plain)
    again = run_pipeline(build_pipeline(pipeline("plain", str(tmp_path / "plain.jsonl"))), ws,
                         progress=False)
    calls = again.steps[0].detail["model_calls"]
    assert (calls["computed"], calls["hits"]) == (0, 9)

    prefs = ws.read("prefs")
    trace_of = {a: t for resp, tr in zip(rows["responses"], rows["reasoning"], strict=True)
                for a, t in zip(resp, tr, strict=True)}
    for row in prefs.iter_rows(named=True):
        assert row["chosen_reasoning"] == trace_of[row["chosen"]]
        assert row["rejected_reasoning"] == trace_of[row["rejected"]]
    bias = result.steps[2].detail["report"]
    assert bias["measured"] == "answer"
    assert bias["answer_length"]["chosen_mean"] == pytest.approx(
        prefs["chosen"].str.len_chars().mean())
    assert bias["reasoning_length"]["chosen_mean"] == pytest.approx(
        prefs["chosen_reasoning"].str.len_chars().fill_null(0).mean())
    assert bias["reasoning_length"]["pairs_with_trace"] == prefs.select(
        pl.col("chosen_reasoning").is_not_null() | pl.col("rejected_reasoning").is_not_null()
    ).to_series().sum()

    strip = cli("export", "prefs", "--out", str(tmp_path / "strip"), "--format", "jsonl",
                "--reasoning", "strip", workspace=ws.root)
    keep = cli("export", "prefs", "--out", str(tmp_path / "keep"), "--reasoning", "keep",
               workspace=ws.root)
    assert strip.returncode == 0 and keep.returncode == 0, strip.stderr + keep.stderr
    stripped = read_jsonl(tmp_path / "strip" / "train.jsonl")
    assert len(stripped) == prefs.height
    assert "think" not in (tmp_path / "strip" / "train.jsonl").read_text()
    assert not any("reasoning" in column for r in stripped for column in r)
    kept = datasets.load_from_disk(str(tmp_path / "keep"))["train"]
    assert {"chosen_reasoning", "rejected_reasoning"} <= set(kept.column_names)
    assert kept["chosen_reasoning"] == prefs["chosen_reasoning"].to_list()
    assert [c[0]["content"] for c in kept["chosen"]] == prefs["chosen"].to_list()
    assert "Length bias" in (tmp_path / "keep" / "README.md").read_text()
    assert "Reasoning traces, apart" in (tmp_path / "keep" / "README.md").read_text()
    assert "--reasoning keep" in (tmp_path / "keep" / "README.md").read_text()
    assert "--reasoning strip" in (tmp_path / "strip" / "README.md").read_text()


def test_a_label_that_swaps_a_pair_swaps_its_traces(ws, tmp_path):
    from workbench.io.export import export_dataset
    from workbench.io.importer import import_path
    from workbench.labeling import labels

    import_path(ws, write_jsonl(tmp_path / "p.jsonl", TRACED_PAIRS[:1]), "p")
    row = ws.read("p")["id"][0]
    labels.label(ws, "p", row, "ann", "b", True)  # B, the rejected side, is better
    export_dataset(ws, "p", tmp_path / "labelled", fmt="jsonl", trl="standard", labels=True)
    out = read_jsonl(tmp_path / "labelled" / "train.jsonl")[0]
    assert (out["chosen"], out["chosen_reasoning"]) == ("5", "maybe 5")
    assert (out["rejected"], out["rejected_reasoning"]) == ("4", "2 and 2 make 4")
