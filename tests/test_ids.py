"""Row ids are content hashes: pinned, independent of struct field order, unique per version,
renewed (with `parent_id`) when a step changes a row's content."""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl

from workbench import schema
from workbench.pipeline import build_pipeline
from workbench.runner import run_pipeline

MESSAGE = pl.Struct({"role": pl.String, "content": pl.String})
REVERSED = pl.Struct({"content": pl.String, "role": pl.String})


def prefs(dtype: pl.DataType = MESSAGE) -> pl.DataFrame:
    prompts = [[{"role": "user", "content": "Hi"}],
               [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Bonjour!"}]]
    return pl.DataFrame({"prompt": prompts, "chosen": ["a", "Salut !"], "rejected": ["b", "é"]},
                        schema={"prompt": pl.List(dtype), "chosen": pl.String,
                                "rejected": pl.String})


def test_golden_ids_are_pinned():
    """The canonical encoding is `<bytes>:<text>` per value, lists with their length; these
    literal values must never change (labels and caches in users' workspaces key on them)."""
    ids = schema.with_ids(prefs(), "preference")["id"].to_list()
    assert ids == ["2122bb33ec345ab6", "09759277b93abad4"]
    # the documented encoding, hashed independently of the implementation
    text = "prompt=[1|4:user2:Hi];chosen=1:a;rejected=1:b;"
    assert hashlib.sha256(text.encode()).hexdigest()[:16] == ids[0]


def test_ids_do_not_depend_on_field_order_or_extra_fields():
    reordered = prefs(REVERSED)
    extra = prefs().with_columns(pl.col("prompt").list.eval(
        pl.struct(pl.element().struct.field("role"), pl.lit("x").alias("name"),
                  pl.element().struct.field("content"))))
    expected = schema.with_ids(prefs(), "preference")["id"].to_list()
    assert schema.with_ids(reordered, "preference")["id"].to_list() == expected
    assert schema.with_ids(extra, "preference")["id"].to_list() == expected
    # and the value boundaries are unambiguous: moving text between fields changes the id
    shifted = prefs().with_columns(pl.Series("chosen", ["ab", "Salut !"]),
                                   pl.Series("rejected", ["", "é"]))
    assert schema.with_ids(shifted, "preference")["id"][0] != expected[0]


def test_changed_content_gets_a_new_id_and_keeps_the_old_as_parent():
    first = schema.with_ids(prefs(), "preference")
    same = schema.with_ids(first, "preference")
    assert same["id"].to_list() == first["id"].to_list() and "parent_id" not in same.columns
    edited = first.with_columns(pl.Series("chosen", ["A", "Salut !"]))
    again = schema.with_ids(edited, "preference")
    assert again["id"][0] != first["id"][0] and again["parent_id"][0] == first["id"][0]
    assert again["id"][1] == first["id"][1] and again["parent_id"][1] is None


def test_ids_are_unique_after_a_pairing_sql_step(ws, tmp_path: Path):
    rows = pl.DataFrame({"prompt": [[{"role": "user", "content": "Name a colour."}]] * 2,
                         "responses": [["red", "red", "blue"], ["green", "green", "green"]]})
    source = tmp_path / "cands.parquet"
    rows.write_parquet(source)
    pairing = """
        SELECT a.id AS candidates_id, a.prompt, a.r AS chosen, b.r AS rejected
        FROM (SELECT id, prompt, unnest(responses) AS r, generate_subscripts(responses, 1) AS i
              FROM input) a
        JOIN (SELECT id, unnest(responses) AS r, generate_subscripts(responses, 1) AS i
              FROM input) b ON a.id = b.id AND a.i < b.i
    """
    spec = build_pipeline({"name": "pairs", "input": str(source), "output": "pairs",
                           "steps": [{"sql": {"query": pairing, "kind": "preference"}}]})
    out = run_pipeline(spec, ws, progress=False)
    frame = ws.read("pairs")
    assert out.output.rows == 6 and frame["id"].n_unique() == 6
    red_blue = frame.filter((pl.col("chosen") == "red") & (pl.col("rejected") == "blue"))
    base = red_blue["id"][0]
    assert sorted(red_blue["id"].to_list()) == [base, f"{base}-1"]


def test_labels_stay_on_the_pair_that_was_labeled(ws, tmp_path: Path):
    source = tmp_path / "prefs.parquet"
    prefs().write_parquet(source)
    ws.write_dataset("prefs", pl.read_parquet(source), "preference")
    v1 = ws.read("prefs@1")
    labeled = v1["id"][0]
    ws.add_label("prefs", labeled, "ana", "a", a_is_chosen=True)
    swap = ("SELECT id, prompt, rejected AS chosen, chosen AS rejected FROM input "
            "WHERE chosen = 'a' UNION ALL SELECT id, prompt, chosen, rejected FROM input "
            "WHERE chosen <> 'a'")
    spec = build_pipeline({"name": "swap", "input": "prefs@1", "output": "prefs",
                           "steps": [{"sql": {"query": swap}}]})
    run_pipeline(spec, ws, progress=False)
    v2 = ws.read("prefs@2")
    swapped = v2.filter(pl.col("parent_id") == labeled)
    assert swapped.height == 1 and swapped["id"][0] != labeled
    assert labeled not in v2["id"].to_list()  # the label does not silently move to the swap
    untouched = v1["id"][1]
    assert untouched in v2["id"].to_list()
