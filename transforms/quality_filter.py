"""`quality_filter`: cheap heuristic checks, each drop with a named reason.

Checks, in the order that names a row's reason (the first that fails): empty text, a
truncated generation (`finish_reason == "length"`), an instruction ending with ':' (Magpie's
sign of a cut-off instruction), the language of the instruction and the first checked text
(lingua: short texts alone are often misread), length bounds in
characters and tokens, the repetition ratio (share of a text's word n-grams that repeat an
earlier one), and refusal phrases. Texts checked: `fields`, by default the answer columns of
the row's kind (response; chosen and rejected; every element of responses) or, for
instruction rows, the last user turn. Every check is off unless configured, except empty
and truncated.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import Field

from workbench.algorithms.ngrams import ngram_table
from workbench.transform import DROP, Context, StepConfig, transform

REFUSALS = [
    "i'm sorry, but", "i am sorry, but", "i apologize, but", "as an ai language model",
    "as an ai, i", "i cannot help with", "i can't help with", "i cannot assist",
    "i can't assist", "i'm not able to help", "i am not able to provide",
    "i cannot provide", "i can't provide", "i'm unable to", "i am unable to",
]


class QualityFilterConfig(StepConfig):
    fields: list[str] | None = Field(None, description="text columns checked (default: the "
                                     "kind's answers, or the instruction)")
    empty: bool = Field(True, description="drop empty or whitespace-only texts")
    truncated: bool = Field(True, description="drop rows whose finish_reason is 'length'")
    colon_ending: bool = Field(False, description="drop instructions that end with ':'")
    languages: list[str] | None = Field(None, description="keep instructions in these "
                                        "languages (ISO 639-1, e.g. [EN])")
    language_accuracy: Literal["high", "low"] = Field("high", description="lingua's mode "
                                                       "(low loads far less)")
    min_chars: int | None = Field(None, ge=0)
    max_chars: int | None = Field(None, ge=0)
    min_tokens: int | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=0)
    tokenizer: str | None = Field(None, description="tokens by this Hugging Face tokenizer "
                                  "(a path or `embedded`); default: whitespace-separated words")
    max_repetition: float | None = Field(None, ge=0, le=1, description="drop texts whose "
                                         "share of repeated word n-grams is above this")
    repetition_n: int = Field(3, ge=1)
    refusals: bool = Field(False, description="drop texts containing a refusal phrase")
    refusal_phrases: list[str] = Field(REFUSALS, description="matched case-insensitively")


ORDER = ("empty", "truncated", "colon", "language", "chars", "tokens", "repetition", "refusal")


@transform("quality_filter", scope="row", keeps_content=True, stateless=True)
def quality_filter(frame: pl.LazyFrame, config: QualityFilterConfig,
                   ctx: Context) -> pl.LazyFrame:
    """Marks each failing row with the reason of its first failing check."""
    data = frame.collect()
    fields = config.fields or _default_fields(data.columns)
    missing = [f for f in fields if f not in data.columns]
    if missing:
        raise ValueError(f"no column {missing[0]!r} (columns: {', '.join(data.columns)})")
    texts, text_checks = _text_checks(_texts(data, fields), config)
    names = [name for name, _, _ in text_checks]
    per_row = texts.group_by("row").agg([pl.col(name).any() for name in names])
    out = (data.with_row_index("row").with_columns(pl.col("row").cast(pl.Int64))
           .join(per_row, on="row", how="left").drop("row"))
    checks = [(pl.col(name).fill_null(False), reason, group)
              for name, reason, group in text_checks] + _row_checks(data, fields, config)
    checks.sort(key=lambda check: ORDER.index(check[2]))  # stable: fields keep their order
    reason: Any = pl.lit(None, pl.String)
    for check, text, _ in reversed(checks):
        reason = pl.when(check).then(pl.lit(text)).otherwise(reason)
    if DROP in out.columns:
        reason = pl.coalesce(pl.col(DROP), reason)
    return out.with_columns(reason.alias(DROP)).drop(names).lazy()


def _row_checks(data: pl.DataFrame, fields: list[str],
                config: QualityFilterConfig) -> list[tuple[pl.Expr, str, str]]:
    """Checks on the whole row: finish reason, the instruction (last user turn), language."""
    checks = []
    # `finish_reason` of the answers, and Magpie's `instruction_finish_reason` (a cut-off
    # instruction), `chosen_`/`rejected_finish_reason` of pairs
    for column in (c for c in data.columns if config.truncated and (
            c == "finish_reason" or c.endswith("_finish_reason"))):
        finish = pl.col(column)
        hit = (finish.list.contains("length") if isinstance(data.schema[column], pl.List)
               else finish == "length")
        checks.append((hit.fill_null(False), f"truncated ({column} length)", "truncated"))
    instruction = pl.col("prompt").list.last().struct.field("content").fill_null("")
    if config.colon_ending:
        checks.append((instruction.str.strip_chars().str.ends_with(":"),
                       "instruction ends with ':'", "colon"))
    if config.languages:
        wanted = [code.upper() for code in config.languages]
        found = pl.Series(_languages(data, fields, config.language_accuracy == "low"),
                          dtype=pl.String)
        checks.append((~found.is_in(wanted).fill_null(False),
                       f"language not in {', '.join(wanted)}", "language"))
    return checks


def _default_fields(columns: list[str]) -> list[str]:
    if "chosen" in columns and "rejected" in columns:
        return ["chosen", "rejected"]
    for name in ("responses", "response"):
        if name in columns:
            return [name]
    return ["prompt"]


def _texts(data: pl.DataFrame, fields: list[str]) -> pl.DataFrame:
    """(row, field, text): list fields give one text per element, prompts their last turn."""
    parts = []
    for field in fields:
        dtype = data.schema[field]
        base = data.select(pl.int_range(pl.len(), dtype=pl.Int64).alias("row"), field)
        if isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct):
            text = pl.col(field).list.last().struct.field("content")
        elif isinstance(dtype, pl.List):
            base, text = base.explode(field), pl.col(field)
        else:
            text = pl.col(field)
        parts.append(base.select("row", pl.lit(field).alias("field"),
                                 text.cast(pl.String).alias("text")))
    return pl.concat(parts)


def _text_checks(texts: pl.DataFrame, config: QualityFilterConfig
                 ) -> tuple[pl.DataFrame, list[tuple[str, str, str]]]:
    """`texts` with one boolean column per (check, field), and (column, reason, group)."""
    text = pl.col("text")
    wanted: list[tuple[str, pl.Expr, str]] = []  # (group, failing texts, reason)
    if config.empty:
        wanted.append(("empty", text.is_null() | (text.str.strip_chars() == ""), "empty {field}"))
    if config.min_chars is not None:
        wanted.append(("chars", text.str.len_chars() < config.min_chars,
                       f"{{field}} shorter than {config.min_chars} chars"))
    if config.max_chars is not None:
        wanted.append(("chars", text.str.len_chars() > config.max_chars,
                       f"{{field}} longer than {config.max_chars} chars"))
    if config.min_tokens is not None or config.max_tokens is not None:
        tokens = pl.lit(pl.Series(_token_counts(texts["text"], config.tokenizer)))
        if config.min_tokens is not None:
            wanted.append(("tokens", tokens < config.min_tokens,
                           f"{{field}} under {config.min_tokens} tokens"))
        if config.max_tokens is not None:
            wanted.append(("tokens", tokens > config.max_tokens,
                           f"{{field}} over {config.max_tokens} tokens"))
    if config.max_repetition is not None:
        ratio = pl.lit(pl.Series(repeated_ngram_shares(texts["text"], config.repetition_n)))
        wanted.append(("repetition", ratio > config.max_repetition,
                       f"{{field}} repetition above {config.max_repetition:g}"))
    if config.refusals:
        phrases = [p.lower() for p in config.refusal_phrases]
        wanted.append(("refusal", text.str.to_lowercase().str.contains_any(phrases),
                       "{field} is a refusal"))
    fields = texts["field"].unique(maintain_order=True).to_list()
    columns, checks = {}, []
    for k, (group, failing, reason) in enumerate(wanted):
        for field in fields:
            name = f"_check{k}:{field}"
            columns[name] = (pl.col("field") == field) & failing.fill_null(False)
            checks.append((name, reason.format(field=field), group))
    return texts.with_columns(**columns), checks


def repeated_ngram_shares(texts: pl.Series, n: int = 3) -> np.ndarray:
    """Share of each text's word n-grams that repeat an earlier n-gram of the same text."""
    grams, _ = ngram_table(texts, n)
    stats = grams.group_by("row").agg(pl.len().alias("total"), pl.col("key").n_unique().alias("distinct"))
    ratio = np.zeros(len(texts))
    rows = stats["row"].to_numpy()
    ratio[rows] = 1 - stats["distinct"].to_numpy() / stats["total"].to_numpy()
    return ratio


def _token_counts(texts: pl.Series, tokenizer: str | None) -> np.ndarray:
    if tokenizer is None:
        return texts.fill_null("").str.count_matches(r"\S+").to_numpy()
    tok = _load_tokenizer(tokenizer)
    encoded = tok(texts.fill_null("").to_list(), add_special_tokens=False)["input_ids"]
    return np.array([len(ids) for ids in encoded])


@functools.cache
def _load_tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    from workbench.models.transformers_backend import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path(name))


def _languages(data: pl.DataFrame, fields: list[str], fast: bool) -> list[str | None]:
    """Language of the instruction together with the first checked text (short texts alone
    are often misread)."""
    from workbench.algorithms.language import detect_languages

    texts = _texts(data, fields[:1]).group_by("row", maintain_order=True).agg(
        pl.col("text").first())
    instruction = data.select(pl.col("prompt").list.last().struct.field("content").fill_null(""))
    joined = instruction.to_series()
    if fields[0] != "prompt":
        joined = joined + "\n" + texts["text"].fill_null("")
    return detect_languages(joined.to_list(), fast=fast)
