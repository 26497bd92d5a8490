"""`short_to_long` (LongPO, docs/methods.md §6): reference constants and parsing, filters, records,
the loss's known value, an end-to-end run on a real novel with the embedded model, and garbage
model output dropped with counted reasons."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from conftest import DATA
from scripted_backend import FAIL, ScriptedBackend, install

from transforms.short_to_long import (
    PHRASES,
    QUERY_PROMPT,
    REFUSALS,
    meaningless,
    parse_questions,
    question_prompt,
    refusal,
    repeated_word_share,
)
from workbench.io.layouts_longpo import longpo_messages, longpo_records
from workbench.pipeline import build_pipeline
from workbench.runner import run_pipeline

ALICE = DATA / "documents" / "alice_ch1-2.txt"


def test_reference_constants():
    assert len(PHRASES) == len(set(PHRASES)) == 20
    assert all(p.endswith(",") for p in PHRASES)
    assert len(REFUSALS) == len(set(REFUSALS)) == 37
    assert "I don't cover " in REFUSALS and "My response capabilities don’t include this topic" \
        in REFUSALS  # trailing space and curly apostrophe, as in the reference
    prompt = question_prompt("CHUNK")
    assert prompt.startswith("Context:\nCHUNK\n\n\nBased on the content presented above, "
                             "generate 4 comprehensive English questions")
    assert prompt.endswith("format the 4 questions numerically from “1:” to “4:”.\n")
    assert "5. Ensure the question is clear and unambiguous." in prompt
    assert QUERY_PROMPT.format(n=6).count("6") == 3


@pytest.mark.parametrize(("text", "questions"), [
    ("1: What is A?\n2: Why B?\n3. How C?\n4 - Who D?", ["What is A?", "Why B?", "How C?",
                                                        "Who D?"]),
    ("**1.** What changed?**\n\n**2.** Why?!", ["What changed?", "Why?"]),  # *#.! trimmed
    ("Question 1: X\nQuestion 2: Y", ["X\nQuestion", "Y"]),  # the reference keeps "Question"
    ("1. One 2. Two", ["One", "Two"]),
    ("In 1865. Alice fell", ["Alice fell"]),  # any number with : . ! ? - starts an item
    ("No numbers at all.", []),
    ("1: \n2: Only this", ["2: Only this"]),  # an empty item swallows the next number
])
def test_questions_parse_as_the_reference_does(text: str, questions: list[str]):
    assert parse_questions(text) == questions


def reference_meaningless(response: str, threshold: float) -> bool:
    """postprocess_longpo_pair.py's is_meaningless_response, restated for the check."""
    words = re.sub(r"[^\w\s]", "", response.lower()).split()
    if not words:
        return True
    counts = Counter(words)
    ratio = sum(c for c in counts.values() if c > 1) / len(words)
    return ratio > threshold or len([w for w in words if len(w) >= 3]) < 2


TEXTS = ["", "!!! ...", "ok no", "the the the cat", "yes yes yes yes yes no",
         "Alice followed the White Rabbit down the hole.", "Ünïcode wörds, wörds: here!",
         "the the the the the the the the the the"]


def test_repetition_filter_matches_the_reference():
    frame = pl.DataFrame({"r": TEXTS})
    for threshold in (0.5, 0.9, 0.95):
        got = frame.select(meaningless("r", threshold))["r"].to_list()
        assert got == [reference_meaningless(t, threshold) for t in TEXTS]
    ratios = frame.select(repeated_word_share("r"))["r"].to_list()
    assert ratios[3] == 0.75 and math.isclose(ratios[4], 5 / 6) and ratios[5] == 2 / 8


def test_refusals_are_found_case_insensitively_in_either_response():
    frame = pl.DataFrame({"rejected": ["Fine answer.", "SORRY, I CAN'T do that", "x"],
                          "chosen": ["Also fine.", "ok", "As an AI assistant, no."]})
    assert frame.select(refusal("rejected", "chosen"))["rejected"].to_list() == [False, True,
                                                                                True]


def test_records_and_messages_have_the_reference_shape():
    pairs = pl.DataFrame({
        "context_id": ["c", "c", "d"], "turn": [1, 0, 0],
        "long_prompt": ["S0\n\n\nS1", "S0\n\n\nS1", "T0\n\n\nT1"],
        "short_prompt": ["S1", "S0", "T1"], "question": ["q1", "q0", "r0"],
        "chosen": ["w1", "w0", "x0"], "rejected": ["l1", "l0", "y0"]})
    records = longpo_records(pairs)
    first = records.row(0, named=True)
    assert first["prompt"] == "S0\n\n\nS1" and first["questions"] == ["q0", "q1"]
    assert first["short_prompts"] == ["S0", "S1"] and first["rejecteds"] == ["l0", "l1"]
    messages = longpo_messages(first)
    assert [m["content"] for m in messages["chosen"]] == ["S0\n\n\nS1\n\nq0", "w0", "q1", "w1"]
    assert [m["content"] for m in messages["rejected"]] == ["S0\n\n\nS1\n\nq0", "l0", "q1", "l1"]
    assert len(messages["ref_chosen"]) == len(messages["ref_rejected"]) == 2  # one per turn
    assert messages["ref_rejected"][1] == [{"role": "user", "content": "S1\n\nq1"},
                                           {"role": "assistant", "content": "l1"}]


def check_rows(rows: pl.DataFrame) -> None:
    """docs/methods.md §6.5's structural checks, plus what the rows were built from."""
    for row in rows.iter_rows(named=True):
        assert row["short_prompt"] in row["long_prompt"]
        assert any(row["question"].startswith(p + " ") for p in PHRASES)
        assert row["question"] == f"{row['phrase']} {row['raw_question']}"
        assert row["raw_question"] in row["questions"]
        assert row["prompt"] == [{"role": "user",
                                  "content": row["long_prompt"] + "\n\n" + row["question"]}]
        assert row["chosen_prompt"][0]["content"] == row["short_prompt"] + "\n\n" + row["question"]
        assert row["chosen"].strip() and row["rejected"].strip()
    for record in longpo_records(rows).iter_rows(named=True):
        turns = rows.filter(pl.col("context_id") == record["context_id"]).height
        messages = longpo_messages(record)
        assert len(messages["ref_chosen"]) == len(messages["ref_rejected"]) == turns


def pipeline(documents: list[str], model: dict, **options) -> dict:
    return {"name": "s2l", "seed": 0, "models": {"default": model},
            "steps": [{"short_to_long": {"documents": documents, **options}}], "output": "pairs"}


@pytest.mark.slow
def test_end_to_end_on_a_novel_with_the_embedded_model(ws):
    spec = build_pipeline(pipeline(
        [str(ALICE)], {"backend": "transformers", "model": "embedded"},
        chunk_tokens=40, min_chunk_tokens=16, context_tokens=100, max_contexts=1,
        min_questions=1, question_max_new_tokens=32, answer_max_new_tokens=16, batch_size=4))
    result = run_pipeline(spec, ws, progress=False)
    rows = ws.read("pairs")
    step = result.steps[0]
    assert rows.height >= 1 and rows.height + sum(step.dropped.values()) >= 2
    assert set(rows["context_id"]) == {rows["context_id"][0]}  # one long context
    assert rows["turn"].to_list() == sorted(rows["turn"].to_list())
    check_rows(rows)
    assert ws.resolve("pairs").kind == "preference"


def scripted_reply(prompt: list[dict[str, str]]) -> object:
    """Question prompts get 4 numbered questions (3 or none for some documents); answers are
    garbage of a kind named by a word in the document."""
    text = prompt[-1]["content"]
    if text.startswith("Context:\n"):
        if "noquestions" in text:
            return "I could not think of anything."
        if "three" in text:
            return "1: One?\n2: Two?\n3: Three?"
        return "1: What happens first?\n2: Who speaks?\n3: Where is it?\n4: Why does it end?"
    rejected = "\n\n\n" in text  # only the long context joins chunks with three newlines
    for word, chosen, long in (
            ("emptyrejected", "A fine and varied answer here.", ""),
            ("loop", "yes " * 30, "A fine and varied answer here."),
            ("refuses", "A fine and varied answer here.", "Sorry, I can't help with that."),
            ("broken", FAIL, FAIL)):
        if word in text:
            return long if rejected else chosen
    return ("The rejected answer saw everything, at length." if rejected
            else "The chosen answer saw the short chunk.")


def test_garbage_model_output_is_dropped_with_counted_reasons(tmp_path: Path, ws, monkeypatch):
    docs = tmp_path / "docs.jsonl"
    words = ["good", "noquestions", "three", "emptyrejected", "loop", "refuses", "broken"]
    with docs.open("w") as f:
        for word in words:  # each document: two paragraphs, two chunks, one long context
            text = (f"The {word} garden had roses and a fountain.\n\n"
                    f"Later the {word} visitors walked home slowly.")
            f.write(json.dumps({"text": text}) + "\n")
    backend = ScriptedBackend(scripted_reply, "s2l-garbage")
    spec = build_pipeline(pipeline([str(docs)], install(monkeypatch, backend), chunk_tokens=16,
                                   min_chunk_tokens=1, context_tokens=64, batch_size=2))
    result = run_pipeline(spec, ws, progress=False)
    step = result.steps[0]
    assert step.dropped == {
        "questions: exactly 4 did not parse": 4,  # noquestions and three
        "empty rejected response": 2,
        "meaningless chosen response (repetition > 0.9 or < 2 words of 3+ letters)": 2,
        "refusal phrase in a response": 2,
        "model call failed (quarantined)": 2,
    }
    rows = ws.read("pairs")
    assert rows.height == 2 and rows["short_prompt"].str.contains("good").all()
    check_rows(rows)
    assert step.detail["model_calls"]["failures"] == 4  # chosen and rejected of two turns
    relaxed = build_pipeline(pipeline([str(docs)], install(monkeypatch, backend),
                                      chunk_tokens=16, min_chunk_tokens=1, context_tokens=64,
                                      min_questions=3, turns=1))
    result = run_pipeline(relaxed, ws, progress=False)
    assert result.steps[0].dropped["questions: at least 3 did not parse"] == 2
    assert result.steps[0].dropped["not drawn (more than 1 turns in the context)"] == 6
    assert ws.read("pairs").height == 2  # good and three, one turn each


@pytest.mark.parametrize(("options", "message"), [
    ({"chunk_tokens": 64, "context_tokens": 64}, "context_tokens must be larger"),
    ({"min_chunk_tokens": 200}, "min_chunk_tokens is larger"),
    ({"min_questions": 5}, "min_questions is larger than num_questions"),
    ({"question_count": 4}, "question_count"),  # unknown options are errors
])
def test_inconsistent_options_are_refused_before_running(options: dict, message: str):
    from workbench.errors import PipelineError

    with pytest.raises(PipelineError, match=message):
        build_pipeline(pipeline(["x.txt"], {"backend": "transformers"}, **options))
