"""deita: the Repr Filter against a plain reading of docs/methods.md §3.2, and the scorer prompts
on the real embedded model."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from realrows import embeddings, prompts

from workbench.algorithms.diversity import greedy_select
from workbench.registry import get
from workbench.transform import DROP, Context


def reference_select(vectors: np.ndarray, scores: np.ndarray, threshold: float, budget: int,
                     batch_size: int = 1) -> list[int]:
    """§3.2 as written: sort by score (stable), take row 0, then per batch reject rows that
    are > τ with a selected row or an earlier row of the batch; stop at the budget."""
    unit = vectors.astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    selected, kept = [order[0]], np.empty_like(unit)
    kept[0] = unit[order[0]]
    for start in range(1, len(order), batch_size):
        batch = order[start:start + batch_size]
        size = len(selected)  # rows kept before this batch
        for k, row in enumerate(batch):
            near_kept = (kept[:size] @ unit[row] > threshold).any()
            near_batch = k > 0 and (unit[batch[:k]] @ unit[row] > threshold).any()
            if not (near_kept or near_batch):
                selected.append(row)
        kept[size:len(selected)] = unit[selected[size:]]
        if budget > -1 and len(selected) >= budget:
            break
    return selected[:budget] if budget > -1 else selected


def select(frame: pl.DataFrame, **config) -> pl.DataFrame:
    ctx = Context()
    out = get("deita_select")(config)(frame.lazy(), ctx).collect()
    assert ctx.notes["report"]["selected"] == out[DROP].null_count()
    return out


@pytest.fixture(scope="module")
def real() -> pl.DataFrame:
    rows = prompts()
    # word counts as scores: many ties, so the stable tie-break is exercised too
    return rows.with_columns(pl.col("text").str.count_matches(r"\S+").cast(pl.Float64)
                             .alias("deita_score"),
                             pl.Series("embedding", embeddings()))


@pytest.mark.slow
@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.9])
def test_select_equals_the_reference_on_real_embeddings(real, threshold):
    assert real.height >= 2000
    scores = real["deita_score"].to_numpy()
    vectors = embeddings()
    for budget in (-1, 40, 700):
        expected = [real["id"][i] for i in reference_select(vectors, scores, threshold, budget)]
        out = select(real, threshold=threshold, budget=budget)
        kept = out.filter(pl.col(DROP).is_null())
        assert kept["id"].to_list() == expected, (threshold, budget)
        assert out.height == real.height  # nothing vanishes: every other row has a reason
        similar = out.filter(pl.col(DROP).str.starts_with("deita_select: cosine"))
        assert (similar["similarity"] > threshold).all()
        twins = similar.join(real.select("id", pl.col("embedding").alias("twin_vec")),
                             left_on="duplicate_of", right_on="id")
        assert twins.height == similar.height
        if twins.height:
            cosine = np.einsum("ij,ij->i", np.stack(twins["embedding"].to_list()),
                               np.stack(twins["twin_vec"].to_list()))
            np.testing.assert_allclose(cosine, twins["similarity"].to_numpy(), atol=1e-5)
        # small blocks: most rows meet the kept set, not just their own block
        order = np.argsort(-scores, kind="stable")
        small = greedy_select(vectors[order], threshold, budget, block=64).order
        assert real["id"].gather(order[small]).to_list() == expected


@pytest.mark.slow
def test_select_batch_rule_equals_the_reference(real):
    scores, vectors = real["deita_score"].to_numpy(), embeddings()
    batched = reference_select(vectors, scores, 0.6, -1, batch_size=16)
    assert batched != reference_select(vectors, scores, 0.6, -1)  # the rule matters here
    out = select(real, threshold=0.6, batch_size=16)
    assert out.filter(pl.col(DROP).is_null())["id"].to_list() == [real["id"][i] for i in batched]
    order = np.argsort(-scores, kind="stable")
    small = greedy_select(vectors[order], 0.6, batch_size=16, block=64).order
    assert order[small].tolist() == batched


def test_toy_embeddings_hand_computed():
    """2-D unit vectors at 0°, 20°, 40°, 90°: cos 20° = 0.94 > 0.9, cos 40° = 0.77."""
    angles = np.radians([0, 20, 40, 90])
    frame = pl.DataFrame({
        "id": ["a", "b", "c", "d"], "deita_score": [4.0, 3.0, 2.0, 2.0],
        "embedding": [[float(np.cos(t)), float(np.sin(t))] for t in angles],
    })
    out = select(frame)
    assert out.filter(pl.col(DROP).is_null())["id"].to_list() == ["a", "c", "d"]
    assert out.row(3, named=True)["duplicate_of"] == "a"  # b, rejected by a
    assert out.row(3, named=True)["similarity"] == pytest.approx(np.cos(np.radians(20)))
    # deita's batch rule: with b and c in one batch, c is rejected for b, which was not kept
    out = select(frame, batch_size=2)
    assert out.filter(pl.col(DROP).is_null())["id"].to_list() == ["a", "d"]
    assert out.filter(pl.col("id") == "c")["duplicate_of"].item() == "b"
    out = select(frame, budget=2)
    assert out.filter(pl.col(DROP).is_null())["id"].to_list() == ["a", "c"]
    assert out.filter(pl.col("id") == "d")[DROP].item() == "deita_select: beyond the budget of 2 rows"


def test_report_names_the_representation_the_embed_step_recorded():
    """τ means something else for MiniLM than for deita's CLM states: the report says which."""
    from transforms.embed import EmbedConfig, _made_by

    frame = pl.DataFrame({"id": ["a", "b"], "deita_score": [2.0, 1.0],
                          "embedding": [[1.0, 0.0], [0.0, 1.0]]})

    def representation(rows: pl.DataFrame) -> str:
        ctx = Context()
        get("deita_select")({})(rows.lazy(), ctx).collect()
        return ctx.notes["report"]["representation"]

    assert representation(frame) == "unknown ('embedding' was not made by an embed step)"
    for config, want in [
        (EmbedConfig(), "sentence:all-MiniLM-L6-v2 (over column prompt)"),
        (EmbedConfig(model="scorer"),
         "clm:scorer (last-token hidden state of the whole conversation in vicuna_v1.1)"),
    ]:
        assert representation(frame.with_columns(_made_by(config))) == want


def test_select_needs_numbers_and_vectors():
    frame = pl.DataFrame({"id": ["a"], "deita_score": ["high"], "embedding": [[1.0, 0.0]]})
    with pytest.raises(ValueError, match="not numbers"):
        select(frame)
    with pytest.raises(ValueError, match="no column 'vec'"):
        select(frame.with_columns(pl.lit(1.0).alias("deita_score")), embedding="vec")


@pytest.mark.slow
def test_deita_score_is_one_forward_per_prompt_on_the_embedded_model(tmp_path):
    import torch

    from transforms.deita import COMPLEXITY_TEMPLATE, QUALITY_TEMPLATE
    from workbench.algorithms.scores import expected_score
    from workbench.models import load_backend
    from workbench.models.spec import ModelSpec
    from workbench.workspace import Workspace

    backend = load_backend(ModelSpec(backend="transformers", model="embedded"))
    frame = pl.DataFrame({
        "id": ["multi", "single"],
        "prompt": [[{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Name a prime."},
                    {"role": "assistant", "content": "7"},
                    {"role": "user", "content": "Why is it prime?"}],
                   [{"role": "user", "content": "Say hello."}]],
        "response": ["Only 1 and 7 divide it.", "Hello!"],
    })
    ctx = Context(workspace=Workspace(tmp_path / "ws"), model_loader=lambda name: backend)
    out = get("deita_score")({})(frame.lazy(), ctx).collect()
    multi = out.row(0, named=True)
    assert len(multi["complexity_scores"]) == len(multi["quality_scores"]) == 2
    assert multi["complexity_score"] == multi["complexity_scores"][-1]
    expected_total = sum(c * q for c, q in zip(multi["complexity_scores"],
                                                multi["quality_scores"], strict=True))
    assert multi["deita_score"] == pytest.approx(expected_total)
    assert out[DROP].null_count() == 2

    # the first turn's scores, by hand: raw prompt, logits at the last position, digits 1..6
    tok = backend.tokenizer
    digits = [tok("123456"[i], add_special_tokens=False)["input_ids"][0] for i in range(6)]

    def by_hand(text: str) -> float:
        ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            logits = backend.model(input_ids=ids).logits[0, -1]
        return expected_score(dict(zip("123456", logits[digits].tolist(), strict=True)))

    complexity = by_hand(COMPLEXITY_TEMPLATE.format(instruction="Name a prime."))
    quality = by_hand(QUALITY_TEMPLATE.format(instruction="Name a prime.", output="7"))
    assert multi["complexity_scores"][0] == pytest.approx(complexity, abs=1e-4)
    assert multi["quality_scores"][0] == pytest.approx(quality, abs=1e-4)
    assert 1 < complexity < 6 and 1 < quality < 6
