"""`embed`: an L2-normalised float32 embedding of a text column, reused by later steps."""

from __future__ import annotations

import polars as pl
from pydantic import Field

from workbench.schema import as_text
from workbench.transform import Context, StepConfig, transform


class EmbedConfig(StepConfig):
    column: str = Field("prompt", description="text to embed (message lists are rendered)")
    encoder: str = Field(
        "embedded", description="sentence-transformers name or path; embedded = all-MiniLM-L6-v2; "
        "static = static embeddings distilled once from it (tens of times faster, rougher; "
        "static:TEACHER@DIMS for another teacher or size)")
    output: str = Field("embedding", description="name of the new column")
    batch_size: int = Field(64, ge=1)


@transform("embed", scope="row", keeps_content=True)
def embed(frame: pl.LazyFrame, config: EmbedConfig, ctx: Context) -> pl.LazyFrame:
    """Embed each row's text in batches; the vectors are unit length (cosine = inner product)."""
    from workbench.models.embeddings import embed as embed_texts

    data = frame.collect()
    if config.column not in data.columns:
        raise ValueError(f"no column {config.column!r} (columns: {', '.join(data.columns)})")
    texts = data.select(as_text(data.schema, config.column).fill_null("")).to_series().to_list()
    vectors = embed_texts(texts, model=config.encoder, batch_size=config.batch_size)
    dim = vectors.shape[1] if vectors.ndim == 2 else 0
    column = pl.Series(config.output, vectors, dtype=pl.Array(pl.Float32, dim)).cast(
        pl.List(pl.Float32))
    return data.with_columns(column).lazy()
