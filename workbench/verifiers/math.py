"""`math`: a response's final answer compared by value with a known answer.

Parsing and comparison are math-verify's (LaTeX and plain expressions to SymPy, then
numeric and symbolic equality); this module only decides which part of the text holds the
final answer, in this order, the first that is present:

1. `\\boxed{...}` (the last one; several boxed answers form a set, as math-verify reads them);
2. a GSM8K-style `#### N` line (the last one);
3. "the answer is ..." (the last one, up to the end of its sentence);
4. math-verify's LaTeX extraction on the whole text ("final answer is", "answer:", a
   `$...$` expression);
5. else the last number written in the text (`1,000`, `-3.5`, `18.00`). Plain-text arithmetic
   is not evaluated: "To solve 6 + 3, ..." must not pass for 9 because it restates the sum.

The ground truth may be a bare value (`18`, `1,000`, `0.5`), LaTeX (`\\frac{1}{2}`, with or
without `$...$`) or a whole GSM8K solution, of which the part after its last `####` counts.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from workbench.verifiers import Verdict, short

GSM8K_MARK = "####"
ANSWER_IS = re.compile(r"answer\s+is\s*:?", re.IGNORECASE)
SENTENCE_END = re.compile(r"\n|(?<!\d)\.(?!\d)|\.\s|\.$")
LAST_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
TIMEOUT_S = 5  # math-verify's own limit per parse and per comparison (main thread only)


def check(response: str, truth: str, **options: Any) -> Verdict:
    """Pass when the response's final answer equals the ground truth by value.

    Options: `float_rounding` (decimal places compared, default 6)."""
    if truth is None:
        return Verdict(False, "no ground truth")
    gold = _parse_truth(truth)
    if not gold:
        return Verdict(False, f"ground truth not understood: {short(truth)!r}")
    found = final_answer(response or "")
    if found is None:
        return Verdict(False, "no final answer found in the response")
    values, source = found
    shown = _shown(values)
    expected = _shown(gold)
    if _equal(gold, values, int(options.get("float_rounding", 6))):
        return Verdict(True, f"extracted {shown} from {source}; equals {expected}")
    return Verdict(False, f"extracted {shown} from {source}; expected {expected}")


def final_answer(response: str) -> tuple[list[Any], str] | None:
    """The parsed final answer (math-verify's values) and where it was found, or None."""
    from math_verify import LatexExtractionConfig

    if "\\boxed" in response:
        values = _parse(response, [LatexExtractionConfig(boxed_match_priority=0)])
        if values:
            return values, "\\boxed{}"
    if GSM8K_MARK in response:
        tail = response.rsplit(GSM8K_MARK, 1)[1].strip()
        values = _parse(tail.splitlines()[0] if tail else "")
        if values:
            return values, "'#### N'"
    hits = list(ANSWER_IS.finditer(response))
    if hits:
        rest = response[hits[-1].end():]
        end = SENTENCE_END.search(rest.strip())
        segment = rest.strip()[: end.start()] if end else rest.strip()
        values = _parse(segment)
        if values:
            return values, "'the answer is'"
    values = _parse(response, [LatexExtractionConfig()])
    if values:
        return values, "a LaTeX answer"
    numbers = LAST_NUMBER.findall(response)
    if numbers:
        values = _parse(numbers[-1].replace(",", ""))
        if values:
            return values, "the last number"
    return None


def _parse_truth(truth: str) -> list[Any]:
    text = str(truth)
    if GSM8K_MARK in text:
        text = text.rsplit(GSM8K_MARK, 1)[1].strip()
    return _parse(text) or _parse(f"${text.strip().strip('$')}$")


def _parse(text: str, config: list[Any] | None = None) -> list[Any]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    if not text.strip():
        return []
    extraction = config or [LatexExtractionConfig(), ExprExtractionConfig()]
    return list(parse(text, extraction, parsing_timeout=_timeout()))


def _equal(gold: list[Any], values: list[Any], float_rounding: int) -> bool:
    from math_verify import verify

    return bool(verify(gold, values, float_rounding=float_rounding, timeout_seconds=_timeout()))


def _timeout() -> int | None:
    """math-verify times itself out with SIGALRM, which only the main thread may use; other
    threads run without its limit (the inputs are cut to the final answer first, except in
    the last-number fallback)."""
    return TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


def _shown(values: list[Any]) -> str:
    """The answer as the text it was read from (math-verify keeps it as the last element)."""
    text = next((v for v in reversed(values) if isinstance(v, str)), None)
    return short(text if text is not None else str(values[0]), 40)
