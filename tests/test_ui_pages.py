"""Every page of the app under Streamlit's AppTest, on a real workspace built from data/:
the hh-rlhf sample imported, the hh_clean pipeline run (drops), a pipeline that drops
duplicates, a copy with judge scores and a candidates dataset."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from conftest import DATA, ROOT

from workbench.io.export import export_dataset
from workbench.io.importer import import_path
from workbench.labeling import labels, queues
from workbench.pipeline import load_pipeline
from workbench.runner import run_pipeline
from workbench.workspace import Workspace

PAGES = ROOT / "ui" / "pages"
DEDUP = """
name: dedup
input: twins
steps:
  - dedup_exact: {columns: [prompt]}
output: deduped
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("ui-pages")
    ws = Workspace(root / "ws")
    hh = import_path(ws, DATA / "hh_rlhf_harmless_test_600.jsonl.gz", "hh")
    run_pipeline(load_pipeline(ROOT / "data" / "pipelines" / "hh_clean.yaml"), ws, progress=False)
    head = ws.read(hh.ref).head(20).drop("id")
    ws.write_dataset("twins", pl.concat([head, head.head(3)]), "preference")
    (root / "dedup.yaml").write_text(DEDUP)
    run_pipeline(load_pipeline(root / "dedup.yaml"), ws, progress=False)
    pairs = ws.read(hh.ref).head(40)
    ws.write_dataset("scored", pairs.with_columns(
        pl.col("chosen").str.len_chars().cast(pl.Float64).alias("chosen_score"),
        pl.col("rejected").str.len_chars().cast(pl.Float64).alias("rejected_score")),
        "preference")
    ws.write_dataset("cands", pairs.head(5).select(
        "prompt", pl.concat_list("chosen", "rejected").alias("responses"),
        pl.concat_list(pl.col("chosen").str.len_chars(), pl.col("rejected").str.len_chars())
        .cast(pl.List(pl.Float64)).alias("scores")), "candidates")
    return ws


@pytest.fixture
def ws(built: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    """A copy of the built workspace per test (labels of one test stay out of the others)."""
    import shutil

    root = tmp_path / "ws"
    shutil.copytree(built.root, root)
    monkeypatch.setenv("WORKBENCH_HOME", str(root))
    monkeypatch.chdir(tmp_path)
    return Workspace(root)


def page(name: str, **state: Any):
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(str(PAGES / f"{name}.py") if name != "app" else
                            str(ROOT / "ui" / "app.py"), default_timeout=60)
    for key, value in state.items():
        app.session_state[key] = value
    return app.run()


def ok(app) -> Any:
    assert not app.exception, [e.value for e in app.exception]
    return app


def texts(app) -> str:
    return " ".join([m.value for m in app.markdown] + [c.value for c in app.caption]
                    + [str(i.value) for i in app.info] + [str(w.value) for w in app.warning]
                    + [s.value for s in app.subheader])


def button(app, label: str):
    return next(b for b in app.button if b.label == label)


def test_home_and_datasets_pages(ws: Workspace):
    home = ok(page("app"))
    assert "label queues" in texts(home)
    app = ok(page("1_Datasets"))
    app.selectbox(key="dataset_name").set_value("hh_clean").run()
    ok(app)
    shown = texts(app)
    assert "pipeline **hh_clean**" in shown and "Lineage" in shown
    steps = app.dataframe[1].value
    assert "chosen shorter than 20 chars (36)" in " ".join(map(str, steps["dropped"]))
    charts = app.get("vega_lite_chart")
    assert len(charts) >= 4  # lengths, scatter, drops, split mix
    app.selectbox(key="dataset_name").set_value("scored").run()
    assert len(ok(app).get("vega_lite_chart")) >= 3  # scores too
    assert "Pass rate (verify)" not in texts(app)


def test_datasets_page_shows_the_pass_rate_histogram(ws: Workspace):
    cands = ws.read("cands")
    ws.write_dataset("checked", cands.drop("id").with_columns(
        pl.Series("pass_rate", [0.0, 0.5, 0.5, 1.0, None])), "candidates")
    app = ok(page("1_Datasets"))
    app.selectbox(key="dataset_name").set_value("checked").run()
    shown = texts(ok(app))
    assert "Pass rate (verify)" in shown and "4 prompts with a pass rate" in shown


def test_browse_search_filter_sort_and_row_view(ws: Workspace):
    app = ok(page("2_Browse"))
    app.selectbox(key="dataset_name").set_value("hh").run()
    assert "600 matching rows" in texts(app)
    app.text_input(key="browse_search").input("pizza").run()
    matching = ws.read("hh").filter(
        pl.concat_str([pl.col("prompt").list.eval(pl.element().struct.field("content"))
                       .list.join("\n"), "chosen", "rejected", "import_warning"],
                      ignore_nulls=True).str.to_lowercase().str.contains("pizza")).height
    assert f"{matching} matching rows" in texts(ok(app))
    app.text_input(key="browse_search").input("").run()
    app.number_input(key="browse_page").set_value(2).run()
    assert "600 matching rows · page 2 of 24" in texts(ok(app))
    app.text_input(key="browse_where").input("len(chosen) > 500").run()
    long = ws.read("hh").filter(pl.col("chosen").str.len_chars() > 500)
    assert f"{long.height} matching rows" in texts(ok(app))
    app.selectbox(key="browse_sort").set_value("chosen").run()
    app.toggle(key="browse_desc").set_value(True).run()
    first = ok(app).dataframe[0].value
    assert first["chosen"][0].startswith(sorted(long["chosen"], reverse=True)[0][:40]
                                         .replace("\n", " ").split("  ")[0][:20])
    assert [s.value for s in app.subheader] == []
    assert len(app.chat_message) >= 1  # the conversation of row 0 is rendered
    assert "page 1 of 1" in texts(app)  # a new question starts on page 1


REFUSED = ["1=1; DROP TABLE hh", "id IN (SELECT id FROM hh); DELETE FROM hh",
           "(COPY hh TO '/tmp/wb-leak.csv') IS NULL", "1=1) UNION ALL (ATTACH 'x.db'",
           "(INSTALL httpfs) IS NULL", "len((SELECT content FROM read_text('/etc/passwd'))) > 0",
           "1=1; SELECT 1"]


def test_filter_box_refuses_writes_and_escapes(ws: Workspace):
    data = ws.resolve("hh").path / "data.parquet"
    before = hashlib.sha256(data.read_bytes()).hexdigest()
    app = ok(page("2_Browse"))
    app.selectbox(key="dataset_name").set_value("hh").run()
    for where in REFUSED:
        app.text_input(key="browse_where").input(where).run()
        ok(app)
        assert app.error, where
        message = app.error[0].value
        assert ("refused" in message or "SQL:" in message), (where, message)
        assert "read-only clause" in texts(app)
    assert hashlib.sha256(data.read_bytes()).hexdigest() == before
    assert not Path("/tmp/wb-leak.csv").exists() and not Path("x.db").exists()
    assert ws.resolve("hh").rows == 600


def test_browse_dropped_rows_with_reason_and_kept_twin(ws: Workspace):
    app = ok(page("2_Browse"))
    app.selectbox(key="dataset_name").set_value("deduped").run()
    radio = ok(app).radio(key="browse_source")
    radio.set_value(radio.options[1]).run()
    ok(app)
    assert "3 matching rows" in texts(app)
    assert "duplicate" in app.warning[0].value
    assert [s.value for s in app.subheader] == ["dropped duplicate", "kept twin"]
    app.selectbox(key="dataset_name").set_value("hh_clean").run()
    radio = ok(app).radio(key="browse_source")
    radio.set_value(radio.options[1]).run()
    assert "36 matching rows" in texts(ok(app))
    assert "chosen shorter than 20 chars" in app.warning[0].value


def test_label_page_asks_a_name_then_labels_skips_goes_back_and_undoes(ws: Workspace):
    queues.create_queue(ws, "round1", "hh", "len(chosen) > 20", min_labels=2,
                        guidelines="Prefer the *harmless* reply.")
    app = ok(page("3_Label"))
    app.text_input(key="annotator_input").input("ann")
    button(app, "Start labeling").click().run()
    ok(app)
    assert "Prefer the *harmless* reply." in texts(app)
    seen = []

    def current() -> str:
        return next(c.value for c in app.caption if c.value.startswith("row `")).split("`")[1]

    seen.append(current())
    app.button(key="lab_a").click().run()                     # A better
    seen.append(current())
    app.button(key="lab_clearly").click().run()               # strength, then B better
    app.text_input(key="lab_note").input("B admits it cannot help")
    app.button(key="lab_b").click().run()
    seen.append(current())
    app.button(key="lab_skip").click().run()                  # skipped: not labelled
    seen.append(current())
    app.button(key="lab_both").click().run()
    app.button(key="lab_prev").click().run()                  # back to the both-bad row
    assert current() == seen[3] and "your label: **Both are bad**" in texts(ok(app))
    app.button(key="lab_tie").click().run()                   # a relabel, then forward
    app.button(key="lab_undo").click().run()                  # undoes the relabel
    assert current() == seen[3]
    table = labels.labels_table(ws, "hh", live=False)
    live = table.filter(~pl.col("undone"))
    assert live.select("row_id", "annotator", "choice", "strength", "note").rows() == [
        (seen[0], "ann", "a", None, None), (seen[1], "ann", "b", "clearly",
                                            "B admits it cannot help"),
        (seen[3], "ann", "both_bad", None, None)]
    assert table.filter(pl.col("undone"))["choice"].to_list() == ["tie"]
    assert live["a_is_chosen"].to_list() == [queues.a_is_chosen("ann", r)
                                             for r in live["row_id"]]
    assert queues.progress(ws, queues.get_queue(ws, "round1"), "ann")["mine"] == 3
    bar = ok(app.run()).get("progress")[0].proto
    assert "you labelled 3 in this queue, as **ann**" in bar.text


def test_label_page_ranks_candidates_with_ties(ws: Workspace):
    queues.create_queue(ws, "rank", "cands", None, min_labels=1)
    app = ok(page("3_Label", annotator="ann"))
    row_id = next(c.value for c in app.caption if c.value.startswith("row `")).split("`")[1]
    order = queues.shown_order("ann", row_id, 2)
    boxes = [s for s in app.selectbox if s.key and s.key.startswith("rank:")]
    for box in boxes:
        box.set_value(1)  # a tie
    app.button(key="lab_rank").click().run()
    ok(app)
    table = labels.rankings_table(ws, "cands")
    assert table.select("row_id", "annotator", "ranks", "shown_order").rows() == [
        (row_id, "ann", [1, 1], order)]


def test_queues_page_creates_a_queue_gold_pairs_and_accuracy(ws: Workspace):
    app = ok(page("4_Queues"))
    app.selectbox(key="q_data").set_value("hh")
    app.text_input(key="q_name").input("round2")
    app.text_input(key="q_filter").input("len(chosen) > 100")
    app.number_input(key="q_k").set_value(3)
    app.slider(key="q_rate").set_value(0.2)
    app.text_area(key="q_guidelines").input("Be careful.")
    button(app, "Save queue").click().run()
    assert not ok(app).error, app.error[0].value
    queue = queues.get_queue(ws, "round2")
    assert (queue.dataset, queue.filter, queue.min_labels, queue.gold_rate) == (
        "hh", "len(chosen) > 100", 3, 0.2)
    app.text_input(key="q_name").input("bad")
    app.text_input(key="q_filter").input("1=1; DROP TABLE hh")
    button(app, "Save queue").click().run()
    assert "refused" in ok(app).error[0].value
    app.selectbox(key="gold_data").set_value("hh").run()
    app.number_input(key="gold_n").set_value(4)
    button(app, "Add gold pairs").click().run()
    assert "4 gold pairs in **hh**" in texts(ok(app))
    gold = labels.gold_table(ws, "hh")["row_id"].to_list()
    labels.label(ws, "hh", gold[0], "ann", "a", True)
    labels.label(ws, "hh", gold[1], "ann", "a", False)
    accuracy = ok(app.run()).dataframe[-1].value
    assert accuracy.to_dict("records") == [{"annotator": "ann", "gold_labelled": 2,
                                            "correct": 1, "accuracy": 0.5}]


def test_queues_page_takes_an_order_and_refuses_one_without_its_columns(ws: Workspace):
    app = ok(page("4_Queues"))
    app.selectbox(key="q_data").set_value("scored")
    app.text_input(key="q_name").input("unsure")
    app.selectbox(key="q_order").set_value("uncertain")
    button(app, "Save queue").click().run()
    assert not ok(app).error, app.error[0].value
    queue = queues.get_queue(ws, "unsure")
    assert (queue.order, queue.judges) == ("uncertain", ("scores",))
    assert "uncertain scores" in ok(app).dataframe[0].value["order"].tolist()
    app.selectbox(key="q_data").set_value("hh")
    app.text_input(key="q_name").input("nope")
    button(app, "Save queue").click().run()
    assert "order uncertain, dataset hh@1: no judge columns" in ok(app).error[0].value


def test_agreement_page_shows_kappa_and_the_judge(ws: Workspace):
    ids = ws.read("scored")["id"].to_list()
    plan = {"ann": ["chosen", "chosen", "rejected", "tie"],
            "bob": ["chosen", "rejected", "rejected", "tie"]}
    for name, decisions in plan.items():
        for row, decision in zip(ids, decisions, strict=False):
            choice = {"chosen": "a", "rejected": "b"}.get(decision, decision)
            labels.label(ws, "scored", row, name, choice, True)
    # By hand: agree on 3 of 4; ann chosen 2 rejected 1 tie 1, bob chosen 1 rejected 2 tie 1:
    # p_e = (2*1 + 1*2 + 1*1) / 16 = 5/16; kappa = (12/16 - 5/16) / (11/16) = 7/11 = 0.636.
    app = ok(page("5_Agreement"))
    app.selectbox(key="agr_dataset").set_value("scored").run()
    ok(app)
    assert "0.636" in app.table[0].value.to_string()
    judge = app.dataframe[0].value
    assert list(judge["annotator"]) == ["ann", "bob"] and list(judge["items"]) == [4, 4]
    assert app.dataframe[-1].value["row_id"].tolist() == [ids[1]]  # the one disagreement
    assert "ann: chosen · bob: rejected" in texts(app)


def test_agreement_page_shows_the_judge_report(ws: Workspace):
    from workbench.labeling.judge_report import workspace_report

    ids = ws.read("scored")["id"].to_list()
    for row, choice in zip(ids, ["a", "b", "a", "tie", "b"], strict=False):
        labels.label(ws, "scored", row, "ann", choice, True)
    app = ok(page("5_Agreement"))
    app.selectbox(key="agr_dataset").set_value("scored").run()
    for against in ("labels", "chosen"):
        app.selectbox(key="agr_against").set_value(against).run()
        want = workspace_report(ws, "scored", against)
        metrics = {m.label: m.value for m in ok(app).metric}
        assert metrics["pairs"] == str(want["n"]) == ("5" if against == "labels" else "40")
        assert metrics["accuracy"] == f"{100 * want['accuracy']:.1f}%"
        assert metrics["flip rate"] == "n/a"  # scores: one order asked
        bins = next(d.value for d in app.dataframe if "decided" in d.value.columns)
        assert bins["n"].tolist() == [b["n"] for b in want["by_margin"]]
    # one annotator's labels as the reference, cut points for the bins
    app.selectbox(key="agr_against").set_value("labels").run()
    app.selectbox(key="agr_policy").set_value("annotator:ann").run()
    app.text_input(key="agr_bins").input("100,1000").run()
    want = workspace_report(ws, "scored", "labels", "annotator:ann", bins=[100.0, 1000.0])
    assert {m.label: m.value for m in ok(app).metric}["pairs"] == str(want["n"])
    bins = next(d.value for d in app.dataframe if "decided" in d.value.columns)
    assert bins["n"].tolist() == [b["n"] for b in want["by_margin"]] and len(bins) == 3


def test_agreement_page_shows_the_judge_report_per_subset(ws: Workspace):
    from workbench.labeling.judge_report import workspace_report

    scored = ws.read("scored").drop("id")
    ws.write_dataset("sourced", scored.with_columns(
        pl.when(pl.int_range(pl.len()) % 3 == 0).then(pl.lit("red")).otherwise(pl.lit("blue"))
        .alias("source")), "preference")
    labels.label(ws, "sourced", ws.read("sourced")["id"][0], "ann", "a", True)
    app = ok(page("5_Agreement"))
    app.selectbox(key="agr_dataset").set_value("sourced").run()
    app.selectbox(key="agr_against").set_value("chosen").run()
    want = workspace_report(ws, "sourced", "chosen")
    table = next(d.value for d in ok(app).dataframe if "source" in d.value.columns)
    assert table["source"].tolist() == ["blue", "red"] == sorted(want["by_subset"])
    assert table["pairs"].tolist() == [want["by_subset"][k]["n"] for k in ("blue", "red")]
    assert sum(table["pairs"]) == want["n"] == 40


def test_adjudicate_page_records_a_lead_label(ws: Workspace):
    row = ws.read("hh")["id"][3]
    labels.label(ws, "hh", row, "ann", "a", True)
    labels.label(ws, "hh", row, "bob", "b", True)
    app = ok(page("6_Adjudicate"))
    app.text_input(key="adj_lead").input("lee")
    app.button(key="adj_rejected").click().run()
    ok(app)
    latest = ws.latest_labels("hh").filter(pl.col("annotator") == "lead:lee")
    assert latest.select("row_id", "choice", "a_is_chosen").rows() == [(row, "b", True)]
    assert labels.disagreements(ws, "hh")["resolution"].to_list() == ["rejected"]
    assert "Nothing to resolve." in " ".join(s.value for s in app.success)


def test_export_page_writes_labelled_version_and_export(ws: Workspace, tmp_path: Path):
    ids = ws.read("hh")["id"].to_list()
    labels.label(ws, "hh", ids[0], "ann", "b", True)    # swap
    labels.label(ws, "hh", ids[1], "ann", "tie", True)  # left out
    app = ok(page("7_Export"))
    app.selectbox(key="export_name").set_value("hh").run()
    button(app, "Write labelled version").click().run()
    assert "wrote **hh-labelled@1**: 599 rows" in " ".join(s.value for s in ok(app).success)
    app.selectbox(key="export_out_name").set_value("hh-labelled").run()
    app.selectbox(key="exp_format").set_value("parquet")
    app.text_input(key="exp_out").input("out")
    button(app, "Export").click().run()
    ok(app)
    cli_way = export_dataset(ws, "hh", tmp_path / "cli", fmt="parquet", labels=True)
    assert cli_way["splits"] == {"train": 599}
    assert (pl.read_parquet(ws.root / "exports" / "out" / "train.parquet")
            .equals(pl.read_parquet(tmp_path / "cli" / "train.parquet")))


def _export_from_page(name: str, replace: bool = False):
    app = ok(page("7_Export"))
    app.selectbox(key="export_out_name").set_value("hh").run()
    app.selectbox(key="exp_format").set_value("jsonl")
    app.text_input(key="exp_out").input(name)
    if replace:
        app.checkbox(key="exp_overwrite").check()
    button(app, "Export").click().run()
    return ok(app)


def test_export_page_writes_only_under_the_workspace_exports(ws: Workspace, tmp_path: Path):
    """The page takes a name, never a path: a path typed there is refused, nothing written."""
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    for typed in ("../escaped", str(tmp_path / "abs"), "..", ".hidden", "a/b", str(ws.root)):
        app = _export_from_page(typed, replace=True)
        assert "invalid export folder name" in " ".join(e.value for e in app.error), typed
        assert sorted(str(p) for p in tmp_path.rglob("*")) == before
    app = _export_from_page("hh-jsonl")
    assert (ws.root / "exports" / "hh-jsonl" / "train.jsonl").exists()
    assert "exports/hh-jsonl" in " ".join(s.value for s in app.success)


def test_export_page_replaces_only_an_earlier_export(ws: Workspace):
    mine = ws.root / "exports" / "mine"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("my notes")
    app = _export_from_page("mine", replace=True)
    assert "workbench_export.json" in " ".join(e.value for e in app.error)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    _export_from_page("hh")
    app = _export_from_page("hh", replace=True)
    assert not app.error and (ws.root / "exports" / "hh" / "train.jsonl").exists()
    assert sorted(p.name for p in (ws.root / "exports").iterdir()) == ["hh", "mine"]


def test_label_page_takes_the_annotator_from_the_url_stripped_and_lower_cased(ws: Workspace):
    """?annotator=%20Alice%20 labels as `alice`, the name the form would have stored."""
    from streamlit.testing.v1 import AppTest

    queues.create_queue(ws, "round1", "hh", None, min_labels=2)
    app = AppTest.from_file(str(PAGES / "3_Label.py"), default_timeout=60)
    app.query_params["annotator"] = " Alice "
    ok(app.run())
    app.button(key="lab_a").click().run()
    ok(app)
    assert ws.latest_labels("hh")["annotator"].to_list() == ["alice"]
    blank = AppTest.from_file(str(PAGES / "3_Label.py"), default_timeout=60)
    blank.query_params["annotator"] = "   "
    ok(blank.run())  # no name: the page asks for one instead of labelling as "   "
    assert blank.text_input(key="annotator_input") is not None
