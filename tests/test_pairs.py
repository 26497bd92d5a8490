"""Pairs from scored candidates: the Magpie-DPO reference on its real example file, ties,
Curry-DPO ranks, margins, and SPIN pairs; no row ever has chosen == rejected."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from workbench.io.importer import load
from workbench.registry import get
from workbench.transform import DROP, Context

MAGPIE_DPO = "magpie/data_po/example_instructions_5res_armorm.json"
USER = [{"role": "user", "content": "q"}]


def apply(frame: pl.DataFrame, **config) -> pl.DataFrame:
    return get("pairs")(config)(frame.lazy(), Context()).collect()


def kept(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.filter(pl.col(DROP).is_null())


def candidates(responses: list[list[str]], scores: list[list[float | None]]) -> pl.DataFrame:
    return pl.DataFrame({"id": [f"r{i}" for i in range(len(responses))],
                         "prompt": [USER] * len(responses), "responses": responses,
                         "scores": scores})


def test_best_worst_reproduces_magpie_dpo_on_its_example_file(shared: Path):
    path = shared / MAGPIE_DPO
    frame, kind, _ = load(path)
    assert kind == "candidates"
    out = apply(frame, method="best_worst")
    raw = json.loads(path.read_text())
    for row, source in zip(out.iter_rows(named=True), raw, strict=True):
        scores = [r["score"] for r in source["rewards_armorm"]]
        best, worst = scores.index(max(scores)), scores.index(min(scores))  # the reference
        assert row["chosen"] == source["responses"][best]
        assert row["rejected"] == source["responses"][worst]
        assert row["chosen_index"] == best and row["rejected_index"] == worst
        assert row["margin"] == pytest.approx(max(scores) - min(scores))
    assert kept(out).height == 5 and (kept(out)["chosen"] != kept(out)["rejected"]).all()


def test_ties_take_the_first_index_and_all_equal_rows_give_no_pair():
    out = apply(candidates([["a", "b", "c", "d"], ["x", "y"], ["same", "same"], ["p", "q"]],
                           [[1.0, 3.0, 3.0, 1.0], [2.0, 2.0], [1.0, 2.0], [None, 0.5]]),
                method="best_worst")
    rows = out.to_dicts()
    assert (rows[0]["chosen"], rows[0]["rejected"]) == ("b", "a")  # first max, first min
    assert rows[1][DROP] == "all scores equal: a tie is not a preference"
    assert rows[2][DROP] == "chosen equals rejected"
    assert rows[3][DROP] == "all scores equal: a tie is not a preference"  # one scored reply
    assert kept(out).height == 1


def test_all_pairs_anchor_best_is_curry_dpo_with_ranks_by_margin():
    frame = candidates([["r1", "r2", "r3", "r4"]], [[4.0, 1.0, 3.0, 2.0]])
    out = kept(apply(frame, method="all_pairs"))
    assert out.select("chosen", "rejected", "pair_rank").rows() == [
        ("r1", "r2", 1), ("r1", "r4", 2), ("r1", "r3", 3)]  # easiest (largest margin) first
    every = kept(apply(frame, method="all_pairs", anchor="any"))
    assert every.height == 6 and (every["chosen_score"] > every["rejected_score"]).all()
    wide = kept(apply(frame, method="all_pairs", anchor="any", min_margin=2.0))
    assert set(wide.select("chosen", "rejected").rows()) == {("r1", "r2"), ("r1", "r4"), ("r3", "r2")}


def test_all_pairs_never_pairs_ties_or_identical_text():
    frame = candidates([["a", "b", "a", "c"], ["x", "y"]], [[2.0, 2.0, 1.0, 2.0], [5.0, 5.0]])
    out = apply(frame, method="all_pairs", anchor="any")
    good = kept(out)
    assert set(good.select("chosen", "rejected").rows()) == {("b", "a"), ("c", "a")}
    assert "chosen equals rejected" in set(out[DROP].drop_nulls())
    assert "no two responses with different scores" in set(out[DROP].drop_nulls())
    assert (good["chosen"] != good["rejected"]).all()


def test_sft_vs_generated_is_spin():
    frame = pl.DataFrame({"id": ["a", "b", "c"], "prompt": [USER] * 3,
                          "response": ["human says", "same", "human"],
                          "generated": ["model says", " same ", None]})
    out = apply(frame, method="sft_vs_generated")
    assert out.select("chosen", "rejected").row(0) == ("human says", "model says")
    assert out[DROP].to_list() == [None, "chosen equals rejected", "no generated answer"]


def verified(responses: list[list[str]], passed: list[list[bool | None]]) -> pl.DataFrame:
    return pl.DataFrame({"id": [f"v{i}" for i in range(len(responses))],
                         "prompt": [USER] * len(responses), "responses": responses,
                         "passed": passed,
                         "verify_detail": [[f"d{j}" for j in range(len(r))] for r in responses]})


def test_verified_pairs_a_passing_with_a_failing_response_and_says_why_rows_give_none():
    frame = verified([["4", "four, I think", "5", "it is 3"], ["4", "4."], ["5", "6"], ["x"]],
                     [[True, True, False, False], [True, True], [False, False], [None]])
    out = apply(frame, method="verified")
    good = kept(out)
    assert good.select("chosen", "rejected", "chosen_index", "rejected_index").rows() == [
        ("4", "it is 3", 0, 3)]  # shortest passing, longest failing
    row = good.row(0, named=True)
    assert row["chosen_passed"] is True and row["rejected_passed"] is False
    assert row["pair_method"] == "verified" and row["pass_rate"] == 0.5
    assert (row["chosen_verify_detail"], row["rejected_verify_detail"]) == ("d0", "d3")
    assert out.filter(pl.col(DROP).is_not_null()).select("id", DROP).rows() == [
        ("v1", "no response failed"), ("v2", "no response passed"), ("v3", "no verified responses")]


def test_verified_pairs_per_prompt_never_pair_two_passing_or_two_failing():
    frame = verified([["a", "bb", "ccc", "dddd", "eeeee"]], [[True, False, True, False, False]])
    out = kept(apply(frame, method="verified", pairs_per_prompt=10))
    assert out.height == 6  # 2 passing x 3 failing, fewer than asked
    assert out["chosen"].is_in(["a", "ccc"]).all() and out["rejected"].is_in(
        ["bb", "dddd", "eeeee"]).all()
    assert out["pair_number"].to_list() == [1, 2, 3, 4, 5, 6]
    assert out.select("chosen", "rejected").rows()[:3] == [
        ("a", "eeeee"), ("a", "dddd"), ("ccc", "eeeee")]  # best-ranked sides first
    first = kept(apply(frame, method="verified", pairs_per_prompt=2, prefer="first"))
    assert first.select("chosen", "rejected").rows() == [("a", "bb"), ("a", "dddd")]


def test_verified_pairs_carry_each_side_s_reasoning_trace():
    frame = verified([["4", "5"]], [[True, False]]).with_columns(
        pl.Series("reasoning", [["two and two", "two and three"]]))
    row = kept(apply(frame, method="verified")).row(0, named=True)
    assert (row["chosen_reasoning"], row["rejected_reasoning"]) == ("two and two", "two and three")


def test_verified_pairs_rank_by_the_answer_unless_the_trace_is_included():
    """Two passing answers: "4" thought long, "It is 4." thought briefly; one failing."""
    frame = verified([["4", "It is 4.", "5"]], [[True, True, False]]).with_columns(
        pl.Series("reasoning", [["two and two, carry nothing, check twice: four", "2+2", "hm"]]))
    by_answer = kept(apply(frame, method="verified")).row(0, named=True)
    assert (by_answer["chosen"], by_answer["chosen_reasoning"]) == (
        "4", "two and two, carry nothing, check twice: four")
    whole = kept(apply(frame, method="verified", include_reasoning=True)).row(0, named=True)
    assert (whole["chosen"], whole["chosen_reasoning"]) == ("It is 4.", "2+2")
    # the same answer with another trace is another response only when traces count
    twice = verified([["4", "4", "5"]], [[True, True, False]]).with_columns(
        pl.Series("reasoning", [["long thought here", "short", "x"]]))
    assert kept(apply(twice, method="verified", pairs_per_prompt=5)).height == 1
    assert kept(apply(twice, method="verified", pairs_per_prompt=5,
                      include_reasoning=True)).height == 2


def test_verified_needs_a_passed_column():
    with pytest.raises(ValueError, match="run verify first"):
        apply(candidates([["a", "b"]], [[1.0, 2.0]]), method="verified")
