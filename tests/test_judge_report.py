"""The judge report (`workbench report judge`): hand-computed values on a synthetic frame with
flips and ties, the references (labels under a policy, gold, chosen) through a workspace and
the CLI, and clear errors for missing judge columns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import DATA, cli

from workbench.errors import WorkbenchError
from workbench.labeling import labels
from workbench.labeling.judge_report import parse_bins, report, workspace_report
from workbench.workspace import Workspace

KEYS = ["n", "accuracy", "kappa", "flip_rate", "length_preference", "by_margin", "by_subset"]
PROMPT = [{"role": "user", "content": "q"}]

# id, p_chosen, position_flip, chosen, rejected, source, reference decision
ROWS = [
    ("r1", 0.9, False, "aaaa", "b", "x", "chosen"),
    ("r2", 0.7, True, "a", "bbbb", "x", "rejected"),
    ("r3", 0.4, True, "aaaa", "b", "x", "rejected"),
    ("r4", 0.5, True, "aa", "bb", "y", "chosen"),     # judge tie (p = 0.5)
    ("r5", 0.2, False, "a", "bbbb", "y", "tie"),       # reference tie
    ("r6", 0.55, False, "aaaa", "b", "y", "chosen"),
    ("r7", None, None, "aaaa", "b", "y", "chosen"),    # not judged
    ("r8", 0.8, False, "aa", "bb", "x", "chosen"),     # equal lengths
    ("r9", 0.9, False, "aaaa", "b", "x", None),        # no reference
]


def synthetic() -> tuple[pl.DataFrame, pl.DataFrame]:
    frame = pl.DataFrame([r[:6] for r in ROWS], orient="row", schema={
        "id": pl.String, "p_chosen": pl.Float64, "position_flip": pl.Boolean,
        "chosen": pl.String, "rejected": pl.String, "source": pl.String})
    reference = pl.DataFrame({"row_id": [r[0] for r in ROWS if r[6]],
                              "decision": [r[6] for r in ROWS if r[6]]})
    return frame, reference


def test_hand_computed_report_with_flips_ties_and_subsets():
    frame, reference = synthetic()
    got = report(frame, reference, bins=[0.15, 0.25])
    assert list(got) == KEYS
    # compared: r1-r6 and r8 (r7 has no margin, r9 no reference)
    assert got["n"] == 7
    # both decided: r1 ok, r2 wrong, r3 ok, r6 ok, r8 ok (r4 judge tie, r5 reference tie)
    assert got["accuracy"] == pytest.approx(4 / 5)
    # judge c,c,r,tie,r,c,c vs reference c,r,r,c,tie,c,c: p_o = 4/7, both have chosen 4,
    # rejected 2, tie 1: p_e = 21/49, kappa = (4/7 - 3/7) / (4/7) = 0.25
    assert got["kappa"] == pytest.approx(0.25)
    assert got["flip_rate"] == pytest.approx(3 / 7)
    # decided and of unequal length: r1, r2, r3, r6; the longer side is c, r, c, c
    assert got["length_preference"] == {"judge": pytest.approx(0.5),
                                        "reference": pytest.approx(0.75)}
    assert got["by_margin"] == [
        {"low": 0.0, "high": 0.15, "n": 3, "decided": 2, "accuracy": 1.0},   # r4 r6 r3
        {"low": 0.15, "high": 0.25, "n": 1, "decided": 1, "accuracy": 0.0},  # r2
        {"low": 0.25, "high": None, "n": 3, "decided": 2, "accuracy": 1.0},  # r1 r5 r8
    ]
    x, y = got["by_subset"]["x"], got["by_subset"]["y"]
    assert list(got["by_subset"]) == ["x", "y"]
    assert (x["n"], x["accuracy"], x["flip_rate"]) == (4, 0.75, 0.5)
    assert x["kappa"] == pytest.approx(0.5)  # p_o 3/4, p_e (3*2 + 1*2)/16
    assert (y["n"], y["accuracy"]) == (3, 1.0)
    assert y["kappa"] == pytest.approx(0.0) and y["flip_rate"] == pytest.approx(1 / 3)
    assert [b["n"] for b in y["by_margin"]] == [2, 0, 1]  # the overall bins


def test_scores_judge_has_no_flip_rate_and_equal_scores_are_undecided():
    rng = np.random.default_rng(0)
    n = 40
    chosen_score = rng.integers(1, 6, n).astype(float)
    rejected_score = rng.integers(1, 6, n).astype(float)
    frame = pl.DataFrame({"id": [f"r{i}" for i in range(n)], "chosen": ["long reply"] * n,
                          "rejected": ["short"] * n, "chosen_score": chosen_score,
                          "rejected_score": rejected_score})
    reference = pl.DataFrame({"row_id": frame["id"], "decision": ["chosen"] * n})
    got = report(frame, reference, bins=4)
    margin = chosen_score - rejected_score
    decided = margin != 0
    assert got["n"] == n and got["flip_rate"] is None and got["by_subset"] is None
    assert got["accuracy"] == pytest.approx(float((margin[decided] > 0).mean()))
    assert got["kappa"] == 0.0  # a constant reference: kappa is 0 by construction
    assert got["length_preference"]["reference"] == 1.0
    cuts = sorted({float(c) for c in np.quantile(np.abs(margin), [0.25, 0.5, 0.75]) if c > 0})
    assert [b["high"] for b in got["by_margin"]] == [*cuts, None]
    assert sum(b["n"] for b in got["by_margin"]) == n
    assert sum(b["decided"] for b in got["by_margin"]) == int(decided.sum())
    # a margin column of its own, and the pairwise judge where the scores are absent
    col = report(frame.with_columns(pl.Series("rm", margin)), reference, judge="rm", bins=1)
    assert col["accuracy"] == got["accuracy"] and len(col["by_margin"]) == 1


def test_missing_judge_columns_are_clear_errors():
    frame, reference = synthetic()
    with pytest.raises(WorkbenchError, match="judge 'scores' needs column.*chosen_score"):
        report(frame, reference, judge="scores")
    with pytest.raises(WorkbenchError, match="no judge columns"):
        report(frame.drop("p_chosen"), reference)
    with pytest.raises(WorkbenchError, match="'source' is String, not a numeric margin"):
        report(frame, reference, judge="source")
    with pytest.raises(WorkbenchError, match="--bins"):
        parse_bins("five")
    assert parse_bins("5") == 5 and parse_bins("0.1,0.2") == [0.1, 0.2]


@pytest.fixture
def judged(ws: Workspace) -> tuple[Workspace, pl.DataFrame]:
    frame, _ = synthetic()
    rows = frame.with_columns(pl.lit(PROMPT).alias("prompt"),
                              (pl.col("chosen") + pl.col("id")).alias("chosen")).drop("id")
    ws.write_dataset("judged", rows, "preference")
    return ws, ws.read("judged")


def test_labels_under_a_policy_give_sklearns_kappa(judged):
    from sklearn.metrics import cohen_kappa_score

    ws, frame = judged
    ids = frame["id"].to_list()
    ann = ["a", "b", "b", "a", "tie", "a", "a", "a"]    # as A = chosen: r1..r8
    bob = ["a", "a", "b", "b", "tie", "a", "a", "both_bad"]
    for row, x, y in zip(ids, ann, bob, strict=False):
        labels.label(ws, "judged", row, "ann", x, True)
        labels.label(ws, "judged", row, "bob", y, False)  # bob saw chosen as B
    got = workspace_report(ws, "judged", "labels", "annotator:ann")
    verdict = ["chosen" if p > 0.5 else "rejected" if p < 0.5 else "tie"
               for p in frame["p_chosen"].fill_null(0.5).to_list()]
    decision = {"a": "chosen", "b": "rejected", "tie": "tie"}
    judged_rows = [i for i, p in enumerate(frame["p_chosen"].to_list()) if p is not None][:7]
    ours = [verdict[i] for i in judged_rows]
    theirs = [decision[ann[i]] for i in judged_rows]
    assert got["n"] == 7
    assert got["kappa"] == pytest.approx(cohen_kappa_score(ours, theirs))
    # majority of ann and bob (bob saw the sides swapped): they agree on r2, r4 and r5 only
    flip = {"a": "rejected", "b": "chosen", "tie": "tie", "both_bad": "both_bad"}
    agree = [i for i in judged_rows if decision[ann[i]] == flip[bob[i]]]
    majority = workspace_report(ws, "judged", "labels")
    assert majority["n"] == len(agree) == 3
    assert majority["kappa"] == pytest.approx(cohen_kappa_score(
        [verdict[i] for i in agree], [decision[ann[i]] for i in agree]))


def test_cli_json_has_exactly_the_keys_and_gold_and_chosen_references(judged):
    ws, frame = judged
    labels.set_gold(ws, "judged", frame["id"][1], "rejected")
    labels.set_gold(ws, "judged", frame["id"][2], "chosen")
    out = cli("report", "judge", "judged", "--against", "gold", "--json", workspace=ws.root)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert list(got) == KEYS
    assert (got["n"], got["accuracy"], got["flip_rate"]) == (2, 0.0, 1.0)  # r2, r3 both wrong
    out = cli("report", "judge", "judged", "--against", "chosen", "--bins", "0.15,0.25",
              workspace=ws.root)
    assert out.returncode == 0, out.stderr
    assert "8 pairs compared" in out.stdout and "[0.25, inf)" in out.stdout
    assert "  x against chosen: 5 pairs compared" in out.stdout  # by subset
    for args, message in ((["--against", "labels"], "no labels yet"),
                          (["--against", "people"], "--against must be one of"),
                          (["--against", "chosen", "--judge", "scores"], "chosen_score")):
        out = cli("report", "judge", "judged", *args, workspace=ws.root)
        assert out.returncode == 1 and message in out.stderr, out.stderr


def test_report_is_refused_for_kinds_without_pairs(ws: Workspace, tmp_path: Path):
    ws.write_dataset("sft", pl.DataFrame({"prompt": [PROMPT], "response": ["r"]}), "sft")
    with pytest.raises(WorkbenchError, match="reads preference pairs; sft@1 is sft"):
        workspace_report(ws, "sft", "chosen")


# -- on the embedded model (slow) -----------------------------------------------------------
def _independent(frame: pl.DataFrame, reference: dict[str, str], subset: str | None = None,
                 cuts: list[float] | None = None) -> dict:
    """The report's figures written out plainly from the dataset's columns, row by row."""
    rows = [r for r in frame.iter_rows(named=True)
            if r["p_chosen"] is not None and r["id"] in reference]
    verdicts = ["chosen" if r["p_chosen"] > 0.5 else "rejected" if r["p_chosen"] < 0.5
                else "tie" for r in rows]
    refs = [reference[r["id"]] for r in rows]
    both = [i for i in range(len(rows)) if verdicts[i] in ("chosen", "rejected")
            and refs[i] in ("chosen", "rejected")]
    sizes = [abs(r["p_chosen"] - 0.5) for r in rows]
    if cuts is None:
        cuts = sorted({float(c) for c in np.quantile(sizes, [0.2, 0.4, 0.6, 0.8]) if c > 0})

    def longer(r: dict) -> str | None:
        a, b = len(r["chosen"]), len(r["rejected"])
        return "chosen" if a > b else "rejected" if b > a else None

    lengthy = [i for i in both if longer(rows[i]) is not None]
    bins = []
    for low, high in zip([0.0, *cuts], [*cuts, None], strict=True):
        inside = [i for i, s in enumerate(sizes) if s >= low and (high is None or s < high)]
        hits = [i for i in inside if i in both]
        bins.append({"n": len(inside), "decided": len(hits),
                     "accuracy": (sum(verdicts[i] == refs[i] for i in hits) / len(hits))
                     if hits else None})
    out = {
        "n": len(rows),
        "accuracy": sum(verdicts[i] == refs[i] for i in both) / len(both) if both else None,
        "verdicts": verdicts, "refs": refs,
        "flip_rate": sum(r["position_flip"] for r in rows) / len(rows),
        "judge_longer": (sum(verdicts[i] == longer(rows[i]) for i in lengthy) / len(lengthy)
                         if lengthy else None),
        "reference_longer": (sum(refs[i] == longer(rows[i]) for i in lengthy) / len(lengthy)
                             if lengthy else None),
        "bins": bins, "cuts": cuts}
    if subset:
        values = sorted({str(r[subset]) for r in rows})
        out["by_subset"] = {v: _independent(frame.filter(pl.col(subset).cast(pl.String) == v),
                                            reference, cuts=cuts) for v in values}
    return out


def _assert_same(got: dict, want: dict) -> None:
    from sklearn.metrics import cohen_kappa_score

    assert got["n"] == want["n"]
    assert got["accuracy"] == pytest.approx(want["accuracy"])
    kappa = cohen_kappa_score(want["verdicts"], want["refs"])  # nan where undefined: null
    assert got["kappa"] == (None if np.isnan(kappa) else pytest.approx(kappa))
    assert got["flip_rate"] == pytest.approx(want["flip_rate"])
    assert got["length_preference"] == {"judge": pytest.approx(want["judge_longer"]),
                                        "reference": pytest.approx(want["reference_longer"])}
    assert [b["high"] for b in got["by_margin"]] == pytest.approx([*want["cuts"], None])
    for mine, theirs in zip(got["by_margin"], want["bins"], strict=True):
        assert (mine["n"], mine["decided"]) == (theirs["n"], theirs["decided"])
        assert mine["accuracy"] == pytest.approx(theirs["accuracy"])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*(single label|only one label).*")  # sklearn, 1-row subsets
def test_llm_pairwise_on_hh_rlhf_against_chosen_and_people(ws: Workspace):
    from sklearn.metrics import cohen_kappa_score

    from workbench.io.importer import import_path
    from workbench.pipeline import build_pipeline
    from workbench.runner import run_pipeline

    hh = ws.read(import_path(ws, DATA / "hh_rlhf_harmless_test_600.jsonl.gz", "hh").ref)
    size = (pl.col("chosen").str.len_chars() + pl.col("rejected").str.len_chars()
            + pl.col("prompt").list.eval(pl.element().struct.field("content").str.len_chars())
            .list.sum())
    short = hh.sort(size, "id").head(50).with_columns(  # the 50 shortest pairs: quick on CPU
        pl.format("{} turns", pl.col("prompt").list.len()).alias("turns"))
    ws.write_dataset("short", short, "preference")
    spec = build_pipeline({"name": "judging", "input": "short", "output": "judged",
                           "models": {"default": {"backend": "transformers", "model": "embedded"}},
                           "steps": [{"judge": {"method": "llm_pairwise", "batch_size": 1}}]})
    run_pipeline(spec, ws, progress=False)
    frame = ws.read("judged")
    assert frame.height == 50 and frame["p_chosen"].null_count() == 0

    out = cli("report", "judge", "judged", "--against", "chosen", "--subset", "turns", "--json",
              workspace=ws.root)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert list(got) == KEYS
    want = _independent(frame, dict.fromkeys(frame["id"].to_list(), "chosen"), "turns")
    _assert_same(got, want)
    assert list(got["by_subset"]) == list(want["by_subset"]) and len(got["by_subset"]) >= 2
    for key, part in got["by_subset"].items():
        _assert_same(part, want["by_subset"][key])

    # people's labels, written through the library; the majority decides (2 of 2 must agree)
    ids = frame["id"].to_list()
    ann = ["a", "b", "a", "tie", "a", "b", "both_bad"]
    bob = ["b", "b", "a", "tie", "a"]
    votes: dict[str, list[str]] = {}
    for i, row in enumerate(ids):
        for name, plan, limit in (("ann", ann, 50), ("bob", bob, 20)):
            if i < limit:
                choice, a_chosen = plan[i % len(plan)], (i + len(name)) % 2 == 0
                labels.label(ws, "judged", row, name, choice, a_chosen)
                votes.setdefault(row, []).append(
                    choice if choice in ("tie", "both_bad")
                    else "chosen" if (choice == "a") == a_chosen else "rejected")
    reference = {row: v[0] for row, v in votes.items() if all(x == v[0] for x in v)}
    out = cli("report", "judge", "judged", "--against", "labels", "--label-policy", "majority",
              "--json", workspace=ws.root)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    want = _independent(frame, reference)
    assert got["n"] == want["n"] == len(reference) < 50
    assert got["kappa"] == pytest.approx(cohen_kappa_score(want["verdicts"], want["refs"]))
    _assert_same(got, want)
