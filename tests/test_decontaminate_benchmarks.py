"""Every shipped benchmark loads with its full row count, and a training prompt that quotes one of
its rows verbatim is caught (under both tokenizers) while a clean prompt passes."""

from __future__ import annotations

import gzip
import json

import polars as pl
import pytest
from conftest import DATA

from transforms.decontaminate import SHIPPED, DecontaminateConfig, load_benchmarks
from workbench.registry import get
from workbench.transform import Context

# instances per benchmark (MT-Bench: two turns for each of 80 questions)
INSTANCES = {"mt_bench": 160, "gsm8k": 1319, "humaneval": 164, "ifeval": 541, "mmlu": 14042,
             "math": 5000, "bbh": 6511, "truthfulqa": 817}


def record(name: str, index: int) -> tuple[str, str]:
    """(text, item label) of one benchmark row, read straight from the shipped file."""
    file, field, id_field = SHIPPED[name]
    path = DATA / "benchmarks" / file
    opener = gzip.open if file.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        row = json.loads(f.readlines()[index])
    text = row[field][0] if isinstance(row[field], list) else row[field]
    item = str(row[id_field]) if id_field else str(index)
    return text, item + ("#turn1" if name == "mt_bench" else "")


def test_every_shipped_benchmark_loads_in_full():
    instances = load_benchmarks(DecontaminateConfig())
    counts = dict(instances.group_by("benchmark").len().iter_rows())
    assert counts == INSTANCES
    assert instances["text"].null_count() == 0
    assert instances.filter(pl.col("text").str.strip_chars() == "").height == 0
    assert instances.select(pl.struct("benchmark", "item").is_unique().all()).item()


@pytest.mark.parametrize("tokenizer", ["words", "spacy_like"])
def test_a_verbatim_row_of_each_benchmark_is_caught_and_a_clean_row_passes(tokenizer: str):
    names = list(SHIPPED)
    # row 7 of each (row 300 of BBH: its first rows are Boolean expressions under 8 tokens,
    # which match only as a whole prompt)
    quoted = [record(name, 300 if name == "bbh" else 7) for name in names]
    prompts = [f"Please help me with this one.\n\n{text}\n\nThanks!" for text, _ in quoted]
    clean = ("Write a short poem about autumn leaves falling in a quiet park, and explain "
             "which images you chose and why they suit the season.")
    frame = pl.DataFrame({
        "id": [*names, "clean"],
        "prompt": [[{"role": "user", "content": p}] for p in [*prompts, clean]],
    })
    ctx = Context()
    out = get("decontaminate")({"tokenizer": tokenizer})(frame.lazy(), ctx).collect()
    by_id = {r["id"]: r for r in out.iter_rows(named=True)}
    for name, (_, item) in zip(names, quoted, strict=True):
        assert by_id[name]["contaminated_by"] == f"{name}:{item}", name
        assert by_id[name]["overlap"] == 1.0
    assert by_id["clean"]["contaminated_by"] is None and by_id["clean"]["overlap"] < 0.5
    report = ctx.notes["report"]
    assert report["tokenizer"] == tokenizer and report["contaminated_rows"] == len(names)
    assert {k: v["rows_hit"] for k, v in report["benchmarks"].items()} == dict.fromkeys(names, 1)


def test_tokenizer_choice_changes_what_counts_as_the_same_text(tmp_path):
    """`words` ignores punctuation; `spacy_like` counts it, so a dropped `?` or hyphen changes
    a short instance's exact match and a long one's n-grams."""
    bench = tmp_path / "b.jsonl"
    long_q = "Don't you think the U.S. economy grew faster in 1990-1999 than in 2000-2009?"
    bench.write_text(json.dumps({"id": "short", "question": "What is 2 + 2?"}) + "\n"
                     + json.dumps({"id": "long", "question": long_q}) + "\n")
    frame = pl.DataFrame({"prompt": ["What is 2 + 2", "what is 2+2?",
                                     "Dont you think the US economy grew faster in 1990 1999 "
                                     "than in 2000 2009"]})
    runs = {}
    for tokenizer in ("words", "spacy_like"):
        out = get("decontaminate")({"shipped": [], "benchmarks": [str(bench)], "action": "flag",
                                    "tokenizer": tokenizer})(frame.lazy(), Context()).collect()
        runs[tokenizer] = out
    # words: `what is 2 2` thrice; the long question is 17 tokens (don t you think the u s
    # economy ... 2009), of which `economy` .. `2009` (10) lie in shared 8-grams
    assert runs["words"]["contaminated_by"].to_list() == ["b:short", "b:short", "b:long"]
    assert runs["words"]["overlap"][2] == pytest.approx(10 / 17)
    # spacy_like: `?` is a token and `2+2` splits like `2 + 2`; the long question is 20
    # tokens (do n't ... u.s. ... 1990 - 1999 ... 2009 ?) and shares no 8-gram with the row
    assert runs["spacy_like"]["contaminated_by"].to_list() == [None, "b:short", None]
    assert runs["spacy_like"]["overlap"].to_list() == [0.0, 1.0, 0.0]
