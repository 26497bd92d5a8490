"""Reasoning traces: splitting `<think>` blocks off answers, and the columns that hold them."""

from __future__ import annotations

import polars as pl
import pytest

from workbench.reasoning import join, split_columns, split_texts

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
