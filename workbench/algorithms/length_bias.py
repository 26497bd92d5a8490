"""How much a preference dataset rewards length: AlpacaEval's length-controlled GLM, applied
to chosen/rejected pairs (docs/methods.md §7.6).

Each pair enters twice, (chosen, rejected) labelled 1 and swapped labelled 0 (a tie is 0.5
both ways), and a logistic model without intercept is fitted:

    logit P(A preferred) = φ · tanh((len_A − len_B) / sd)

with sd the sample standard deviation of the length differences over that symmetric design.
The duplication keeps position out of it; the design's likelihood is twice the one-sided
soft-label likelihood, which is what is maximised (Newton, a tiny ridge for separable data).
Read-outs: φ with a percentile bootstrap interval over prompts (pairs sharing a prompt are
resampled together), σ(φ·tanh(1)), the preference probability for a +1 SD length advantage,
and the share of pairs whose chosen response is longer. Lengths are the answers'; reasoning
traces are reported apart (`report`).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import polars as pl

RIDGE = 1e-3  # keeps φ finite when every pair points the same way; negligible otherwise


def fit_phi(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None,
            iterations: int = 100) -> np.ndarray:
    """Maximum-likelihood φ of P(y) = σ(φ·x), one per row of `weights` (bootstrap counts),
    vectorised over the rows."""
    w = np.ones((1, len(x))) if weights is None else np.atleast_2d(weights).astype(np.float64)
    phi = np.zeros(w.shape[0])
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-phi[:, None] * x[None, :]))
        grad = (w * (y - p) * x).sum(1) - RIDGE * phi
        hess = (w * p * (1 - p) * x * x).sum(1) + RIDGE
        step = grad / hess
        phi = phi + step
        if np.abs(step).max() < 1e-10:
            break
    return phi


def length_bias(chosen_len: np.ndarray, rejected_len: np.ndarray,
                labels: np.ndarray | None = None, groups: np.ndarray | None = None,
                bootstrap: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """The report for pairs with these lengths; `labels` 1 (chosen preferred) or 0.5 (tie),
    `groups` the prompt of each pair (bootstrap unit)."""
    chosen_len = np.asarray(chosen_len, dtype=np.float64)
    delta = chosen_len - np.asarray(rejected_len, dtype=np.float64)
    n = len(delta)
    if n == 0:
        raise ValueError("no pairs to fit")
    y = np.ones(n) if labels is None else np.asarray(labels, dtype=np.float64)
    sd = math.sqrt(2 * float((delta**2).sum()) / (2 * n - 1)) if n > 0 else 0.0
    x = np.tanh(delta / sd) if sd > 0 else np.zeros(n)
    phi = float(fit_phi(x, y)[0])
    low = high = phi
    if bootstrap > 0:
        boot = _bootstrap(x, y, groups, bootstrap, seed)
        low, high = (float(v) for v in np.quantile(boot, [(1 - level) / 2, (1 + level) / 2]))
    return {
        "coef": phi, "ci_low": low, "ci_high": high,
        "share_chosen_longer": float((delta > 0).mean()),
        "share_same_length": float((delta == 0).mean()),
        "p_at_plus_1sd": 1 / (1 + math.exp(-phi * math.tanh(1.0))),
        "n": n, "sd_length": sd, "ties": int((y != 1).sum()),
        "bootstrap": bootstrap, "level": level,
    }


def _bootstrap(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None, replicates: int,
               seed: int, chunk: int = 64) -> np.ndarray:
    """φ refitted on `replicates` resamples of the groups (with replacement)."""
    if groups is None:
        groups = np.arange(len(x))
    _, group = np.unique(groups, return_inverse=True)
    count = group.max() + 1
    rng = np.random.default_rng(seed)
    out = []
    for lo in range(0, replicates, chunk):
        k = min(chunk, replicates - lo)
        drawn = rng.integers(0, count, size=(k, count))
        per_group = np.zeros((k, count))
        np.add.at(per_group, (np.repeat(np.arange(k), count), drawn.ravel()), 1)
        out.append(fit_phi(x, y, per_group[:, group]))
    return np.concatenate(out)


def report(frame: pl.DataFrame, unit: Literal["chars", "words"] = "chars",
           bootstrap: int = 1000, seed: int = 0,
           include_reasoning: bool = False) -> dict[str, Any]:
    """The length-bias report of a preference dataset (`chosen`, `rejected`, `prompt`, and a
    boolean `tie` column where it exists).

    The fit measures the answers (`chosen`, `rejected`), or with `include_reasoning` each
    answer plus its trace. `answer_length` gives the answers' mean lengths; where the pairs
    have traces (`chosen_reasoning`, `rejected_reasoning`), `reasoning_length` gives the
    traces' mean lengths and the same fit on trace length alone (a missing trace is 0)."""
    for column in ("chosen", "rejected"):
        if column not in frame.columns:
            raise ValueError(f"length bias needs preference pairs: no column {column!r}")

    def length(column: str) -> pl.Expr:
        if column not in frame.columns:
            return pl.lit(0, pl.UInt32)
        text = pl.col(column).fill_null("")
        return text.str.len_chars() if unit == "chars" else text.str.count_matches(r"\S+")

    tie = (pl.col("tie").fill_null(False) if "tie" in frame.columns
           else pl.lit(False)).cast(pl.Boolean)
    group = pl.col("prompt").hash(seed=0) if "prompt" in frame.columns else pl.int_range(pl.len())
    cols = frame.select(length("chosen").alias("c"), length("rejected").alias("r"),
                        length("chosen_reasoning").alias("tc"),
                        length("rejected_reasoning").alias("tr"),
                        pl.when(tie).then(0.5).otherwise(1.0).alias("y"), group.alias("g"))
    measured = (cols["c"] + cols["tc"], cols["r"] + cols["tr"]) if include_reasoning else (
        cols["c"], cols["r"])
    y, g = cols["y"].to_numpy(), cols["g"].to_numpy()
    result = length_bias(measured[0].to_numpy(), measured[1].to_numpy(), y, g,
                         bootstrap=bootstrap, seed=seed)
    out = {**result, "unit": unit,
           "measured": "answer and reasoning" if include_reasoning else "answer",
           "answer_length": _means(cols["c"], cols["r"])}
    traces = [pl.col(c).is_not_null() for c in ("chosen_reasoning", "rejected_reasoning")
              if c in frame.columns]
    traced = frame.select(pl.any_horizontal(traces).sum()).item() if traces else 0
    if traced:
        fit = length_bias(cols["tc"].to_numpy(), cols["tr"].to_numpy(), y, g,
                          bootstrap=bootstrap, seed=seed)
        out["reasoning_length"] = {
            **_means(cols["tc"], cols["tr"]), "pairs_with_trace": int(traced),
            **{k: fit[k] for k in ("coef", "ci_low", "ci_high", "p_at_plus_1sd",
                                   "share_chosen_longer", "sd_length")}}
    return out


def _means(chosen: pl.Series, rejected: pl.Series) -> dict[str, float]:
    return {"chosen_mean": float(chosen.mean() or 0.0), "rejected_mean": float(rejected.mean() or 0.0)}
