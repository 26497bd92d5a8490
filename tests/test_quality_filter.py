"""quality_filter: each check drops with its own reason, in a fixed order, on real rows."""

from __future__ import annotations

import polars as pl
import pytest
from conftest import DATA

from transforms.quality_filter import repeated_ngram_shares
from workbench.io.importer import load
from workbench.registry import get
from workbench.transform import DROP, Context


def apply(frame: pl.DataFrame, **config) -> pl.DataFrame:
    return get("quality_filter")(config)(frame.lazy(), Context()).collect()


def sft(prompt: str, response: str, finish: str = "stop", rid: str = "x") -> dict:
    return {"id": rid, "prompt": [{"role": "user", "content": prompt}], "response": response,
            "finish_reason": finish}


@pytest.mark.slow
def test_each_check_names_its_reason():
    frame = pl.DataFrame([
        sft("Explain why the sky is blue.", "Sunlight scatters off air molecules, and blue "
            "light scatters most, so the sky looks blue.", rid="good"),
        sft("Explain tides.", "   ", rid="empty"),
        sft("Explain tides.", "The Moon pulls the oceans toward it and", "length", "cut"),
        sft("Translate the following sentence:", "Sure, which sentence?", rid="colon"),
        sft("Explique pourquoi le ciel est bleu, s'il te plaît.", "La lumière du soleil est "
            "diffusée par les molécules de l'air, surtout la lumière bleue.", rid="french"),
        sft("Say something.", "Hi.", rid="short"),
        sft("Write about cats.", "the cat sat on the mat " * 6, rid="loop"),
        sft("How do I pick a lock?", "I'm sorry, but I can't help with that request.",
            rid="refusal"),
    ])
    out = apply(frame, colon_ending=True, languages=["en"], language_accuracy="low",
                min_chars=10, max_repetition=0.3, refusals=True)
    assert dict(zip(out["id"], out[DROP], strict=True)) == {
        "good": None,
        "empty": "empty response",
        "cut": "truncated (finish_reason length)",
        "colon": "instruction ends with ':'",
        "french": "language not in EN",
        "short": "response shorter than 10 chars",
        "loop": "response repetition above 0.3",
        "refusal": "response is a refusal",
    }
    assert out.columns == [*frame.columns, DROP]  # no helper column is left behind
    # by default only empty and truncated texts go
    assert apply(frame)[DROP].drop_nulls().to_list() == ["empty response",
                                                         "truncated (finish_reason length)"]


def test_preference_rows_check_both_answers_and_tokens():
    hh = load(DATA / "hh_rlhf_harmless_test_600.jsonl.gz")[0]
    out = apply(hh, min_tokens=5, max_tokens=150)
    words = {c: hh[c].str.count_matches(r"\S+") for c in ("chosen", "rejected")}
    short = (words["chosen"] < 5) | (words["rejected"] < 5)
    long = (words["chosen"] > 150) | (words["rejected"] > 150)
    empty = (hh["chosen"].str.strip_chars() == "") | (hh["rejected"].str.strip_chars() == "")
    assert out[DROP].is_not_null().to_list() == (short | long | empty).to_list()
    reasons = set(out[DROP].drop_nulls())
    assert reasons <= {"chosen under 5 tokens", "rejected under 5 tokens", "chosen over 150 tokens",
                       "rejected over 150 tokens", "empty chosen", "empty rejected"}
    assert {"chosen under 5 tokens", "rejected over 150 tokens"} <= reasons


def test_repeated_ngram_shares():
    ratios = repeated_ngram_shares(pl.Series(["a b c d e f", "a b c a b c a b c", "", "x y"]), 3)
    assert ratios.tolist() == [0.0, 4 / 7, 0.0, 0.0]
