"""`verify`: check every response against a ground-truth column, without a model.

Checkers (`workbench.verifiers`): `math` (final answer by value, math-verify), `code` (run
against the row's tests in the sandbox), `regex` and `json_schema` (format rules). Results
land where the kind keeps its answers:

- sft: `passed` (bool), `verify_detail`;
- candidates: `passed` (one bool per response), `pass_rate`, `verify_detail` (one per
  response);
- preference: `chosen_passed`, `rejected_passed`, `chosen_verify_detail`,
  `rejected_verify_detail`.

A null ground truth (or a null response) gives a null verdict with its reason as the detail,
counted as nulled. Reasoning traces (`reasoning`, `chosen_reasoning`, `rejected_reasoning`,
see `workbench.algorithms.reasoning`) are left out unless `include_reasoning`, which checks the reply
as written: the trace in `<think>` tags, then the answer.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any, Literal

import polars as pl
from pydantic import Field, model_validator

from workbench.algorithms.reasoning import CLOSE, OPEN, trace_column
from workbench.errors import PipelineError
from workbench.transform import Context, StepConfig, transform
from workbench.verifiers import CHECKERS, Verdict, checkers_digest
from workbench.verifiers.code import check_many

NO_TRUTH = "no ground truth"
NO_RESPONSE = "no response"
BINS = ("0", "(0, 0.25]", "(0.25, 0.5]", "(0.5, 0.75]", "(0.75, 1)", "1")


class VerifyConfig(StepConfig):
    checker: Literal["math", "code", "regex", "json_schema"] = Field(
        ..., description="math: final answer by value; code: run against tests; regex: the "
        "answer column holds a pattern; json_schema: it holds a JSON schema")
    answer: str | None = Field(None, description="column with the ground truth (math, regex, "
                               "json_schema)")
    tests: str | None = Field(None, description="code: column with the tests (HumanEval's "
                              "check(candidate), or assert lines)")
    entry_point: str | None = Field(None, description="code: column naming the function "
                                    "HumanEval's check() receives")
    match: Literal["search", "fullmatch"] = Field("search", description="regex: anywhere in "
                                                  "the response, or the whole (stripped) text")
    include_reasoning: bool = Field(False, description="check the reasoning trace (if a "
                                    "reasoning column exists) followed by the answer")
    timeout_s: float = Field(5.0, gt=0, le=600, description="code: wall-time limit per program")
    memory_mb: int = Field(1024, ge=64, description="code: address-space limit per program")
    workers: int | None = Field(None, ge=1, description="code: programs run at once "
                                "(default: twice the CPUs)")

    @model_validator(mode="after")
    def _columns_for_checker(self) -> VerifyConfig:
        if self.checker == "code":
            if not self.tests:
                raise ValueError("checker code needs `tests: COLUMN`")
            if self.answer:
                raise ValueError("checker code reads `tests:`, not `answer:`")
        else:
            if not self.answer:
                raise ValueError(f"checker {self.checker} needs `answer: COLUMN`")
            if self.tests or self.entry_point:
                raise ValueError("`tests:` and `entry_point:` are for checker code")
        return self

    def accepted_kinds(self) -> tuple[str, ...]:
        """Every kind that has responses (checked before a run)."""
        return ("sft", "candidates", "preference")


@transform("verify", scope="row", version=checkers_digest(), keeps_content=True)
def verify(frame: pl.LazyFrame, config: VerifyConfig, ctx: Context) -> pl.LazyFrame:
    """Check each response against the ground truth; passed, pass_rate and a detail."""
    data = frame.collect()
    truth_column = config.tests if config.checker == "code" else config.answer
    truth_field = "tests" if config.checker == "code" else "answer"
    _require(data, truth_column, truth_field)
    if config.entry_point:
        _require(data, config.entry_point, "entry_point")
    truths = [_truth(value) for value in data[truth_column].to_list()]
    entries = (data[config.entry_point].to_list() if config.entry_point
               else [None] * data.height)
    kind = _kind(data)
    sides = _sides(data, kind, config.include_reasoning)
    items = list(_flatten(sides))
    verdicts = _check(items, truths, entries, config)
    out = _attach(data, kind, sides, verdicts)
    missing = Counter(NO_RESPONSE if text is None else NO_TRUTH
                      for row, (prefix, slot), text in items
                      if verdicts[(row, prefix, slot)] is None)
    _report(out, kind, [v for v in verdicts.values() if v is not None], missing, config, ctx)
    return out.lazy()


def _require(data: pl.DataFrame, column: str | None, field: str) -> None:
    if column not in data.columns:
        raise PipelineError(f"{field}: no column {column!r} (columns: "
                            f"{', '.join(data.columns)})")


def _kind(data: pl.DataFrame) -> str:
    if "responses" in data.columns:
        return "candidates"
    if {"chosen", "rejected"} <= set(data.columns):
        return "preference"
    if "response" in data.columns:
        return "sft"
    raise PipelineError("verify needs responses: a response, responses, or chosen and "
                        f"rejected column (columns: {', '.join(data.columns)})")


def _truth(value: Any) -> str | None:
    """Ground truth as text: schemas stored as structs or lists become JSON."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _sides(data: pl.DataFrame, kind: str,
           include_reasoning: bool) -> dict[str, list[list[str | None]]]:
    """The texts checked, per output prefix: one list of texts per row (one text for sft
    and each side of a pair, every candidate for candidates)."""
    texts = {"sft": {"": "response"}, "candidates": {"": "responses"},
             "preference": {"chosen_": "chosen", "rejected_": "rejected"}}[kind]
    columns = {prefix: (text, trace_column(text)) for prefix, text in texts.items()}
    sides = {}
    for prefix, (answer, trace) in columns.items():
        answers = data[answer].to_list()
        traces = [None] * data.height
        if include_reasoning and trace in data.columns:
            listed = isinstance(data.schema[trace], pl.List)
            if listed != (kind == "candidates"):
                raise PipelineError(f"include_reasoning: column {trace!r} holds "
                                    f"{data.schema[trace]}, expected "
                                    f"{'a list of strings' if kind == 'candidates' else 'strings'}")
            traces = data[trace].to_list()
        if kind != "candidates":
            answers, traces = [[a] for a in answers], [[t] for t in traces]
        sides[prefix] = [[_with_trace(a, t[i] if t and i < len(t) else None)
                          for i, a in enumerate(row or [])]
                         for row, t in zip(answers, traces, strict=True)]
    return sides


def _with_trace(answer: str | None, trace: str | None) -> str | None:
    """The reply as the model wrote it: `<think>` block, then the answer (as `judge` shows
    it with `include_reasoning`, and export's `inline` mode writes it)."""
    if answer is None or not trace:
        return answer
    return f"{OPEN}\n{trace}\n{CLOSE}\n\n{answer}"


def _flatten(sides: dict[str, list[list[str | None]]]
             ) -> Iterator[tuple[int, tuple[str, int], str | None]]:
    """(row, (prefix, slot), text) for every text, in row order."""
    for prefix, rows in sides.items():
        for row, texts in enumerate(rows):
            for slot, text in enumerate(texts):
                yield row, (prefix, slot), text


def _check(items: list[tuple[int, tuple[str, int], str | None]], truths: list[str | None],
           entries: list[Any], config: VerifyConfig) -> dict[tuple[int, str, int], Verdict | None]:
    """Verdicts keyed by (row, prefix, slot); None where there is nothing to check."""
    verdicts: dict[tuple[int, str, int], Verdict | None] = {}
    todo = []
    for row, (prefix, slot), text in items:
        if truths[row] is None or text is None:
            verdicts[(row, prefix, slot)] = None
        else:
            todo.append(((row, prefix, slot), text, truths[row], entries[row]))
    if config.checker == "code":
        results = check_many([(text, truth, None if entry is None else str(entry))
                              for _, text, truth, entry in todo],
                             workers=config.workers, timeout_s=config.timeout_s,
                             memory_mb=config.memory_mb)
    else:
        check = CHECKERS[config.checker]
        options = {"match": config.match} if config.checker == "regex" else {}
        results = [check(text, truth, **options) for _, text, truth, _ in todo]
    for (key, *_), verdict in zip(todo, results, strict=True):
        verdicts[key] = verdict
    return verdicts


def _attach(data: pl.DataFrame, kind: str, sides: dict[str, list[list[str | None]]],
            verdicts: dict[tuple[int, str, int], Verdict | None]) -> pl.DataFrame:
    columns = []
    for prefix, rows in sides.items():
        passed, details = [], []
        for row, texts in enumerate(rows):
            found = [verdicts[(row, prefix, slot)] for slot in range(len(texts))]
            passed.append([None if v is None else v.passed for v in found])
            details.append([_why_none(texts[slot], v) for slot, v in enumerate(found)])
        if kind == "candidates":
            rates = [_rate(flags) for flags in passed]
            columns += [pl.Series("passed", passed, pl.List(pl.Boolean)),
                        pl.Series("pass_rate", rates, pl.Float64),
                        pl.Series("verify_detail", details, pl.List(pl.String))]
        else:
            columns += [pl.Series(f"{prefix}passed", [p[0] if p else None for p in passed],
                                  pl.Boolean),
                        pl.Series(f"{prefix}verify_detail", [d[0] if d else None for d in details],
                                  pl.String)]
    return data.with_columns(columns)


def _why_none(text: str | None, verdict: Verdict | None) -> str:
    if verdict is not None:
        return verdict.detail
    return NO_RESPONSE if text is None else NO_TRUTH


def _rate(flags: list[bool | None]) -> float | None:
    """Share of the checked responses that passed; null when none could be checked."""
    checked = [f for f in flags if f is not None]
    return sum(checked) / len(checked) if checked else None


def _report(out: pl.DataFrame, kind: str, verdicts: list[Verdict], missing: Counter[str],
            config: VerifyConfig, ctx: Context) -> None:
    """Counts that add up over batches, and the nulled verdicts by reason."""
    passed = sum(v.passed for v in verdicts)
    counts: dict[str, Any] = {"checked": len(verdicts), "passed": passed,
                              "failed": len(verdicts) - passed,
                              "no_ground_truth": missing[NO_TRUTH],
                              "no_response": missing[NO_RESPONSE]}
    for reason, n in missing.items():
        ctx.count_nulled(f"verify: {reason}", n)
    if kind == "preference":
        for side in ("chosen", "rejected"):
            counts[f"{side}_passed"] = int(out[f"{side}_passed"].sum())
    if kind == "candidates":
        counts["rows_by_pass_rate"] = _histogram(out["pass_rate"])
    ctx.report({"checker": config.checker})
    ctx.report_counts(counts)


def _histogram(rates: pl.Series) -> dict[str, int]:
    """Rows per pass-rate bin: 0, (0, .25], (.25, .5], (.5, .75], (.75, 1), 1."""
    counts = dict.fromkeys(BINS, 0)
    for rate in rates.drop_nulls().to_list():
        if rate <= 0:
            counts["0"] += 1
        elif rate >= 1:
            counts["1"] += 1
        else:
            counts[BINS[next(i for i, top in enumerate((0.25, 0.5, 0.75, 1.0), 1)
                             if rate <= top)]] += 1
    return counts
