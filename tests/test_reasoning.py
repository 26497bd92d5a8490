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
