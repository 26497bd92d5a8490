"""Agreement statistics against published, hand-checkable values."""

from __future__ import annotations

import math

import polars as pl
import pytest

from workbench.labeling import agreement


def long(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=["item", "rater", "value"], orient="row")


def test_cohen_kappa_textbook_example():
    # Wikipedia's example: 50 proposals; both yes 20, A yes B no 5, A no B yes 10, both no 15.
    # p_o = 35/50 = 0.7; p_yes = 0.5 * 0.6, p_no = 0.5 * 0.4 -> p_e = 0.5; kappa = 0.4.
    a = ["y"] * 25 + ["n"] * 25
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert agreement.cohen_kappa(a, b) == pytest.approx(0.4)


def test_cohen_kappa_small_hand_computed():
    # 4 items: agree on 3 (p_o = 3/4); A says x,x,y,y; B says x,y,y,y.
    # p_e = (2/4)(1/4) + (2/4)(3/4) = 1/2; kappa = (3/4 - 1/2) / (1/2) = 0.5.
    assert agreement.cohen_kappa("xxyy", "xyyy") == pytest.approx(0.5)
    assert agreement.cohen_kappa("xx", "xx") != agreement.cohen_kappa("xx", "xx")  # NaN
    with pytest.raises(ValueError):
        agreement.cohen_kappa("xy", "x")


def test_fleiss_kappa_wikipedia_example():
    # 10 subjects, 14 raters each, 5 categories: P-bar = 0.378, P_e = 0.213, kappa = 0.210.
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0],
             [2, 2, 8, 1, 1], [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2],
             [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    rows = []
    for item, counts in enumerate(table):
        rater = 0
        for category, n in enumerate(counts):
            for _ in range(n):
                rows.append((item, f"r{rater}", category))
                rater += 1
    assert agreement.fleiss_kappa(long(rows)) == pytest.approx(0.20993, abs=1e-5)


KRIPPENDORFF_2011 = {  # Krippendorff (2011), "Computing Krippendorff's alpha-reliability":
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],  # 4 observers, 12 units, nominal
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],        # alpha = 0.743 (unit 12 has one
    "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],     # value: not pairable)
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
}


def test_krippendorff_alpha_published_example_with_missing_values():
    rows = [(unit, rater, value) for rater, values in KRIPPENDORFF_2011.items()
            for unit, value in enumerate(values) if value is not None]
    assert agreement.krippendorff_alpha(long(rows)) == pytest.approx(0.743, abs=5e-4)


def test_pairwise_kappa_uses_only_shared_items():
    rows = [(unit, rater, value) for rater, values in KRIPPENDORFF_2011.items()
            for unit, value in enumerate(values) if value is not None]
    table = agreement.pairwise_kappa(long(rows))
    ab = table.filter((pl.col("rater_1") == "A") & (pl.col("rater_2") == "B")).row(0, named=True)
    # A and B share units 1-9 and agree on 8 (not unit 6): p_o = 8/9. A: 1 x3, 2 x3, 3 x2,
    # 4 x1; B: 1 x2, 2 x4, 3 x2, 4 x1 -> p_e = (6 + 12 + 4 + 1) / 81 = 23/81.
    assert ab["items"] == 9
    assert ab["kappa"] == pytest.approx((8 / 9 - 23 / 81) / (1 - 23 / 81))
    assert table.height == 6


def test_judge_agreement_and_ranking_pairs():
    people = pl.DataFrame({"row_id": ["r1", "r2", "r3", "r1", "r2", "r3"],
                           "annotator": ["ann"] * 3 + ["bob"] * 3,
                           "decision": ["chosen", "rejected", "chosen",
                                        "chosen", "chosen", "chosen"]})
    judge = pl.DataFrame({"row_id": ["r1", "r2", "r3"],
                          "decision": ["chosen", "rejected", "rejected"]})
    table = agreement.judge_agreement(people, judge)
    ann = table.filter(pl.col("annotator") == "ann").row(0, named=True)
    # ann: c r c vs judge c r r: p_o = 2/3; ann c=2 r=1, judge c=1 r=2: p_e = (2 + 2)/9.
    assert ann["agreement"] == pytest.approx(2 / 3)
    assert ann["kappa"] == pytest.approx((2 / 3 - 4 / 9) / (1 - 4 / 9))
    assert table["annotator"].to_list() == ["ann", "bob"]

    ranks = pl.DataFrame({"row_id": ["x", "x"], "annotator": ["ann", "bob"],
                          "ranks": [[1, 2, 2], [2, 1, None]]})
    pairs = agreement.ranking_pairs(ranks).sort("rater", "item")
    assert pairs.rows() == [("x:0:1", "ann", "first"), ("x:0:2", "ann", "first"),
                            ("x:1:2", "ann", "tie"), ("x:0:1", "bob", "second")]


def test_undefined_statistics_are_nan():
    same = long([(1, "a", "x"), (1, "b", "x"), (2, "a", "x"), (2, "b", "x")])
    assert math.isnan(agreement.fleiss_kappa(same))
    assert math.isnan(agreement.krippendorff_alpha(same))
    assert math.isnan(agreement.krippendorff_alpha(long([(1, "a", "x")])))
    assert agreement.summary(same)["items_with_2_or_more"] == 2


def test_report_on_rankings_of_candidates_with_the_judge(ws):
    from workbench.labeling import labels

    prompt = [{"role": "user", "content": "Name a colour."}]
    ws.write_dataset("cands", pl.DataFrame({
        "prompt": [prompt, prompt], "responses": [["red", "blue", "green"], ["a", "b", "c"]],
        "scores": [[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]]}), "candidates")
    ids = ws.read("cands")["id"].to_list()
    labels.rank(ws, "cands", ids[0], "ann", [1, 2, 3], [0, 1, 2])  # as the judge
    labels.rank(ws, "cands", ids[0], "bob", [1, 3, 2], [2, 1, 0])  # swaps 1 and 2
    labels.rank(ws, "cands", ids[1], "ann", [3, 2, 1], [0, 1, 2])  # as the judge
    labels.rank(ws, "cands", ids[1], "bob", [1, 1, None], [0, 1, 2])
    report = agreement.report(ws, "cands")
    # ann and bob share pairs: row 0 (0,1) (0,2) (1,2) and row 1 (0,1): ann first, first,
    # first, second; bob first, first, second, tie -> they agree on 2 of 4.
    pair = report["pairwise"].row(0, named=True)
    assert (pair["rater_1"], pair["rater_2"], pair["items"]) == ("ann", "bob", 4)
    assert pair["agreement"] == pytest.approx(0.5)
    judge = report["judge"].sort("annotator")
    assert judge["agreement"].to_list() == pytest.approx([1.0, 0.5])  # bob: 2 of 4 pairs
    assert judge["items"].to_list() == [6, 4]
