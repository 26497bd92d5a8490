"""`embed`: an L2-normalised float32 embedding of a text column, reused by later steps.

Two kinds of encoder: a sentence encoder over one text column (MiniLM by default), or, with
`model:`, a causal LM's last-token hidden state as deita's CLM embedder computes it: the
whole conversation (prompt turns and the answer) rendered in the vicuna_v1.1 template, the
final layer's state (after the model's last norm) at the last token (docs/methods.md §3.2).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl
from pydantic import Field, model_validator

from workbench.schema import as_text
from workbench.transform import DROP, QUARANTINED, Context, ModelName, StepConfig, transform

VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's "
                 "questions.")


class EmbedConfig(StepConfig):
    column: str = Field("prompt", description="text to embed (message lists are rendered)")
    encoder: str = Field(
        "embedded", description="sentence-transformers name or path; embedded = all-MiniLM-L6-v2; "
        "static = static embeddings distilled once from it (tens of times faster, rougher; "
        "static:TEACHER@DIMS for another teacher or size)")
    model: ModelName | None = Field(None, description="a causal LM under `models:`: embed as "
                                    "its last-token hidden state (deita's CLM embedder) "
                                    "instead of with `encoder`")
    render: Literal["vicuna", "column"] = Field(
        "vicuna", description="with `model`: the whole conversation in deita's vicuna_v1.1 "
        "template (prompt turns, then `response` where the row has one), or `column` as text")
    output: str = Field("embedding", description="name of the new column")
    batch_size: int = Field(64, ge=1)

    @model_validator(mode="after")
    def _one_encoder(self) -> EmbedConfig:
        if self.model is not None and "encoder" in self.model_fields_set:
            raise ValueError("give `encoder` (a sentence encoder) or `model` (a causal LM), "
                             "not both")
        return self

    def capabilities(self) -> tuple[str, ...] | None:
        return ("hidden_states",) if self.model is not None else None


@transform("embed", scope="row", keeps_content=True)
def embed(frame: pl.LazyFrame, config: EmbedConfig, ctx: Context) -> pl.LazyFrame:
    """Embed each row's text in batches; the vectors are unit length (cosine = inner product)."""
    data = frame.collect()
    if config.model is not None:
        texts = data.select(_conversation(data.schema, config).alias("t"))["t"].to_list()
        return _with_states(data, texts, config, ctx).lazy()
    else:
        from workbench.models.embeddings import embed as embed_texts

        if config.column not in data.columns:
            raise ValueError(f"no column {config.column!r} (columns: {', '.join(data.columns)})")
        texts = data.select(as_text(data.schema, config.column).fill_null("")).to_series()
        vectors = embed_texts(texts.to_list(), model=config.encoder,
                              batch_size=config.batch_size)
    dim = vectors.shape[1] if vectors.ndim == 2 else 0
    column = pl.Series(config.output, vectors, dtype=pl.Array(pl.Float32, dim)).cast(
        pl.List(pl.Float32))
    return data.with_columns(column, _made_by(config)).lazy()


def encoder_column(output: str) -> str:
    """The column that says how `output`'s vectors were made (`deita_select` reports it)."""
    return f"{output}_encoder"


def _made_by(config: EmbedConfig) -> pl.Expr:
    """What made the vectors, on every row, so that a step reading them later (in this run or
    another, on a published dataset) can say which representation its threshold applies to."""
    if config.model is not None:
        text = ("the whole conversation in vicuna_v1.1" if config.render == "vicuna"
                else f"column {config.column}")
        made = f"clm:{config.model} (last-token hidden state of {text})"
    else:
        name = {"embedded": "all-MiniLM-L6-v2"}.get(config.encoder, config.encoder)
        made = f"sentence:{name} (over column {config.column})"
    return pl.lit(made, pl.String).alias(encoder_column(config.output))


def _conversation(schema: pl.Schema, config: EmbedConfig) -> pl.Expr:
    """deita's vicuna_v1.1 prompt: SYSTEM + " " + "USER: q " + "ASSISTANT: a</s>" per turn
    (a system turn in the data replaces the default system text)."""
    if config.render == "column":
        if config.column not in schema:
            raise ValueError(f"no column {config.column!r}")
        return as_text(schema, config.column).fill_null("")
    role, content = pl.element().struct.field("role"), pl.element().struct.field("content")
    turns = pl.col("prompt").list.eval(
        pl.when(role == "user").then(pl.lit("USER: ") + content + pl.lit(" "))
        .when(role == "assistant").then(pl.lit("ASSISTANT: ") + content + pl.lit("</s>"))
        .otherwise(pl.lit(""))).list.join("")
    system = pl.col("prompt").list.eval(
        pl.when(role == "system").then(content)).list.drop_nulls().list.first()
    answer = (pl.lit("ASSISTANT: ") + pl.col("response") + pl.lit("</s>")
              if "response" in schema else pl.lit(""))
    return pl.coalesce(system, pl.lit(VICUNA_SYSTEM)) + pl.lit(" ") + turns + answer


def _with_states(data: pl.DataFrame, texts: list[str], config: EmbedConfig,
                 ctx: Context) -> pl.DataFrame:
    """The model's final hidden state at each text's last token, unit length; a row whose
    call failed is quarantined (dropped with the reason, called again on --retry-failed)."""
    states = ctx.call(config.model, "hidden_states", [(t, "") for t in texts], {"pool": "none"},
                      row_ids=data["id"].to_list(), batch_size=config.batch_size)
    rows = [None if s is None else np.asarray(s, dtype=np.float64)[-1] for s in states]
    unit = [None if v is None else (v / max(np.linalg.norm(v), 1e-12)).astype(np.float32).tolist()
            for v in rows]
    failed = pl.Series(DROP, [f"{QUARANTINED} (quarantined)" if v is None else None
                              for v in unit], pl.String)
    if DROP in data.columns:
        failed = data[DROP].fill_null(failed)
    return data.with_columns(pl.Series(config.output, unit, pl.List(pl.Float32)), failed,
                             _made_by(config))
