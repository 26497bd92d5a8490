"""`generate`: the model answers each prompt (SFT responses, or n candidates per prompt).

Garbage answers (empty, stuck in a loop) are not passed on: a single answer drops its row
with the reason; among n samples the bad ones are removed and counted in the run log.
A reasoning trace (a leading `<think>` block, or a server's `reasoning_content`) is kept
apart in `reasoning` (a list beside `responses`); the answer alone is checked for garbage,
the trace for loops.

`into: generated` writes the one answer to another column and takes sft rows too, keeping
their own `response`: SPIN's pairs (`pairs: {method: sft_vs_generated}`) set the dataset's
answer against the model's.
"""

from __future__ import annotations

from typing import Any

import polars as pl
from pydantic import Field, model_validator

from transforms._support.garbage import REPETITION, garbage
from workbench.algorithms.reasoning import split_texts
from workbench.transform import (
    DROP,
    QUARANTINED,
    Context,
    ModelStep,
    Seeded,
    transform,
)

QUARANTINE_REASON = f"{QUARANTINED} (quarantined)"
# columns `into` may not name: the kinds' own, and what `generate` writes beside them
RESERVED = frozenset({"id", "prompt", "responses", "chosen", "rejected", "parent_id",
                      "reasoning", "finish_reason", "completion_tokens", DROP})


class GenerateConfig(ModelStep, Seeded):
    n: int = Field(1, ge=1, description="samples per prompt; n > 1 makes candidates")
    temperature: float = Field(0.0, ge=0, description="0 is greedy")
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(4096, ge=1, description="answer length cap (reference: Magpie's "
                                "gen_res.py and gen_po_multi_res.py, 4,096)")
    stop: list[str] = Field(default_factory=list, description="stop strings")
    min_samples: int = Field(2, ge=1, description="with n > 1: fewest usable samples to keep a row")
    drop_truncated: bool = Field(False, description="with n > 1: remove samples cut off at "
                                 "max_new_tokens (finish_reason length), counted; the reference "
                                 "keeps them")
    into: str = Field("response", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                      description="n: 1: the column the answer goes to; another name (e.g. "
                      "`generated`, for SPIN's pairs) also takes sft rows and keeps their "
                      "response")

    @model_validator(mode="after")
    def _samples_differ(self) -> GenerateConfig:
        if self.n > 1 and self.temperature == 0:
            raise ValueError(f"n={self.n} samples at temperature 0 would all be the same greedy "
                             "answer: set temperature > 0 (e.g. 0.8) or n: 1")
        if self.into != "response" and self.n > 1:
            raise ValueError(f"into: {self.into!r} holds one answer; n={self.n} samples make "
                             "candidates (leave `into` unset)")
        if self.into in RESERVED:
            raise ValueError(f"into: {self.into!r} is a column rows already have a meaning for; "
                             "choose another name (e.g. generated)")
        return self

    def output_kind(self, input_kind: str) -> str:
        if self.n > 1:
            return "candidates"
        return "sft" if self.into == "response" else input_kind

    def accepted_kinds(self) -> tuple[str, ...] | None:
        """An answer beside the row's own (`into`) may go on sft rows too."""
        return None if self.into == "response" else ("instruction", "sft")


@transform("generate", scope="row", consumes="instruction", produces="sft",
           needs=("generate",))
def generate(frame: pl.LazyFrame, config: GenerateConfig, ctx: Context) -> pl.LazyFrame:
    """Chat-template each prompt, sample n replies; a failed call quarantines its row.

    Rows are sampled independently (keyed by row id), so two rows with the same prompt get
    their own samples at temperature > 0.
    """
    return answer(frame.collect(), config, ctx, candidates=config.n > 1).lazy()


class SampleConfig(GenerateConfig):
    n: int = Field(5, ge=2, description="responses per prompt (Magpie-DPO samples 5)")
    temperature: float = Field(0.8, gt=0, description="Magpie-DPO samples at 0.8")

    def output_kind(self, input_kind: str) -> str:
        return "candidates"


@transform("sample_responses", scope="row", consumes="instruction", produces="candidates",
           needs=("generate",))
def sample_responses(frame: pl.LazyFrame, config: SampleConfig, ctx: Context) -> pl.LazyFrame:
    """N seeded responses per prompt (candidates), resumable through the call cache; rows
    with fewer than `min_samples` usable responses are dropped with the reason."""
    return answer(frame.collect(), config, ctx, candidates=True).lazy()


def answer(data: pl.DataFrame, config: GenerateConfig, ctx: Context,
           candidates: bool) -> pl.DataFrame:
    """The model's replies as `response` (one) or `responses` (a list, garbage removed)."""
    from workbench.models.base import SamplingParams

    params = SamplingParams(n=config.n, temperature=config.temperature, top_p=config.top_p,
                            max_new_tokens=config.max_new_tokens, stop=tuple(config.stop),
                            seed=config.seed_or(ctx))
    ids = data["id"].to_list()
    results = ctx.call(config.model, "generate", data["prompt"].to_list(), params,
                       row_ids=ids, sample_ids=ids, batch_size=config.batch_size)
    split = iter(answers([g for r in results for g in r or []]))
    per_row = [[(g, next(split)) for g in r] if r else None for r in results]
    if not candidates:
        gens = [r[0] if r else None for r in per_row]
        reasons = [QUARANTINE_REASON if g is None else _reason("generate", *g[1]) for g in gens]
        into = config.into
        side = "" if into == "response" else f"{into}_"  # beside the row's own answer
        return _keep_reason(data.with_columns(
            pl.Series(into, [g[1][1] if g else None for g in gens], pl.String),
            *_traces(f"{side}reasoning", [g[1][0] if g else None for g in gens], pl.String),
            pl.Series(f"{side}finish_reason", [g[0].finish_reason if g else None for g in gens],
                      pl.String),
            pl.Series(f"{side}completion_tokens",
                      [g[0].completion_tokens if g else None for g in gens], pl.Int64),
        ), reasons)
    kept: list[list[Any]] = []
    reasons = []
    for result in per_row:
        usable = []
        for g, (trace, text) in result or []:
            why = _problem(g, trace, text, config)
            if why:
                ctx.count_nulled(f"sample removed: {why}")
            else:
                usable.append((g, trace, text))
        kept.append(usable)
        reasons.append(QUARANTINE_REASON if result is None else
                       None if len(usable) >= config.min_samples else
                       f"fewer than {config.min_samples} usable samples")
    return _keep_reason(data.with_columns(
        pl.Series("responses", [[u[2] for u in row] for row in kept], pl.List(pl.String)),
        *_traces("reasoning", [[u[1] for u in row] for row in kept], pl.List(pl.String)),
        pl.Series("finish_reason", [[u[0].finish_reason for u in row] for row in kept],
                  pl.List(pl.String)),
        pl.Series("completion_tokens", [[u[0].completion_tokens for u in row] for row in kept],
                  pl.List(pl.Int64)),
    ), reasons)


def answers(gens: list[Any]) -> list[tuple[str | None, str]]:
    """(trace, answer) of each generation: the server's own trace where it sent one (the
    text is then the answer), else the text's leading `<think>` block split off."""
    traces, texts = split_texts([g.text for g in gens])
    return [(g.reasoning.strip() if g.reasoning else t, g.text if g.reasoning else a)
            for g, t, a in zip(gens, traces, texts, strict=True)]


def garbage_parts(trace: str | None, answer: str) -> str | None:
    """Why a reply is unusable: its answer is garbage, or its trace loops."""
    why = garbage(answer)
    if why is None and trace is not None and garbage(trace) == REPETITION:
        why = f"{REPETITION} in the reasoning"
    return why


def _problem(g: Any, trace: str | None, answer: str, config: GenerateConfig) -> str | None:
    """Why a sample is not usable: cut off when `drop_truncated`, or garbage."""
    if config.drop_truncated and g.finish_reason == "length":
        return f"truncated at {config.max_new_tokens} tokens"
    return garbage_parts(trace, answer)


def _traces(name: str, values: list[Any], dtype: pl.DataType) -> list[pl.Series]:
    """The trace column, only when some reply had a trace (a list column: some sample)."""
    flat = [v for row in values for v in (row or [])] if dtype == pl.List(pl.String) else values
    return [pl.Series(name, values, dtype)] if any(v is not None for v in flat) else []


def _reason(step: str, trace: str | None, answer: str) -> str | None:
    why = garbage_parts(trace, answer)
    return f"{step}: {why}" if why else None


def _keep_reason(out: pl.DataFrame, reasons: list[str | None]) -> pl.DataFrame:
    """Add this step's drop reasons, keeping any an earlier mark already set."""
    new = pl.Series(DROP, reasons, pl.String)
    if DROP in out.columns:
        return out.with_columns(pl.coalesce(pl.col(DROP), new).alias(DROP))
    return out.with_columns(new)
