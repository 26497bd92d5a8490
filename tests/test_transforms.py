"""The pure-data transforms on real rows."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from tests.conftest import DATA
from workbench.io.importer import load
from workbench.registry import get
from workbench.transform import DROP, Context


def apply(name: str, frame: pl.DataFrame, seed: int = 0, **config) -> pl.DataFrame:
    return get(name)(config)(frame.lazy(), Context(seed=seed)).collect()


@pytest.fixture
def gsm() -> pl.DataFrame:
    return load(DATA / "benchmarks/gsm8k_test.jsonl")[0]


def test_filter_expressions_and_conditions(gsm):
    polars_style = apply("filter", gsm, expr="pl.col('response').str.len_chars() > 300")
    sql_style = apply("filter", gsm, expr="length(response) > 300")
    assert polars_style[DROP].null_count() == sql_style[DROP].null_count()
    expected = gsm.filter(pl.col("response").str.len_chars() > 300).height
    assert polars_style[DROP].null_count() == expected
    conditions = apply("filter", gsm, where={"prompt": {"min_chars": 200},
                                             "response": {"contains": "$"}})
    kept = conditions.filter(pl.col(DROP).is_null())
    assert kept["response"].str.contains("$", literal=True).all()
    reasons = set(conditions[DROP].drop_nulls())
    assert reasons == {"prompt shorter than 200 chars", "response fails contains='$'"}


def test_dedup_exact_normalises_and_records_first(shared: Path):
    frame = load(shared / "fastchat/dummy_conversation.json")[0]
    out = apply("dedup_exact", frame)
    dupes = out.filter(pl.col(DROP) == "duplicate")
    kept = out.filter(pl.col(DROP).is_null())
    from workbench.schema import messages_text

    norm = messages_text("prompt").str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars()
    assert kept.select(norm).n_unique() == kept.height
    assert out.select(norm).n_unique() == kept.height
    first_of = dict(zip(kept.select(norm).to_series(), kept["id"], strict=True))
    assert [first_of[t] for t in dupes.select(norm).to_series()] == dupes["duplicate_of"].to_list()
    case = pl.DataFrame({"id": ["a", "b"], "prompt": [[{"role": "user", "content": "Hello  World"}],
                                                     [{"role": "user", "content": "hello world "}]]})
    assert apply("dedup_exact", case)["duplicate_of"].to_list() == [None, "a"]
    assert apply("dedup_exact", case, normalize=False)[DROP].null_count() == 2


def test_sample_is_seeded_and_ordered(gsm):
    a = apply("sample", gsm, seed=1, n=50)
    b = apply("sample", gsm, seed=1, n=50)
    c = apply("sample", gsm, seed=2, n=50)
    assert a["id"].to_list() == b["id"].to_list() != c["id"].to_list()
    position = {i: n for n, i in enumerate(gsm["id"])}
    assert [position[i] for i in a["id"]] == sorted(position[i] for i in a["id"])
    assert apply("sample", gsm, fraction=0.1).height == round(gsm.height * 0.1)
    assert apply("sample", gsm, n=10**6).height == gsm.height


def test_split_sizes_and_seed(gsm):
    out = apply("split", gsm, test_size=0.2)
    assert (out["split"] == "test").sum() == round(gsm.height * 0.2)
    assert out["id"].to_list() == gsm["id"].to_list()
    again = apply("split", gsm, test_size=0.2)
    assert out["split"].to_list() == again["split"].to_list()


def test_sql_columns_and_rename(gsm):
    out = apply("sql", gsm, query="SELECT id, prompt, response, length(response) AS n FROM input "
                                  "ORDER BY n DESC LIMIT 5")
    assert out.height == 5 and out["n"].to_list() == sorted(out["n"].to_list(), reverse=True)
    selected = apply("select_columns", gsm, columns=["prompt"])
    assert selected.columns == ["id", "prompt"]
    renamed = apply("rename", gsm, mapping={"response": "answer"})
    assert "answer" in renamed.columns and "response" not in renamed.columns
    with pytest.raises(ValueError, match="no column 'nope'"):
        apply("rename", gsm, mapping={"nope": "x"})


def test_row_local_transforms_as_arrow_batch_functions(gsm):
    """What a distributed engine would run: the same transform over Arrow batches."""
    from workbench.engine.batches import batch_function

    transform = get("filter")({"where": {"response": {"min_chars": 300}}})
    fn = batch_function(transform, Context())
    parts = [pl.from_arrow(fn(gsm.slice(i, 100).to_arrow())) for i in range(0, gsm.height, 100)]
    whole = apply("filter", gsm, where={"response": {"min_chars": 300}})
    assert pl.concat(parts).equals(whole)
    with pytest.raises(ValueError, match="global step"):
        batch_function(get("dedup_exact")({}), Context())(gsm.to_arrow())
