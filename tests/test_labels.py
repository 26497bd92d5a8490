"""workbench.labeling.labels: queues chosen by SQL, sides, undo, gold pairs, adjudication, the catalog
upgrade, and the labelled version the app writes matching `export --labels`."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from conftest import DATA

from workbench.errors import QueryError, WorkbenchError
from workbench.io.export import export_dataset
from workbench.io.importer import import_path
from workbench.labeling import labels, queues
from workbench.store.catalog import SCHEMA_VERSION, schema_version
from workbench.workspace import Workspace


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = Workspace(tmp_path_factory.mktemp("labels") / "ws")
    import_path(ws, DATA / "hh_rlhf_harmless_test_600.jsonl.gz", "full")
    ws.write_dataset("hh", ws.read("full").head(30), "preference")
    return ws.root


@pytest.fixture
def hh(base: Path, tmp_path: Path) -> Workspace:
    """The first 30 pairs of the hh-rlhf sample, in a fresh copy of the workspace."""
    shutil.copytree(base, tmp_path / "ws")
    return Workspace(tmp_path / "ws")


def serve(ws: Workspace, queue: queues.Queue, who: str, **options) -> str | None:
    found = queues.next_items(ws, queue, who, **options)
    return found[0].row_id if found else None


def test_queue_serves_rows_with_fewer_than_k_labels(hh: Workspace):
    queue = queues.create_queue(hh, "q", "hh", "len(chosen) > 0", min_labels=2)
    first = serve(hh, queue, "ann")
    assert serve(hh, queue, "bob") == first  # K = 2: everyone walks the same order
    item = queues.next_items(hh, queue, "ann")[0]
    labels.label(hh, "hh", first, "ann", "a", item.a_is_chosen, queue="q")
    assert serve(hh, queue, "ann") != first  # not again to the same person
    assert serve(hh, queue, "bob") == first  # still one label short
    labels.label(hh, "hh", first, "bob", "b", True, queue="q")
    assert first not in [i.row_id for i in queues.next_items(hh, queue, "cat", limit=30)]
    labels.resolve(hh, "hh", first, "boss", "chosen")  # leads do not count towards K
    assert queues.progress(hh, queue, "ann") == {"rows": 30, "complete": 1, "mine": 1}

    skipped = serve(hh, queue, "ann")
    assert serve(hh, queue, "ann", skip=[skipped]) not in (skipped, None)
    undone = labels.undo_last(hh, "bob", "q")
    assert undone is not None and undone.row_id == first
    assert serve(hh, queue, "bob") == first  # an undone label puts the row back
    assert queues.progress(hh, queue)["complete"] == 0


def test_buffered_next_item_skips_rows_others_completed(hh: Workspace):
    queue = queues.create_queue(hh, "q", "hh", None, min_labels=2)
    ann, bob = [], []
    first = queues.next_item(hh, queue, "ann", buffer=ann)
    assert len(ann) == queues.BATCH - 1  # one query filled the buffer
    upcoming = ann[0].row_id
    for who in ("bob", "cat"):  # two others complete the next buffered row meanwhile
        labels.label(hh, "hh", upcoming, who, "a", True, queue="q")
    assert queues.next_item(hh, queue, "bob", buffer=bob).row_id == first.row_id
    following = queues.next_item(hh, queue, "ann", buffer=ann)
    assert following.row_id not in (first.row_id, upcoming)
    assert queues.next_item(hh, queue, "ann", skip=[ann[0].row_id], buffer=ann).row_id \
        not in (first.row_id, upcoming, following.row_id)


def test_k1_queue_spreads_people_and_filter_is_sandboxed(hh: Workspace):
    queue = queues.create_queue(hh, "solo", "hh", None, min_labels=1)
    orders = {who: [i.row_id for i in queues.next_items(hh, queue, who, limit=30)]
              for who in ("ann", "bob")}
    assert sorted(orders["ann"]) == sorted(orders["bob"]) and orders["ann"] != orders["bob"]
    with pytest.raises(QueryError, match="refused"):
        queues.create_queue(hh, "bad", "hh", "1=1; DROP TABLE x")
    with pytest.raises(QueryError):
        queues.create_queue(hh, "bad", "hh", "len(read_text('/etc/passwd')) > 0")
    with pytest.raises(WorkbenchError, match="preference or candidates"):
        hh.write_dataset("prompts", hh.read("hh").select("prompt"), "instruction")
        queues.create_queue(hh, "bad", "prompts")


def judged(ws: Workspace) -> pl.DataFrame:
    """hh with two judges' columns: llm_pairwise's (p_chosen, position_flip) and scores, drawn
    from a seeded generator; margins are distinct, so every order is strict."""
    rng = np.random.default_rng(7)
    frame = ws.read("hh").with_columns(
        pl.Series("p_chosen", rng.permutation(np.linspace(0.03, 0.96, 30))),
        pl.Series("position_flip", rng.random(30) < 0.3),
        pl.Series("chosen_score", rng.permutation(np.linspace(1, 5, 30))),
        pl.lit(3.01).alias("rejected_score"))
    ws.write_dataset("judged", frame, "preference")
    return ws.read("judged")


def walk(ws: Workspace, queue: queues.Queue, who: str, n: int) -> list[str]:
    """The rows `who` is served one after another, labelling each (as the Label page does)."""
    seen, buffer = [], []
    for _ in range(n):
        item = queues.next_item(ws, queue, who, buffer=buffer)
        if item is None:
            break
        seen.append(item.row_id)
        labels.label(ws, queue.dataset, item.row_id, who, "a", item.a_is_chosen, queue=queue.name)
    return seen


def test_uncertain_order_serves_rows_in_ascending_margin(hh: Workspace):
    frame = judged(hh)
    by_margin = frame.sort((pl.col("p_chosen") - 0.5).abs())["id"].to_list()
    scores = queues.create_queue(hh, "unsure2", "judged", "len(chosen) > 200", min_labels=1,
                                 order="uncertain", judges=["scores"])
    kept = frame.filter(pl.col("chosen").str.len_chars() > 200)
    want = kept.sort((pl.col("chosen_score") - pl.col("rejected_score")).abs())["id"]
    got = [i.row_id for i in queues.next_items(hh, scores, "cat", limit=30)]
    assert got == want.to_list() and 0 < len(got) < 30
    queue = queues.create_queue(hh, "unsure", "judged", None, min_labels=2, order="uncertain")
    assert (queue.order, queue.judges) == ("uncertain", ("pairwise",))  # found by default
    assert walk(hh, queue, "ann", 30) == by_margin  # across buffer refills (BATCH 16)
    assert walk(hh, queue, "bob", 20) == by_margin[:20]  # and for everyone


def test_flips_disagree_and_sequential_orders(hh: Workspace):
    frame = judged(hh).with_columns((pl.col("p_chosen") - 0.5).alias("m1"),
                                    (pl.col("chosen_score") - 3.01).alias("m2"))
    size = pl.col("m1").abs()
    flips = queues.create_queue(hh, "flips", "judged", None, order="flips")
    want = frame.sort(~pl.col("position_flip"), size)["id"].to_list()
    assert [i.row_id for i in queues.next_items(hh, flips, "ann", limit=30)] == want
    disagree = queues.create_queue(hh, "dis", "judged", None, order="disagree")
    assert disagree.judges == ("pairwise", "scores")
    differ = pl.col("m1").sign() != pl.col("m2").sign()
    want = frame.sort(~differ, size)["id"].to_list()
    assert [i.row_id for i in queues.next_items(hh, disagree, "ann", limit=30)] == want
    assert 0 < frame.filter(differ).height < 30
    sequential = queues.create_queue(hh, "seq", "judged", "p_chosen > 0.5", min_labels=1,
                                     order="sequential")
    want = frame.filter(pl.col("p_chosen") > 0.5)["id"].to_list()
    for who in ("ann", "bob"):  # file order, the same for everyone even with K = 1
        assert [i.row_id for i in queues.next_items(hh, sequential, who, limit=30)] == want
    assert [q.order for q in queues.all_queues(hh)] == ["disagree", "flips", "sequential"]


def test_ordered_queues_check_their_columns_and_still_mix_in_gold(hh: Workspace):
    judged(hh)
    with pytest.raises(WorkbenchError, match="queue 'q', order uncertain, dataset hh@1: no "
                                             "judge columns"):
        queues.create_queue(hh, "q", "hh", None, order="uncertain")
    with pytest.raises(WorkbenchError, match="no column 'margin' to read a judge margin"):
        queues.create_queue(hh, "q", "judged", None, order="uncertain", judges=["margin"])
    with pytest.raises(WorkbenchError, match="flips are llm_pairwise's"):
        queues.create_queue(hh, "q", "judged", None, order="flips", judges=["scores"])
    with pytest.raises(WorkbenchError, match="disagree compares two judges, not one"):
        queues.create_queue(hh, "q", "judged", None, order="disagree", judges=["scores"])
    with pytest.raises(WorkbenchError, match="unknown order 'smart'"):
        queues.create_queue(hh, "q", "judged", None, order="smart")
    queue = queues.create_queue(hh, "q", "judged", None, order="uncertain", gold_rate=0.5)
    hh.write_dataset("judged", hh.read("judged").drop("p_chosen"), "preference")  # version 2
    with pytest.raises(WorkbenchError, match="queue 'q', order uncertain, dataset judged@2: "
                                             "judge 'pairwise' needs column.*p_chosen"):
        queues.next_items(hh, queue, "ann")
    queue = queues.create_queue(hh, "q", "judged@1", None, order="uncertain", gold_rate=0.5)
    assert labels.gold_from_dataset(hh, "judged@1", 5) == 5
    gold = set(labels.gold_table(hh, "judged")["row_id"].to_list())
    seen = walk(hh, queue, "ann", 20)
    mixed = [r for r in seen if r in gold]
    assert 1 <= len(mixed) <= 5
    frame = hh.read("judged@1").filter(~pl.col("id").is_in(list(gold)))
    order = frame.sort((pl.col("p_chosen") - 0.5).abs())["id"].to_list()
    assert [r for r in seen if r not in gold] == order[:len(seen) - len(mixed)]


def test_sides_are_stable_per_annotator_and_row_and_balanced():
    ids = [f"row{i}" for i in range(400)]
    sides = [queues.a_is_chosen("ann", i) for i in ids]
    assert sides == [queues.a_is_chosen("ann", i) for i in ids]
    assert 150 < sum(sides) < 250
    assert sides != [queues.a_is_chosen("bob", i) for i in ids]
    assert sorted(queues.shown_order("ann", "row1", 5)) == list(range(5))


def test_labels_are_appended_and_undo_is_a_tombstone(hh: Workspace):
    row = hh.read("hh")["id"][0]
    first = labels.label(hh, "hh", row, "ann", "a", True, strength="clearly", note="sure")
    second = labels.label(hh, "hh", row, "ann", "tie", True)
    assert second > first
    assert hh.latest_labels("hh")["choice"].to_list() == ["tie"]
    assert labels.undo_last(hh, "ann").label_id == second
    latest = hh.latest_labels("hh")  # the relabel is undone: the first label counts again
    assert latest.select("choice", "strength", "note").rows() == [("a", "clearly", "sure")]
    every = labels.labels_table(hh, "hh", live=False)
    assert every["undone"].to_list() == [False, True]  # nothing deleted
    with pytest.raises(WorkbenchError, match="strength"):
        labels.label(hh, "hh", row, "ann", "tie", True, strength="clearly")
    with pytest.raises(WorkbenchError, match="lead:"):
        labels.label(hh, "hh", row, "lead:me", "a", True)


def test_gold_pairs_are_mixed_in_and_scored(hh: Workspace):
    assert labels.gold_from_dataset(hh, "hh", 10) == 10
    queue = queues.create_queue(hh, "g", "hh", None, min_labels=1, gold_rate=0.3)
    served, buffer = [], []
    for _ in range(12):
        item = queues.next_item(hh, queue, "ann", buffer=buffer)
        served.append(item.gold)
        choice = "a" if item.a_is_chosen == (len(served) % 4 != 0) else "b"  # 3 in 4 right
        labels.label(hh, "hh", item.row_id, "ann", choice, item.a_is_chosen, queue="g")
    assert 1 <= sum(served) <= 8  # about 30% of 12 (a seeded draw)
    accuracy = labels.gold_accuracy(hh, "hh").row(0, named=True)
    assert accuracy["annotator"] == "ann" and accuracy["gold_labelled"] == sum(served)
    golds = [i for i, g in enumerate(served, start=1) if g]
    assert accuracy["correct"] == sum(1 for i in golds if i % 4 != 0)


def test_rankings_allow_ties_and_unranked(hh: Workspace):
    frame = hh.read("hh").head(3).select(
        "prompt", pl.concat_list("chosen", "rejected", "chosen").alias("responses"))
    hh.write_dataset("cands", frame.with_columns(
        pl.col("responses").list.eval(pl.element() + "!")), "candidates")
    row = hh.read("cands")["id"][0]
    labels.rank(hh, "cands", row, "ann", [1, 1, None], [2, 0, 1])
    table = labels.rankings_table(hh, "cands")
    assert table.select("ranks", "shown_order").rows() == [([1, 1, None], [2, 0, 1])]
    with pytest.raises(WorkbenchError, match="at least two"):
        labels.rank(hh, "cands", row, "ann", [1, None, None], [0, 1, 2])
    with pytest.raises(WorkbenchError, match="permutation"):
        labels.rank(hh, "cands", row, "ann", [1, 2, 3], [0, 0, 1])


def test_adjudication_settles_the_export(hh: Workspace, tmp_path: Path):
    ids = hh.read("hh")["id"].to_list()
    labels.label(hh, "hh", ids[0], "ann", "a", True)   # chosen
    labels.label(hh, "hh", ids[0], "bob", "a", False)  # rejected
    assert labels.disagreements(hh, "hh")["row_id"].to_list() == [ids[0]]
    exported = export_dataset(hh, "hh", tmp_path / "before", fmt="parquet", labels=True)
    assert exported["labels"]["excluded_no_majority"] == 1
    labels.resolve(hh, "hh", ids[0], "boss", "rejected", note="B is safer")
    resolved = labels.disagreements(hh, "hh").row(0, named=True)
    assert (resolved["resolution"], resolved["resolved_by"]) == ("rejected", "lead:boss")
    exported = export_dataset(hh, "hh", tmp_path / "after", fmt="parquet", labels=True)
    assert exported["labels"]["swapped"] == 1 and exported["labels"]["excluded_no_majority"] == 0


def test_labelled_version_matches_export_labels(hh: Workspace, tmp_path: Path):
    ids = hh.read("hh")["id"].to_list()
    labels.label(hh, "hh", ids[0], "ann", "b", True)   # rejected is better: swap
    labels.label(hh, "hh", ids[1], "ann", "tie", True)  # left out
    labels.label(hh, "hh", ids[2], "ann", "both_bad", False)
    version, counts = labels.labelled_version(hh, "hh")
    assert version.name == "hh-labelled" and version.rows == 28
    assert counts == {"policy": "majority", "labelled": 3, "swapped": 1,
                      "excluded_tie_or_both_bad": 2, "excluded_no_majority": 0}
    via_app = export_dataset(hh, version.ref, tmp_path / "app", fmt="parquet")
    via_cli = export_dataset(hh, "hh", tmp_path / "cli", fmt="parquet", labels=True)
    assert via_app["splits"] == via_cli["splits"]
    assert (pl.read_parquet(tmp_path / "app" / "train.parquet")
            .equals(pl.read_parquet(tmp_path / "cli" / "train.parquet")))
    kept, counts = labels.labelled_version(hh, "hh", "hh-all", keep_undecided=True)
    assert kept.rows == 30 and counts["kept_tie_or_both_bad"] == 2
    flags = hh.read(kept.ref).filter(pl.col("tie") | pl.col("both_bad"))
    assert flags.height == 2
    with pytest.raises(WorkbenchError, match="new name"):
        labels.labelled_version(hh, "hh", "hh")


def test_a_version_1_catalog_is_upgraded_and_its_labels_kept(tmp_path: Path):
    root = tmp_path / "old"
    root.mkdir()
    with duckdb.connect(str(root / "workbench.duckdb")) as con:  # a catalog as v1 wrote it
        con.execute("""
            CREATE TABLE datasets (name VARCHAR NOT NULL, version INTEGER NOT NULL,
                kind VARCHAR NOT NULL, rows BIGINT NOT NULL, created_at TIMESTAMP NOT NULL,
                path VARCHAR NOT NULL, columns VARCHAR NOT NULL, lineage JSON, run_key VARCHAR,
                PRIMARY KEY (name, version));
            CREATE TABLE annotators (name VARCHAR PRIMARY KEY, created_at TIMESTAMP NOT NULL);
            CREATE SEQUENCE label_seq;
            CREATE TABLE labels (label_id BIGINT PRIMARY KEY DEFAULT nextval('label_seq'),
                dataset VARCHAR NOT NULL, row_id VARCHAR NOT NULL, annotator VARCHAR NOT NULL,
                choice VARCHAR NOT NULL CHECK (choice IN ('a', 'b', 'tie', 'both_bad')),
                note VARCHAR, a_is_chosen BOOLEAN NOT NULL, created_at TIMESTAMP NOT NULL);
            CREATE TABLE catalog_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
            INSERT INTO catalog_meta VALUES ('schema_version', '1');
            INSERT INTO labels (dataset, row_id, annotator, choice, a_is_chosen, created_at)
                VALUES ('p', 'r1', 'ann', 'a', true, now());""")
    ws = Workspace(root)
    with duckdb.connect(str(root / "workbench.duckdb"), read_only=True) as con:
        assert schema_version(con) == SCHEMA_VERSION == 3
    assert ws.latest_labels("p").select("row_id", "choice", "strength").rows() == [
        ("r1", "a", None)]
    second = ws.add_label("p", "r2", "ann", "b", False, strength="slightly")
    assert second == 2  # the old sequence goes on
    assert labels.undo_last(ws, "ann").label_id == 2


def test_a_version_2_catalog_gets_queue_orders_and_keeps_its_queues(hh: Workspace):
    queues.create_queue(hh, "old", "hh", None, min_labels=2)
    with duckdb.connect(str(hh.root / "workbench.duckdb")) as con:  # as version 2 left it
        con.execute("ALTER TABLE queues DROP COLUMN serve_order")
        con.execute("ALTER TABLE queues DROP COLUMN order_judges")
        con.execute("UPDATE catalog_meta SET value = '2' WHERE key = 'schema_version'")
    ws = Workspace(hh.root)
    queue = queues.get_queue(ws, "old")
    assert (queue.min_labels, queue.order, queue.judges) == (2, "random", ())
    assert serve(ws, queue, "ann") is not None


def test_annotator_names_are_stripped_and_lower_cased_before_they_are_stored(hh: Workspace):
    """` alice ` (as `?annotator=%20alice%20` gives it) and `Alice` are the annotator `alice`:
    one vote per row, one queue position, one undo history."""
    queue = queues.create_queue(hh, "q", "hh", None, min_labels=2)
    first = serve(hh, queue, " alice ")
    labels.label(hh, "hh", first, " alice ", "a", True, queue="q")
    labels.label(hh, "hh", first, "Alice", "b", True, queue="q")  # her relabel, not a 2nd vote
    hh.add_label("hh", first, "  BOB\t", "b", True)
    latest = hh.latest_labels("hh").sort("annotator")
    assert latest.select("annotator", "choice").rows() == [("alice", "b"), ("bob", "b")]
    assert sorted(r["name"] for r in hh.catalog.query("SELECT name FROM annotators")) == [
        "alice", "bob"]
    assert serve(hh, queue, "ALICE ") != first  # she labelled it, however she types her name
    assert labels.my_label(hh, "hh", first, " Alice")["choice"] == "b"
    assert labels.undo_last(hh, "alice ").row_id == first
    result = export_dataset(hh, "hh", hh.root.parent / "x", fmt="parquet", labels=True,
                            label_policy="annotator: Bob ")
    assert result["labels"]["labelled"] == 1
    labels.resolve(hh, "hh", first, " Lee ", "chosen")
    assert "lead:lee" in hh.latest_labels("hh")["annotator"].to_list()
    for empty in ("", "   ", "\t\n"):
        with pytest.raises(WorkbenchError, match="annotator name"):
            labels.label(hh, "hh", first, empty, "a", True)
        with pytest.raises(WorkbenchError, match="annotator name"):
            hh.add_label("hh", first, empty, "a", True)
