"""Scores read off a model's next-token distribution (deita's scorers, rubric judges)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

DIGITS_1_6 = ("1", "2", "3", "4", "5", "6")


def expected_score(
    logprobs: Mapping[str, float] | None,
    labels: Sequence[str] = DIGITS_1_6,
    fallback: float | None = 3.0,
) -> float | None:
    """Σ i · softmax(z over the labels)_i with labels worth 1..N (deita's `infer_score`).

    Softmax is shift-invariant, so logits and log-probs give the same value. A missing or
    non-finite label (outside a server's top-k) gives `fallback`, deita's 3.0 by default;
    callers count those with `falls_back` (workbench never lets one pass silently).
    """
    if falls_back(logprobs, labels):
        return fallback
    values = [logprobs[label] for label in labels]  # type: ignore[index]
    top = max(values)  # type: ignore[type-var]
    weights = [math.exp(v - top) for v in values]  # type: ignore[operator]
    total = sum(weights)
    return sum(i * w for i, w in enumerate(weights, start=1)) / total


def falls_back(logprobs: Mapping[str, float] | None, labels: Sequence[str] = DIGITS_1_6) -> bool:
    """Whether `expected_score` would return its fallback: a label missing or not finite."""
    if not logprobs:
        return True
    values = [logprobs.get(label) for label in labels]
    return any(v is None or not math.isfinite(v) for v in values)
