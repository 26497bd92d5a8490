"""Token n-grams of many texts at once, as one polars table (no Python loop per text).

Texts are lowercased; word tokens are runs of letters and digits (`\\w+`), so case,
whitespace and punctuation do not matter; char tokens are the characters of the text with
whitespace collapsed; spacy_like tokens follow spaCy's English rules, punctuation included
(`workbench/algorithms/spacy_like.py`). Each n-gram is a 64-bit hash of its tokens (collisions among the
~10⁸ n-grams of a large run: probability ~10⁻³ at most, and a collision only adds a spurious
shared n-gram).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl

from workbench.algorithms.spacy_like import spacy_like_tokens

Unit = Literal["word", "char", "spacy_like"]


def tokens(text: pl.Expr, unit: Unit = "word") -> pl.Expr:
    """A list of normalised tokens per text (word or char units)."""
    if unit == "spacy_like":
        raise ValueError("spacy_like tokens come from token_lists(), not an expression")
    lower = text.fill_null("").str.to_lowercase()
    if unit == "word":
        return lower.str.extract_all(r"\w+")
    # whitespace runs to one space (matching only runs that are not one space already)
    return lower.str.replace_all(r"\s\s+|[^\S ]", " ").str.strip_chars().str.split("")


def token_lists(texts: pl.Series, unit: Unit = "word") -> pl.Series:
    """A list of normalised tokens per text, for any unit."""
    if unit == "spacy_like":
        return spacy_like_tokens(texts.cast(pl.String))
    return pl.DataFrame({"t": texts.cast(pl.String)}).select(tokens(pl.col("t"), unit))["t"]


def ngram_table(texts: pl.Series, n: int, unit: Unit = "word") -> tuple[pl.DataFrame, np.ndarray]:
    """(table of `row`, `start` (token position) and `key` (u64 hash) for every n-gram of
    every text, token count per text). Texts with fewer than n tokens have no n-grams."""
    if n < 1:
        raise ValueError("n must be at least 1")
    toks = pl.DataFrame({"tok": token_lists(texts, unit)})
    counts = toks["tok"].list.len().fill_null(0).to_numpy().astype(np.int64)
    flat = toks["tok"].explode().drop_nulls()  # an empty list explodes to one null
    rows = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    starts = np.arange(len(rows), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    hashes = flat.hash(seed=0).to_numpy()
    valid = starts <= np.repeat(counts, counts) - n
    keys = np.zeros(int(valid.sum()), dtype=np.uint64)
    at = np.flatnonzero(valid)
    with np.errstate(over="ignore"):  # FNV-style mixing of token hashes, wrapping at 2⁶⁴
        for j in range(n):
            keys = (keys ^ hashes[at + j]) * _PRIME
    return pl.DataFrame({"row": rows[at], "start": starts[at], "key": keys}), counts


_PRIME = np.uint64(0x100000001B3)


def whole_keys(texts: pl.Series, unit: Unit = "word") -> np.ndarray:
    """One u64 per text for its whole normalised token sequence (exact normalised match)."""
    joined = token_lists(texts, unit).list.join("\x1f")
    return joined.hash(seed=0).to_numpy()
