"""CHES, Centered Hidden Embedding Similarity (Razin et al., ICLR 2025; docs/methods.md §4).

With h(x, y<k) the policy's last-layer hidden state at the position predicting y_k (the last
prompt token for k = 1), S± = Σ_k h(x, y±<k) and

    CHES    = ⟨S⁺, S⁻⟩ − ‖S⁺‖²
    LN-CHES = ⟨S⁺, S⁻⟩ / (|y⁺|·|y⁻|) − ‖S⁺‖² / |y⁺|²

A high score means chosen and rejected look alike to the model: the pair risks likelihood
displacement. The variant names say what is summed over a continuation of n tokens:
`sum_predicting_states` (alias `definition`) the n states that predict its tokens, length n;
`sum_with_last_state` (alias `paper_script`, what produced the paper's numbers) also the state
at its last token, length n + 1. `eos: true` appends the tokenizer's EOS to each continuation
first (one more token), as DPO inputs end: `ches.py` on such inputs sums what
`sum_predicting_states` with `eos: true` sums. Prompt and response are tokenized once (the
backend finds the boundary by offsets; the script tokenized the query apart). Compute it with
the model you will train.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import polars as pl
from pydantic import Field, field_validator, model_validator

from workbench.transform import (
    DROP,
    QUARANTINED,
    Context,
    ModelName,
    ModelStep,
    StepConfig,
    transform,
)

VARIANTS = {"definition": "sum_predicting_states", "paper_script": "sum_with_last_state"}


def ches(plus: np.ndarray, n_plus: np.ndarray, minus: np.ndarray,
         n_minus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(CHES, LN-CHES) per row of the summed states S⁺, S⁻ (rows x dim) and their lengths.
    A pair with identical sides gives exactly 0; LN-CHES is NaN where a side has no token."""
    plus, minus = np.atleast_2d(plus), np.atleast_2d(minus)
    n_plus = np.asarray(n_plus, dtype=np.float64)
    n_minus = np.asarray(n_minus, dtype=np.float64)
    cross = np.einsum("ij,ij->i", plus, minus)
    own = np.einsum("ij,ij->i", plus, plus)
    with np.errstate(divide="ignore", invalid="ignore"):
        normalized = cross / (n_plus * n_minus) - own / (n_plus * n_plus)
    return cross - own, np.where((n_plus > 0) & (n_minus > 0), normalized, np.nan)


class ChesScoreConfig(ModelStep):
    model: ModelName = Field("default", description="the policy you will train (hidden_states)")
    variant: Literal["sum_predicting_states", "sum_with_last_state"] = Field(
        "sum_predicting_states", description="sum_predicting_states (alias definition): the "
        "states that predict the continuation's tokens, length n; sum_with_last_state (alias "
        "paper_script): also the last token's state, length n + 1, as the paper's script did")
    eos: bool = Field(False, description="append the tokenizer's EOS to each continuation "
                      "(one more token to predict), as DPO inputs end")
    batch_size: int = Field(8, ge=1, description="pairs per model call")

    @field_validator("variant", mode="before")
    @classmethod
    def _old_names(cls, value: object) -> object:
        return VARIANTS.get(value, value) if isinstance(value, str) else value


@transform("ches_score", scope="row", consumes="preference", needs=("hidden_states",),
           keeps_content=True)
def ches_score(frame: pl.LazyFrame, config: ChesScoreConfig, ctx: Context) -> pl.LazyFrame:
    """Adds `ches_score` and `ln_ches_score`: one batched forward per side (chosen, then
    rejected), the states summed on the device and cached pooled, never per token."""
    data = frame.collect()
    prompts, ids = data["prompt"].to_list(), data["id"].to_list()
    sides = []
    for column in ("chosen", "rejected"):
        items = list(zip(prompts, data[column].fill_null("").to_list(), strict=True))
        options = {"pool": "sum", "eos": True} if config.eos else {"pool": "sum"}
        sides.append(ctx.call(config.model, "hidden_states", items, options,
                              row_ids=ids, batch_size=config.batch_size))
    ok = np.array([a is not None and b is not None for a, b in zip(*sides, strict=True)])
    dim = next((r["sum"].shape[0] for side in sides for r in side if r is not None), 0)
    (plus, n_plus), (minus, n_minus) = (pool_sides(side, config.variant, dim) for side in sides)
    score, normalized = ches(plus, n_plus, minus, n_minus)
    out = data.with_columns(
        pl.Series("ches_score", np.where(ok, score, np.nan)).fill_nan(None),
        pl.Series("ln_ches_score", np.where(ok, normalized, np.nan)).fill_nan(None),
    )
    reason = pl.when(~pl.Series(ok)).then(pl.lit(f"{QUARANTINED} (quarantined)"))
    if DROP in out.columns:
        reason = pl.coalesce(pl.col(DROP), reason)
    return out.with_columns(reason.alias(DROP)).lazy()


def pool_sides(results: list, variant: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """S (rows x dim) and lengths from the backend's pooled results (`sum_states`: the sum of
    the n predicting states, the last token's state, n), None where a call failed."""
    variant = VARIANTS.get(variant, variant)
    if variant not in VARIANTS.values():
        raise ValueError(f"unknown CHES variant {variant!r}")
    empty = {"sum": np.zeros(dim), "last": np.zeros(dim), "tokens": 0}
    rows = [empty if r is None else r for r in results]
    total = np.stack([r["sum"] for r in rows]) if rows else np.zeros((0, dim))
    lengths = np.array([r["tokens"] for r in rows], dtype=np.float64)
    if variant == "sum_with_last_state":  # the last token's state, and one more position
        total = total + (np.stack([r["last"] for r in rows]) if rows else 0.0)
        lengths = lengths + 1
    return total, lengths


class ChesFilterConfig(StepConfig):
    by: Literal["ln_ches_score", "ches_score"] = Field("ln_ches_score")
    drop_fraction: float | None = Field(None, ge=0, le=1, description="drop this share of "
                                        "the rows with the highest scores (rounded down)")
    keep: int | None = Field(None, ge=0, description="keep only this many lowest-score rows "
                             "(the paper's unalignment setting kept the lowest ~5%)")

    @model_validator(mode="after")
    def _one_rule(self) -> ChesFilterConfig:
        if (self.drop_fraction is None) == (self.keep is None):
            raise ValueError("give exactly one of drop_fraction or keep")
        return self


@transform("ches_filter", scope="global", consumes="preference", keeps_content=True)
def ches_filter(frame: pl.LazyFrame, config: ChesFilterConfig, ctx: Context) -> pl.LazyFrame:
    """Drops the most similar pairs by CHES; ties keep input order, rows without a score go."""
    data = frame.collect()
    if config.by not in data.columns:
        raise ValueError(f"no column {config.by!r}: run ches_score first")
    scored = data[config.by].is_not_null().sum()
    keep = (config.keep if config.keep is not None
            else scored - math.floor(config.drop_fraction * scored + 1e-9))  # type: ignore[operator]
    rank = pl.col(config.by).rank("ordinal")  # ascending, ties by position; nulls stay null
    reason = (pl.when(pl.col(config.by).is_null()).then(pl.lit(f"ches_filter: no {config.by}"))
              .when(rank > keep)
              .then(pl.lit(f"ches_filter: not among the {keep} lowest {config.by}")))
    out = data.with_columns(reason.alias(DROP))
    kept = out.filter(pl.col(DROP).is_null())[config.by]
    ctx.report({"by": config.by, "scored": int(scored), "kept": kept.len(),
                           "highest_kept": kept.max()})
    return out.lazy()
