"""`dedup_exact`: drop rows whose normalised text repeats an earlier row's."""

from __future__ import annotations

import numpy as np
import polars as pl
from pydantic import Field

from workbench.engine import positional
from workbench.engine.source import ROW
from workbench.schema import CONTENT_COLUMNS, as_text
from workbench.transform import DROP, Context, StepConfig, transform


class DedupExactConfig(StepConfig):
    columns: list[str] = Field(["prompt"], description="columns whose text must repeat")
    normalize: bool = Field(True, description="lowercase, collapse whitespace, strip")


_mark = pl.when(pl.col("duplicate_of").is_not_null()).then(pl.lit("duplicate")).alias(DROP)


@transform("dedup_exact", scope="global", keeps_content=True)
def dedup_exact(frame: pl.LazyFrame, config: DedupExactConfig, ctx: Context) -> pl.LazyFrame:
    """Keep the first row per normalised text; later ones record the id they duplicate."""
    schema = frame.collect_schema()
    missing = [c for c in config.columns if c not in schema]
    if missing:
        raise ValueError(f"no column {missing[0]!r} (columns: {', '.join(schema.names())})")
    texts = [as_text(schema, c) for c in config.columns]
    if config.normalize:
        # each whitespace run becomes one space; matching only the runs that are not one
        # space already gives the same text as `\s+` 4x faster on prose (few matches). Done
        # per column (polars runs the columns in parallel), then joined: no run or case
        # rule crosses the \x1f separator, so the text equals normalising the joined one
        texts = [t.str.to_lowercase().str.replace_all(r"\s\s+|[^\S ]", " ") for t in texts]
    text = pl.concat_str(texts, separator="\x1f", ignore_nulls=True)
    if config.normalize:
        text = text.str.strip_chars()
    key = text.hash(seed=0).alias("_key")  # 64-bit hash; compared as groups, never stored
    # one pass over a narrow projection finds what each row duplicates; the rows then stream
    # past that column (by position) instead of sitting in memory for a window
    if ctx.input is None:
        keys = positional.select(frame, ctx, key, "id")
        first = pl.col("id").first().over("_key")
        duplicate_of = keys.select(pl.when(first != pl.col("id")).then(first))["id"]
        return positional.attach(frame, duplicate_of, "duplicate_of", ctx).with_columns(_mark)
    # under the runner: a row whose key came before is dropped; it is put aside whole as it
    # is read, and memory holds each distinct key and its first row (16 bytes), not ids
    seen, aside = positional.FirstSeen(), positional.Aside(ctx)
    content = [c for c in (*CONTENT_COLUMNS, "id", "parent_id") if c in schema]
    later, firsts = [], []
    for batch, selected in positional.batches(ctx, (key,), [ROW, *content]):
        start = seen.rows
        first = seen.add(selected["_key"].to_numpy())
        dropped = first != np.arange(start, seen.rows)
        if dropped.any():
            aside.add(batch.select(ROW, *content).filter(pl.Series(dropped)))
        later.append(np.flatnonzero(dropped) + start)
        firsts.append(first[dropped])
    rows = np.concatenate(later) if later else np.empty(0, dtype=np.int64)
    kept = np.concatenate(firsts) if firsts else np.empty(0, dtype=np.int64)
    wanted = np.unique(kept)
    ids = positional.values_at(ctx, wanted, "id")
    duplicate_of = ids.gather(np.searchsorted(wanted, kept))
    return positional.attach_sparse(frame, rows, duplicate_of, "duplicate_of", ctx,
                                    aside).with_columns(_mark)
