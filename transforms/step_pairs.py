"""`step_pairs`: Step-DPO's step-level pairs from a model's wrong solutions (docs/methods.md
§16.4).

A solution that fails the `math` checker is split into steps (`split_steps`). From each prefix
of correct-so-far steps (none, the first, the first two, ...) the model samples `samples`
continuations, and each prefix + continuation is checked. The first step after which no
continuation verifies any more is the wrong one: the pair is (prompt, prefix, chosen = the
first step of a continuation from the prefix that verifies, rejected = that wrong step), with
`step_index` = the number of steps in the prefix. Step-DPO locates the step with GPT-4 and
rectifies it by sampling from the prefix; here the same sampling locates it, so no judge is
needed and every label is a checked one.

The prompt must end with a user turn (the workbench's preference kind), so the prefix is not
appended to it as in Step-DPO's training text: both `chosen` and `rejected` start with it
instead. Under DPO's loss the prefix's log-ratio is equal on both sides and cancels, so the
default export trains on exactly Step-DPO's objective; `--trl step-dpo` writes the
reference's own records (prompt, initial_reason_steps, chosen step, rejected step).
Continuations are prefills of the assistant turn, made through `ctx.call` (cached, resumable).
"""

from __future__ import annotations

import re
from typing import Any, Literal

import polars as pl
from pydantic import Field

from workbench.transform import DROP, QUARANTINED, Context, ModelStep, Seeded, transform

MARKER = re.compile(r"^[ \t]*(?:\*\*)?step\s*\d+\s*[:.)]", re.IGNORECASE | re.MULTILINE)
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")
QUARANTINE_REASON = f"{QUARANTINED} (quarantined)"
Split = Literal["auto", "markers", "lines", "sentences"]


class StepPairsConfig(ModelStep, Seeded):
    answer: str = Field("answer", description="ground-truth column (a value, LaTeX, or a "
                        "GSM8K solution ending in '#### N'), checked by the math checker")
    solution: str = Field("response", description="the model's solution to examine")
    split: Split = Field("auto", description="how a solution is cut into steps: 'Step k:' "
                         "markers, lines, sentences, or auto (markers, else lines, else "
                         "sentences)")
    samples: int = Field(4, ge=1, description="continuations sampled from each prefix "
                         "(Step-DPO samples 20 corrections per prefix)")
    pairs_per_step: int = Field(1, ge=1, description="most pairs per wrong step, each with a "
                                "different correct next step")
    max_steps: int = Field(12, ge=1, description="solutions with more steps are dropped")
    temperature: float = Field(0.8, gt=0, description="Step-DPO samples at 0.8")
    top_p: float = Field(0.95, gt=0, le=1, description="Step-DPO samples with top_p 0.95")
    max_new_tokens: int = Field(256, ge=1, description="token cap of each continuation")


def split_steps(text: str, how: Split = "auto") -> list[str]:
    """`text` cut into steps whose concatenation is `text` exactly (each step keeps the
    whitespace after it; leading whitespace joins the first step). markers: before each line
    starting 'Step k:' (a preamble is its own step); lines: after each newline, blank lines
    joining the step before; sentences: after '.', '!' or '?' and the spaces that follow."""
    how = resolved_split(text, how)
    if how == "markers":
        cuts = [m.start() for m in MARKER.finditer(text)]
    elif how == "lines":
        cuts = [m.end() for m in re.finditer(r"\n\s*(?=\S)", text)]
    else:
        cuts = [m.end() for m in SENTENCE_END.finditer(text)]
    start = len(text) - len(text.lstrip())
    bounds = [0, *sorted({c for c in cuts if start < c < len(text)}), len(text)]
    steps = [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
    return steps or [text]


def resolved_split(text: str, how: Split) -> Split:
    """The splitting `auto` picks for `text` (a solution's continuations are cut as it is)."""
    if how != "auto":
        return how
    return ("markers" if len(MARKER.findall(text)) >= 2 else
            "lines" if len([line for line in text.splitlines() if line.strip()]) >= 2 else
            "sentences")


class _Search:
    """One solution's walk along its prefixes: the passing continuations seen at the last
    prefix that still had some, and the outcome once known."""

    def __init__(self, steps: list[str], how: Split) -> None:
        self.steps, self.how = steps, how
        self.k = 0  # steps in the prefix tried next
        self.passing: list[str] = []  # verifying continuations from prefix_{k-1}
        self.outcome: str | None = None  # a drop reason, or "found"

    def prefix(self, k: int) -> str:
        return "".join(self.steps[:k])


@transform("step_pairs", scope="row", consumes="sft", produces="preference",
           needs=("generate",))
def step_pairs(frame: pl.LazyFrame, config: StepPairsConfig, ctx: Context) -> pl.LazyFrame:
    """Step-level pairs at the first wrong step of each solution that fails its check."""
    data = frame.collect()
    for column in (config.answer, config.solution):
        if column not in data.columns:
            raise ValueError(f"step_pairs: no column {column!r} (columns: "
                             f"{', '.join(data.columns)})")
    from workbench.verifiers.math import check

    truths = data[config.answer].cast(pl.String).to_list()
    solutions = data[config.solution].to_list()
    searches: list[_Search | None] = []
    reasons: list[str | None] = []
    for truth, solution in zip(truths, solutions, strict=True):
        search, reason = None, None
        if truth is None:
            reason = "no ground truth"
        elif not solution or not solution.strip():
            reason = "no solution to examine"
        elif check(solution, truth).passed:
            reason = "solution verifies: no wrong step"
        else:
            how = resolved_split(solution, config.split)
            steps = split_steps(solution, how)
            if len(steps) > config.max_steps:
                reason = f"more than {config.max_steps} steps"
            else:
                search = _Search(steps, how)
        searches.append(search)
        reasons.append(reason)
    checked = _walk(data, searches, reasons, truths, config, ctx)
    out = _rows(data, searches, reasons, config)
    found = out.filter(pl.col(DROP).is_null())
    ctx.report_counts({
        "wrong_solutions": sum(s is not None for s in searches),
        "continuations_checked": checked, "pairs": found.height,
        "pairs_by_step_index": {str(k): n for k, n in
                                found.group_by("step_index").len().iter_rows()}})
    return out.lazy()


def _walk(data: pl.DataFrame, searches: list[_Search | None], reasons: list[str | None],
          truths: list[str | None], config: StepPairsConfig, ctx: Context) -> int:
    """Advance every open search one prefix per round, one batched model call per round;
    returns how many continuations were checked."""
    from workbench.models.base import SamplingParams
    from workbench.verifiers.math import check

    params = SamplingParams(n=config.samples, temperature=config.temperature, top_p=config.top_p,
                            max_new_tokens=config.max_new_tokens,
                            seed=config.seed_or(ctx))
    prompts, ids = data["prompt"].to_list(), data["id"].to_list()
    checked = 0
    while True:
        open_rows = [i for i, s in enumerate(searches) if s is not None and s.outcome is None]
        if not open_rows:
            return checked
        asking = []
        for i in open_rows:
            search = searches[i]
            if search.k == len(search.steps):  # the whole solution, known to fail
                _no_pass(search, reasons, i)
            else:
                asking.append(i)
        if not asking:
            continue
        inputs = []
        for i in asking:
            search = searches[i]
            prefix = search.prefix(search.k)
            inputs.append(list(prompts[i]) + ([{"role": "assistant", "content": prefix}]
                                              if prefix else []))
        results = ctx.call(config.model, "generate", inputs, params,
                           row_ids=[ids[i] for i in asking],
                           sample_ids=[f"{ids[i]}:prefix{searches[i].k}" for i in asking],
                           batch_size=config.batch_size)
        for i, result in zip(asking, results, strict=True):
            search = searches[i]
            if result is None:
                search.outcome, reasons[i] = "failed", QUARANTINE_REASON
                continue
            prefix = search.prefix(search.k)
            checked += len(result)
            passing = [g.text for g in result if g.text.strip()
                       and check(prefix + g.text, truths[i]).passed]
            if passing:
                search.passing, search.k = passing, search.k + 1
            else:
                _no_pass(search, reasons, i)


def _no_pass(search: _Search, reasons: list[str | None], i: int) -> None:
    """No continuation verifies from prefix_k: step k-1 is the wrong one (k > 0)."""
    if search.k == 0:
        search.outcome = "dropped"
        reasons[i] = "no continuation from the question verifies"
    else:
        search.outcome = "found"


def _rows(data: pl.DataFrame, searches: list[_Search | None], reasons: list[str | None],
          config: StepPairsConfig) -> pl.DataFrame:
    """One output row per pair, and each row without a pair once with its drop reason."""
    records: list[dict[str, Any]] = []
    for i, search in enumerate(searches):
        if search is None or search.outcome != "found":
            records.append({"_row": i, DROP: reasons[i] or "no wrong step found"})
            continue
        index = search.k - 1
        prefix, wrong = search.prefix(index), search.steps[index]
        seen = {wrong.strip()}
        made = 0
        for continuation in search.passing:
            step = split_steps(continuation, search.how)[0]
            if step.strip() in seen:
                continue
            seen.add(step.strip())
            made += 1
            records.append({
                "_row": i, "prefix": prefix, "step_index": index, "chosen_step": step,
                "rejected_step": wrong, "chosen": prefix + step, "rejected": prefix + wrong,
                "chosen_full": prefix + continuation,
                "rejected_full": data[config.solution][i],
                "chosen_passed": True, "rejected_passed": False,
                "pair_method": "step_pairs", DROP: None})
            if made == config.pairs_per_step:
                break
        if not made:
            records.append({"_row": i, DROP: "every verifying continuation repeats the wrong step"})
    schema = {"_row": pl.Int64, "prefix": pl.String, "step_index": pl.Int64,
              "chosen_step": pl.String, "rejected_step": pl.String, "chosen": pl.String,
              "rejected": pl.String, "chosen_full": pl.String, "rejected_full": pl.String,
              "chosen_passed": pl.Boolean, "rejected_passed": pl.Boolean,
              "pair_method": pl.String, DROP: pl.String}
    made_rows = pl.DataFrame(records, schema=schema)
    rest = data.drop(*(c for c in schema if c in data.columns and c != "_row"))
    return (made_rows.join(rest.with_row_index("_row").with_columns(pl.col("_row").cast(pl.Int64)),
                           on="_row", how="left", maintain_order="left").drop("_row"))
