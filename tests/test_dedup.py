"""Near-duplicate removal on real rows with planted near-duplicates: every planted copy goes,
one row per cluster stays, and every dropped row names its kept twin."""

from __future__ import annotations

import re

import numpy as np
import polars as pl
import pytest
from realrows import embeddings, prompts

from workbench.algorithms.diversity import greedy_select
from workbench.registry import get
from workbench.schema import user
from workbench.transform import DROP, Context

PLANTED = list(range(7, 2000, 100))  # 20 real rows, each given two edited copies


def variants(text: str) -> tuple[str, str]:
    """Case and whitespace changed; or a word added: the same request, not the same string."""
    return re.sub(" ", "  ", text.upper()), "Please: " + text.lower()


@pytest.fixture(scope="module")
def planted() -> pl.DataFrame:
    """2,000 real rows plus 40 copies; `cluster` names each planted group (the original's
    position), `quality` decides the keeper: the original, except in every third group."""
    from workbench.models.embeddings import embed

    base = prompts().with_columns(pl.Series("embedding", embeddings()),
                                  pl.int_range(pl.len()).alias("cluster"),
                                  pl.lit(1.0).alias("quality"))
    rows = []
    for k, i in enumerate(PLANTED):
        for j, text in enumerate(variants(base["text"][i])):
            better = k % 3 == 0 and j == 0
            rows.append({"id": f"copy{j}-{i}", "text": text, "cluster": i,
                         "quality": 2.0 if better else 0.5})
    copies = pl.DataFrame(rows).with_columns(user(pl.col("text")).alias("prompt"))
    copies = copies.with_columns(pl.Series("embedding", embed(copies["text"].to_list())))
    return pl.concat([base, copies.select(base.columns)]).with_columns(
        pl.col("cluster").cast(pl.Int64))


def check_planted(out: pl.DataFrame) -> None:
    kept_ids = set(out.filter(pl.col(DROP).is_null())["id"])
    for i in PLANTED:
        group = out.filter(pl.col("cluster") == i)
        assert group.height == 3
        keepers = group.filter(pl.col(DROP).is_null())
        assert keepers.height == 1, group.select("id", DROP)  # exactly one per cluster
        best = group.sort("quality", descending=True, maintain_order=True)["id"][0]
        assert keepers["id"].item() == best
        assert (group.filter(pl.col(DROP).is_not_null())["duplicate_of"] == best).all()
    dropped = out.filter(pl.col(DROP).is_not_null())
    assert dropped["duplicate_of"].is_in(list(kept_ids)).all()  # twins are kept rows


@pytest.mark.slow
def test_dedup_embedding_explains_every_drop(planted):
    ctx = Context()
    out = get("dedup_embedding")({"keep_by": "quality"})(planted.lazy(), ctx).collect()
    assert out.height == planted.height
    check_planted(out)
    dropped = out.filter(pl.col(DROP).is_not_null())
    assert (dropped[DROP] == "near-duplicate (cosine > 0.95)").all()
    twins = dropped.join(out.select("id", pl.col("embedding").alias("twin")),
                         left_on="duplicate_of", right_on="id")
    cosine = np.einsum("ij,ij->i", np.stack(twins["embedding"].to_list()),
                       np.stack(twins["twin"].to_list()))
    np.testing.assert_allclose(cosine, twins["similarity"].to_numpy(), atol=1e-5)
    assert (cosine > 0.95).all()
    assert ctx.notes["report"]["search"] == "exact"
    assert ctx.notes["report"]["dropped"] == dropped.height
    # the same keepers as deita's greedy rule without a budget, in keep_by order
    order = np.argsort(-planted["quality"].to_numpy(), kind="stable")
    vectors = np.stack(planted["embedding"].to_list())[order]
    greedy = planted["id"].gather(order[greedy_select(vectors, 0.95).order])
    assert set(greedy) == set(out.filter(pl.col(DROP).is_null())["id"])
    # above `exact_up_to`, the IVF join finds the same pairs here and says how well it did
    ivf_ctx = Context()
    ivf = get("dedup_embedding")({"keep_by": "quality", "exact_up_to": 0, "cell": 32})(
        planted.lazy(), ivf_ctx).collect()
    check_planted(ivf)
    report = ivf_ctx.notes["report"]
    assert report["search"] == "ivf" and report["pair_recall"] >= 0.95
    assert ivf[DROP].null_count() >= out[DROP].null_count()


def exact_jaccard(a: str, b: str, n: int = 3) -> float:
    def grams(text: str) -> set[tuple[str, ...]]:
        words = re.findall(r"\w+", text.lower())
        return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}

    x, y = grams(a), grams(b)
    return len(x & y) / len(x | y) if x | y else float(a.lower().split() == b.lower().split())


@pytest.mark.slow
def test_dedup_minhash_explains_every_drop(planted):
    ctx = Context()
    frame = planted.drop("embedding")  # the copies repeat the last user turn: compare that
    config = {"keep_by": "quality", "threshold": 0.7, "columns": ["text"]}
    out = get("dedup_minhash")(config)(frame.lazy(), ctx).collect()
    check_planted(out)
    dropped = out.filter(pl.col(DROP).is_not_null())
    texts = dict(zip(out["id"], out["text"], strict=True))
    for row in dropped.iter_rows(named=True):
        exact = exact_jaccard(row["text"], texts[row["duplicate_of"]])
        assert abs(row["similarity"] - exact) < 0.2, row
        assert row["similarity"] > 0.7
    assert ctx.notes["report"]["dropped"] == dropped.height
    # character shingles see the same copies
    chars = get("dedup_minhash")({**config, "shingle": "char", "n": 5})(
        frame.lazy(), Context()).collect()
    check_planted(chars)


def test_minhash_short_and_empty_texts():
    frame = pl.DataFrame({"id": list("abcde"), "prompt": [
        [{"role": "user", "content": t}] for t in ["Hi there", "hi   THERE", "Hello", "", ""]]})
    out = get("dedup_minhash")({})(frame.lazy(), Context()).collect()
    assert out["duplicate_of"].to_list() == [None, "a", None, None, "d"]
