"""The expected score over "1".."6" (deita, rubric judges) and the language detector."""

from __future__ import annotations

import math

import pytest

from workbench.algorithms.language import detect_languages
from workbench.algorithms.scores import expected_score, falls_back
from workbench.models.breaker import Breaker, FailurePolicy, TooManyFallbacks
from workbench.transform import Context


def test_expected_score_known_answers():
    assert expected_score({str(i): 0.0 for i in range(1, 7)}) == pytest.approx(3.5)
    assert expected_score({str(i): float(i) for i in range(1, 7)}) == pytest.approx(5.43293, abs=1e-5)
    # log-probs and logits differ by a constant per position: same score
    shifted = {str(i): float(i) - 42.0 for i in range(1, 7)}
    assert expected_score(shifted) == pytest.approx(5.43293, abs=1e-5)


def test_missing_label_falls_back_like_deita():
    partial = {str(i): 0.0 for i in range(1, 6)}
    assert expected_score(partial) == 3.0
    assert expected_score({**partial, "6": -math.inf}) == 3.0
    assert expected_score(None, fallback=None) is None
    assert expected_score({"1": 0.0, "2": 0.0, "3": 0.0}, labels=("1", "2", "3")) == pytest.approx(2.0)


def test_falls_back_says_when_the_fallback_is_used():
    full = {str(i): -float(i) for i in range(1, 7)}
    assert not falls_back(full)
    assert falls_back({**full, "6": -math.inf}) and falls_back({}) and falls_back(None)
    assert falls_back({k: v for k, v in full.items() if k != "3"})


def test_fallbacks_are_noted_by_reason_and_stop_the_step_past_the_rate():
    ctx = Context(breaker=Breaker(FailurePolicy(), where="step 2 (deita_score)"))
    ctx.count_fallbacks("digit missing", 1, 20)  # 5%: not more than the default rate
    ctx.count_fallbacks("digit missing", 0, 20)
    assert ctx.notes["fallbacks"] == {"digit missing": 1}
    with pytest.raises(TooManyFallbacks, match=r"step 2 \(deita_score\): 4 of 42 scores fell "
                                               r"back to a default \(more than 5%\): digit "
                                               r"missing: 1; other: 3"):
        ctx.count_fallbacks("other", 3, 2)
    assert ctx.notes["fallbacks"] == {"digit missing": 1, "other": 3}  # noted before stopping
    never = Context(breaker=Breaker(FailurePolicy(max_fallback_rate=1.0)))
    never.count_fallbacks("all of them", 10, 10)
    assert never.notes["fallbacks"] == {"all of them": 10}


@pytest.mark.slow
def test_languages_are_iso_codes_and_empty_is_none():
    got = detect_languages(["How do I bake sourdough bread at home?",
                            "Comment faire du pain au levain à la maison ?", "   ", None])
    assert got == ["EN", "FR", None, None]
