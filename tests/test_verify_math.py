"""The `math` checker on real GSM8K problems: the final answer in every common layout passes
when it is right and fails when it is changed, with the original solution as ground truth."""

from __future__ import annotations

import itertools
import json

import pytest

from tests.conftest import DATA
from workbench.verifiers import CHECKERS, Verdict
from workbench.verifiers.math import check

LAYOUTS = [
    "Adding it up gives {n}.\n#### {n}",
    "So the total is \\boxed{{{n}}}.",
    "Step by step, 3 + 4 = 7 and so on. The answer is {n}.",
    "She ends up with {n}.00",
    "That costs ${n}",
]


def gsm8k(limit: int) -> list[dict]:
    with (DATA / "benchmarks" / "gsm8k_test.jsonl").open() as lines:
        return [json.loads(line) for line in itertools.islice(lines, limit)]


def test_every_layout_passes_when_right_and_fails_when_changed_on_250_gsm8k_problems():
    rows = gsm8k(250)
    assert len(rows) == 250
    failures = []
    for row in rows:
        value = row["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        wrong = str(int(value) + 7)
        for layout in LAYOUTS:
            right = check(layout.format(n=value), row["answer"])
            changed = check(layout.format(n=wrong), row["answer"])
            if not right.passed or changed.passed:
                failures.append((layout, value, right, changed))
    assert failures == []


def test_detail_says_what_was_extracted_and_why_it_failed():
    truth = gsm8k(1)[0]["answer"]  # Janet's ducks: #### 18
    assert check("She makes \\boxed{18} dollars.", truth) == Verdict(
        True, "extracted 18 from \\boxed{}; equals 18")
    failed = check("She makes 2 * 9 = 19 dollars.\n#### 19", truth)
    assert failed == Verdict(False, "extracted 19 from '#### N'; expected 18")
    assert check("I do not know.", truth) == Verdict(False, "no final answer found in the response")
    assert check("18", None) == Verdict(False, "no ground truth")


@pytest.mark.parametrize(("response", "truth", "passed"), [
    ("The answer is $1,000.", "1000", True),  # thousands separator and currency sign
    ("It costs 1,000 dollars", "#### 1,000", True),
    ("The answer is 18. Check: 2 + 3 = 5", "18", True),  # the stated answer, not a later number
    ("\\boxed{18} but later I say 19", "18", True),  # boxed wins over the last number
    ("The final answer is $\\frac{1}{2}$", "0.5", True),  # LaTeX against a decimal
    ("0.5", "\\frac{1}{2}", True),  # LaTeX truth without dollars
    ("so $x = \\sqrt{2}$", "\\sqrt{2}", True),  # LaTeX in a response needs delimiters
    ("so x = \\sqrt{2}", "\\sqrt{2}", False),
    ("The answer is 18.5.", "18", False),
    ("The answer is -3.", "#### 3", False),
])
def test_values_compare_by_value(response: str, truth: str, passed: bool):
    verdict = check(response, truth)
    assert verdict.passed is passed, verdict.detail


def test_math_is_listed_among_the_checkers():
    assert CHECKERS["math"] is check


def test_plain_text_arithmetic_is_not_evaluated() -> None:
    """The fallback reads the last number written, not a sum the response only restates."""
    from workbench.verifiers.math import check

    assert not check("To solve 6 + 3, add them.", "9").passed
    assert not check("Ex. 5 + 1 =", "6").passed
    assert check("so 3+4=7", "7").passed
    assert check("It costs 1,000 dollars.", "1000").passed
