"""CHES: the known answers of docs/methods.md §4.5, padding-invariance on the embedded model, and
the filter's ranking."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from transforms.ches import ChesScoreConfig, ches, pool_sides
from workbench.models.transformers_backend import sum_states
from workbench.registry import get
from workbench.transform import DROP, Context


def test_toy_case_gives_minus_one_and_zero():
    """h_p = (1, 0); y⁺ has 2 tokens, its first token's state is (0, 1); y⁻ has 1 token.
    Columns: last prompt token, then each response token (the last predicts nothing). The
    states go through the pooling the step runs: the backend's `sum_states` on a left-padded
    batch, then `pool_sides`."""
    import torch

    pad = [9.0, 9.0]  # a padding column's state must not count
    last = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 7.0]],  # y⁺ from column 0
                         [pad, [1.0, 0.0], [3.0, -2.0]]])  # y⁻ from column 1
    plus, minus = sum_states(last, [0, 1])
    assert plus["tokens"] == 2 and minus["tokens"] == 1
    (s_plus, n_plus), (s_minus, n_minus) = (pool_sides([r], "sum_predicting_states", 2)
                                            for r in (plus, minus))
    assert s_plus.tolist() == [[1.0, 1.0]] and s_minus.tolist() == [[1.0, 0.0]]
    score, normalized = ches(s_plus, n_plus, s_minus, n_minus)
    assert score.tolist() == [-1.0] and normalized.tolist() == [0.0]
    # the paper's script also sums the last token's state and counts it
    s_paper, n_paper = pool_sides([plus], "sum_with_last_state", 2)
    assert s_paper.tolist() == [[6.0, 8.0]] and n_paper.tolist() == [3.0]
    assert pool_sides([plus], "paper_script", 2)[0].tolist() == [[6.0, 8.0]]  # old name


def test_old_variant_names_mean_the_same():
    assert ChesScoreConfig(variant="definition").variant == "sum_predicting_states"
    assert ChesScoreConfig(variant="paper_script").variant == "sum_with_last_state"
    with pytest.raises(ValueError):
        ChesScoreConfig(variant="sum_everything")


def test_identity_is_exactly_zero():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(5, 64)) * 100
    n = rng.integers(1, 50, size=5)
    score, normalized = ches(s, n, s.copy(), n.copy())
    assert (score == 0).all() and (normalized == 0).all()


def test_filter_drops_the_most_similar_pairs():
    frame = pl.DataFrame({"id": list("abcdef"), "ln_ches_score": [0.5, -2.0, 0.5, 3.0, None, 1.0]})
    ctx = Context()
    out = get("ches_filter")({"drop_fraction": 0.4})(frame.lazy(), ctx).collect()
    # 5 scored rows, floor(0.4 * 5) = 2 dropped: d (3.0) and f (1.0); ties keep input order
    assert out.filter(pl.col(DROP).is_null())["id"].to_list() == ["a", "b", "c"]
    reasons = dict(zip(out["id"], out[DROP], strict=True))
    assert reasons["e"] == "ches_filter: no ln_ches_score"
    assert reasons["d"] == reasons["f"] == "ches_filter: not among the 3 lowest ln_ches_score"
    assert ctx.notes["report"]["highest_kept"] == 0.5
    out = get("ches_filter")({"keep": 2})(frame.lazy(), Context()).collect()
    assert out.filter(pl.col(DROP).is_null())["id"].to_list() == ["a", "b"]  # a before c
    with pytest.raises(ValueError, match="exactly one of"):
        get("ches_filter")({"keep": 2, "drop_fraction": 0.1})


@pytest.mark.slow
def test_padded_batches_equal_one_pair_at_a_time(tmp_path, embedded):
    from conftest import DATA

    from workbench.io.importer import load
    from workbench.workspace import Workspace

    backend = embedded
    pairs = (load(DATA / "hh_rlhf_harmless_test_600.jsonl.gz")[0]
             .filter(pl.col("prompt").list.len() == 1,
                     pl.col("prompt").list.last().struct.field("content").str.len_chars() < 80,
                     pl.col("chosen").str.len_chars() < 100,
                     pl.col("rejected").str.len_chars() < 100,
                     pl.col("chosen") != pl.col("rejected"))
             .head(3))
    same = pairs.head(1).with_columns(pl.col("chosen").alias("rejected"), pl.lit("same").alias("id"))
    frame = pl.concat([pairs, same])
    lengths = frame.select(pl.col("chosen").str.len_chars()).to_series()
    assert lengths.n_unique() > 1  # padding really happens in the batched run
    runs = {}
    saved = backend.batch_size
    try:
        for size in (4, 1):
            backend.batch_size = size  # the cache would hide the difference: a workspace each
            ctx = Context(workspace=Workspace(tmp_path / f"ws{size}"),
                          model_loader=lambda name: backend)
            runs[size] = get("ches_score")({})(frame.lazy(), ctx).collect()
            assert ctx.notes["calls"][0]["computed"] == frame.height
    finally:
        backend.batch_size = saved
    for column in ("ches_score", "ln_ches_score"):
        batched, single = runs[4][column].to_numpy(), runs[1][column].to_numpy()
        np.testing.assert_allclose(batched[:-1], single[:-1], rtol=1e-4)
        assert batched[-1] == single[-1] == 0.0  # identity: exactly 0
    assert runs[4][DROP].null_count() == frame.height
    paper = get("ches_score")({"variant": "paper_script"})(
        frame.lazy(), Context(workspace=Workspace(tmp_path / "ws4"),
                              model_loader=lambda name: backend)).collect()
    assert paper["ln_ches_score"][-1] == 0.0
    assert not np.allclose(paper["ches_score"][:-1], runs[4]["ches_score"][:-1])
    # eos: the states of the continuation are unchanged (causal), one EOS row is added, and
    # summing the predicting states with the EOS equals the paper script's sum without it
    prompt = frame["prompt"][0].to_list()
    plain, with_eos = (backend.hidden_states([prompt], [frame["chosen"][0]], eos=flag)[0]
                       for flag in (False, True))
    assert with_eos.shape[0] == plain.shape[0] + 1
    np.testing.assert_allclose(with_eos[:-1], plain, rtol=1e-4, atol=1e-4)

    def score(config: dict, name: str) -> pl.DataFrame:
        ctx = Context(workspace=Workspace(tmp_path / name), model_loader=lambda _: backend)
        return get("ches_score")(config)(frame.lazy(), ctx).collect()

    eos = score({"eos": True}, "eos")
    for column in ("ches_score", "ln_ches_score"):
        np.testing.assert_allclose(eos[column].to_numpy(), paper[column].to_numpy(),
                                   rtol=1e-4, atol=1e-3)
        assert not np.allclose(eos[column][:-1], runs[4][column][:-1])
    both = score({"eos": True, "variant": "sum_with_last_state"}, "both")
    assert not np.allclose(both["ches_score"][:-1], eos["ches_score"][:-1])
