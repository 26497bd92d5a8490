"""Options and loading shared by the steps that create rows from raw documents.

`agentinstruct` and `short_to_long` take no input rows: they read the files their
`documents:` option names (paths relative to the pipeline file) and chunk them with
`workbench.algorithms.documents`. Their checkpoints also key on those files' bytes (`input_digest`),
so editing a document re-runs the step instead of serving rows made from the old text.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import Field, field_validator

from workbench.algorithms.documents import (
    CHARS_PER_TOKEN,
    chunk_documents,
    document_files,
    read_documents,
)
from workbench.algorithms.documents import token_counter as make_counter
from workbench.transform import Context, StepConfig


class DocumentSource(StepConfig):
    documents: list[str] = Field(
        min_length=1, description="text (.txt, .md) or JSONL files, folders or glob patterns; "
        "relative paths resolve against the pipeline file's folder")
    text_field: str = Field("text", description="the field holding the text in JSONL files")
    tokenizer: Literal["model", "estimate"] = Field(
        "model", description="count chunk tokens with the model's tokenizer (when its backend "
        "has one) or estimate them as characters / chars_per_token")
    chars_per_token: float = Field(CHARS_PER_TOKEN, gt=0,
                                   description="for estimated token counts (LongPO: 3.6)")

    @field_validator("documents", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def input_digest(self, base_dir: Path | None) -> str:
        """Hash of every document file's bytes (and of any other file the step reads)."""
        digest = hashlib.sha256()
        for path in [*document_files(self.documents, base_dir), *self.extra_files(base_dir)]:
            digest.update(str(path.name).encode() + b"\0" + path.read_bytes() + b"\0")
        return digest.hexdigest()

    def extra_files(self, base_dir: Path | None) -> list[Path]:
        """Files besides the documents whose content the step's output depends on."""
        return []


def load_chunks(config: DocumentSource, ctx: Context, model: str, max_tokens: int,
                min_tokens: int, limit: int | None = None) -> pl.DataFrame:
    """Chunks of the configured documents (`doc_id`, `chunk_index`, `text`, `tokens`,
    `source`, `doc_index`), counted with the model's tokenizer where asked and available."""
    docs = read_documents(config.documents, config.text_field, base_dir=ctx.base_dir)
    tokenizer = None
    if config.tokenizer == "model":
        tokenizer = getattr(ctx.model(model), "tokenizer", None)
    count = make_counter(tokenizer, config.chars_per_token)
    chunks = chunk_documents(docs, max_tokens, min_tokens, count)
    return chunks if limit is None else chunks.head(limit)
