"""Reading raw documents and chunking them (`workbench.algorithms.documents`), on hand-made and real files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest
from conftest import DATA

from workbench.algorithms.documents import (
    chunk_documents,
    document_files,
    pack,
    read_documents,
    split_paragraphs,
    split_sentences,
    split_words,
    token_counter,
)
from workbench.errors import InputError

ALICE = DATA / "documents" / "alice_ch1-2.txt"
WAR = DATA / "documents" / "war_of_the_worlds_ch1-2.jsonl"


def test_text_markdown_and_jsonl_files_become_documents(tmp_path: Path):
    (tmp_path / "a.txt").write_bytes("\ufeffFirst line.\r\nSecond line.".encode())
    (tmp_path / "b.md").write_text("# Title\n\nBody text.", encoding="utf-8")
    (tmp_path / "c.jsonl").write_text(
        json.dumps({"body": "one"}) + "\n\n" + json.dumps({"body": "two"}) + "\n")
    (tmp_path / "notes.csv").write_text("x,y\n")  # not a document: a folder skips it
    docs = read_documents([tmp_path], text_field="body")
    assert docs.columns == ["doc_id", "source", "doc_index", "text"]
    assert docs["text"].to_list() == ["First line.\nSecond line.", "# Title\n\nBody text.",
                                      "one", "two"]  # no BOM, no CR
    assert docs["doc_index"].to_list() == [0, 0, 1, 3]  # JSONL: the line number
    assert docs["doc_id"].n_unique() == 4
    assert read_documents(str(tmp_path / "*.md"))["text"].to_list() == ["# Title\n\nBody text."]


def test_relative_paths_resolve_against_a_base_folder(tmp_path: Path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "x.txt").write_text("Hello there.")
    assert document_files(["docs/x.txt"], base_dir=tmp_path) == [tmp_path / "docs" / "x.txt"]
    assert document_files("docs", base_dir=tmp_path) == [tmp_path / "docs" / "x.txt"]


def test_identical_documents_keep_distinct_ids(tmp_path: Path):
    (tmp_path / "d.jsonl").write_text('{"text": "same"}\n{"text": "same"}\n{"text": "  "}\n')
    docs = read_documents(tmp_path / "d.jsonl")
    assert docs.height == 2  # the blank document is left out
    first, second = docs["doc_id"].to_list()
    assert second == f"{first}-1"


@pytest.mark.parametrize(("files", "message"), [
    ({"bad.txt": b"ok\n\xff\xfe"}, r"bad\.txt, line 2: invalid UTF-8 at byte offset 3"),
    ({"d.jsonl": b'{"text": "a"}\n{"text": \n'}, r"d\.jsonl, line 2: invalid JSON"),
    ({"d.jsonl": b'{"body": "a"}\n'}, r"d\.jsonl: no field 'text' .*fields: body"),
    ({"d.jsonl": b'{"text": "a"}\n{"text": null}\n'}, r"d\.jsonl, line 2: field 'text' is "
                                                       r"missing or null"),
    ({"d.jsonl": b'{"text": 3}\n'}, r"d\.jsonl: field 'text' holds Int64, not text"),
    ({"d.pdf": b"%PDF"}, r"d\.pdf: not a document file"),
])
def test_unreadable_documents_are_errors_naming_the_file(tmp_path: Path, files: dict,
                                                         message: str):
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(InputError, match=message):
        read_documents([tmp_path / name for name in files])


def test_sources_that_match_nothing_are_errors(tmp_path: Path):
    with pytest.raises(InputError, match="no such document file or folder"):
        read_documents(tmp_path / "missing.txt")
    with pytest.raises(InputError, match="matches no document files"):
        read_documents(str(tmp_path / "*.txt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="matches no document files"):
        read_documents(tmp_path / "empty")


def test_paragraphs_follow_the_reference_split():
    text = "One.\n\nTwo\nlines.\n\n\n\n  Three.  \n\n \n\nFour."
    expected = [p.strip() for p in re.split(r"\n\n+", text) if p.strip()]  # generate_qa.py
    assert split_paragraphs(text) == expected == ["One.", "Two\nlines.", "Three.", "Four."]


def test_sentences_and_words():
    text = "'Curiouser!' cried Alice. She was so much surprised... \"Oh dear!\" Then (quietly) on"
    # a heuristic: it also cuts after a quoted exclamation; chunks join the pieces again
    assert split_sentences(text) == ["'Curiouser!'", "cried Alice.",
                                     "She was so much surprised...", '"Oh dear!"',
                                     "Then (quietly) on"]
    assert split_words("a b c d e", 2) == ["a b c", "d e"]


def test_packing_is_the_reference_greedy_packing():
    # add while the sum fits; an overflow closes the chunk; short or over-long chunks are lost
    assert pack([3, 3, 3, 10, 1, 1], max_tokens=6, min_tokens=2) == [(0, 2), (2, 3), (4, 6)]
    assert pack([7, 1, 1, 7, 1], max_tokens=6, min_tokens=1) == [(1, 3), (4, 5)]
    assert pack([2, 2, 2], max_tokens=6) == [(0, 3)]
    assert pack([1, 1, 5], max_tokens=6, min_tokens=3) == [(2, 3)]
    assert pack([1, 1], max_tokens=6, min_tokens=3) == []
    assert pack([], max_tokens=6) == []


def test_a_text_without_paragraph_breaks_is_chunked_by_sentences():
    text = " ".join(f"Sentence number {i} is here." for i in range(40))  # one line, ~200 tokens
    docs = pl.DataFrame({"doc_id": ["d"], "source": ["s"], "doc_index": [0], "text": [text]})
    count = token_counter(chars_per_token=4.0)
    chunks = chunk_documents(docs, max_tokens=30, count=count)
    assert chunks.height > 5 and (chunks["tokens"] <= 30).all()
    assert " ".join(chunks["text"]).split() == text.split()  # nothing lost, order kept
    assert chunks["chunk_index"].to_list() == list(range(chunks.height))
    # a sentence longer than the budget becomes runs of words
    long = pl.DataFrame({"doc_id": ["d"], "source": ["s"], "doc_index": [0],
                         "text": [" ".join(["word"] * 100)]})
    pieces = chunk_documents(long, max_tokens=10, count=count)
    assert (pieces["tokens"] <= 10).all() and " ".join(pieces["text"]).split() == ["word"] * 100


def test_minimum_chunk_length_drops_short_chunks():
    docs = pl.DataFrame({"doc_id": ["d"], "source": ["s"], "doc_index": [0],
                         "text": ["A long first paragraph with many words in it.\n\nTiny."]})
    chunks = chunk_documents(docs, max_tokens=13, min_tokens=5,
                             count=token_counter(chars_per_token=4.0))
    assert chunks["text"].to_list() == ["A long first paragraph with many words in it."]


def test_real_novel_chunks_with_the_embedded_tokenizer():
    from transformers import AutoTokenizer

    from workbench.models.transformers_backend import resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("embedded"))
    count = token_counter(tokenizer)
    assert count(pl.Series(["Alice was beginning to get very tired"])).to_list() == [
        len(tokenizer("Alice was beginning to get very tired", add_special_tokens=False)
            ["input_ids"])]
    docs = read_documents([ALICE, WAR])
    assert docs.height == 3 and docs["text"].str.strip_chars().str.contains("\n").not_().all()  # one-line e-texts
    chunks = chunk_documents(docs, max_tokens=128, min_tokens=32, count=count)
    assert chunks["doc_id"].n_unique() == 3
    assert chunks["tokens"].max() <= 128 and chunks["tokens"].min() >= 32
    texts = dict(zip(docs["doc_id"], docs["text"], strict=True))
    for doc_id, chunk in zip(chunks["doc_id"], chunks["text"], strict=True):
        # whitespace aside, each chunk is a run of the document's own text
        assert " ".join(chunk.split()) in " ".join(texts[doc_id].split())
