"""The expected score over "1".."6" (deita, rubric judges) and the language detector."""

from __future__ import annotations

import math

import pytest

from workbench.language import detect_languages
from workbench.scores import expected_score


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


def test_languages_are_iso_codes_and_empty_is_none():
    got = detect_languages(["How do I bake sourdough bread at home?",
                            "Comment faire du pain au levain à la maison ?", "   ", None])
    assert got == ["EN", "FR", None, None]
