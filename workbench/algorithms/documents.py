"""Raw documents for the document-based synthesis methods: read them, split them, pack chunks.

AgentInstruct and short-to-long (LongPO) start from raw text, not from rows of a dataset, so
they share this reader and chunker. Chunks follow LongPO's recipe: split on blank lines
(`\\n\\n+`), greedily pack consecutive pieces up to a token budget, join them with a space, and
keep a chunk only if it reaches a minimum length. Texts without paragraph breaks (many plain
e-texts are one line) fall back to sentences, and a sentence longer than the budget to runs
of words, so no piece is lost for being too long.
"""

from __future__ import annotations

import glob
import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from workbench.errors import InputError

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".text")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")
# LongPO's generate_qa.py characters-per-token constant, used when no tokenizer is at hand.
CHARS_PER_TOKEN = 3.6
# A sentence: the shortest run up to terminal punctuation (plus closing quotes or brackets)
# followed by whitespace, or up to the end of the text.
SENTENCE = r"(?s)\S.*?(?:[.!?]+[\"'’”)\]]*(?:\s|$)|$)"
_SEP = "\x1e"  # record separator: marks paragraph breaks before a literal split

TokenCounter = Callable[[pl.Series], pl.Series]
DOCUMENT_SCHEMA = {"doc_id": pl.String, "source": pl.String, "doc_index": pl.Int64,
                   "text": pl.String}


# reading --------------------------------------------------------------------------------------
def document_files(sources: str | Path | Sequence[str | Path],
                   base_dir: Path | None = None) -> list[Path]:
    """The files that paths, folders (every document file inside, recursively) and glob
    patterns name, in a stable order; a source that matches nothing is an error naming it."""
    if isinstance(sources, str | Path):
        sources = [sources]
    files: list[Path] = []
    for source in sources:
        path = Path(source).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _is_document(p))
        elif path.is_file():
            found = [path]
        elif glob.has_magic(str(path)):
            found = sorted(Path(p) for p in glob.glob(str(path), recursive=True)
                           if Path(p).is_file())
        else:
            raise InputError(f"{path}: no such document file or folder")
        if not found:
            raise InputError(f"{path}: matches no document files ({_kinds()})")
        files.extend(p for p in found if p not in files)
    return files


def read_documents(sources: str | Path | Sequence[str | Path], text_field: str = "text",
                   base_dir: Path | None = None) -> pl.DataFrame:
    """One row per document: `doc_id` (content hash), `source` (the file), `doc_index` (the
    JSONL line; 0 for a text file) and `text`. Blank documents are left out."""
    frames = [_read_file(path, text_field) for path in document_files(sources, base_dir)]
    docs = pl.concat(frames) if frames else pl.DataFrame(schema=DOCUMENT_SCHEMA)
    docs = docs.filter(pl.col("text").str.strip_chars().str.len_chars() > 0)
    ids = _unique([hashlib.sha256(t.encode()).hexdigest()[:16] for t in docs["text"]])
    return docs.with_columns(pl.Series("doc_id", ids, pl.String)).select(list(DOCUMENT_SCHEMA))


def _unique(ids: list[str]) -> list[str]:
    """Identical documents keep distinct ids: `hash`, `hash-1`, `hash-2`, ..."""
    seen: dict[str, int] = {}
    out = []
    for value in ids:
        n = seen.get(value, 0)
        seen[value] = n + 1
        out.append(value if n == 0 else f"{value}-{n}")
    return out


def _read_file(path: Path, text_field: str) -> pl.DataFrame:
    name = path.name.lower()
    if name.endswith(JSONL_SUFFIXES):
        return _read_jsonl(path, text_field)
    if name.endswith(TEXT_SUFFIXES):
        return pl.DataFrame({"source": [str(path)], "doc_index": [0], "text": [_read_text(path)]},
                            schema={k: v for k, v in DOCUMENT_SCHEMA.items() if k != "doc_id"})
    raise InputError(f"{path}: not a document file ({_kinds()})")


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark is not part of the text
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"{path}, line {line}: invalid UTF-8 at byte offset {exc.start} "
                         f"(byte 0x{data[exc.start]:02x})") from exc
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _read_jsonl(path: Path, text_field: str) -> pl.DataFrame:
    from workbench.io.read import read_raw

    raw = read_raw(path, "jsonl")
    if text_field not in raw.columns:
        fields = ", ".join(c for c in raw.columns if c != "_line")
        raise InputError(f"{path}: no field {text_field!r} in its records (fields: {fields}); "
                         "name the text field with `text_field:`")
    if raw.schema[text_field] != pl.String:
        raise InputError(f"{path}: field {text_field!r} holds {raw.schema[text_field]}, not text")
    missing = raw.filter(pl.col(text_field).is_null())
    if missing.height:
        raise InputError(f"{path}, line {missing['_line'][0]}: field {text_field!r} is missing "
                         f"or null ({missing.height} such lines)")
    return raw.select(pl.lit(str(path)).alias("source"), pl.col("_line").alias("doc_index"),
                      pl.col(text_field).str.replace_all("\r\n?", "\n").alias("text"))


def _is_document(path: Path) -> bool:
    return path.name.lower().endswith(TEXT_SUFFIXES + JSONL_SUFFIXES)


def _kinds() -> str:
    return "expected " + ", ".join(TEXT_SUFFIXES + JSONL_SUFFIXES)


# token counting -------------------------------------------------------------------------------
def token_counter(tokenizer: Any | None = None,
                  chars_per_token: float = CHARS_PER_TOKEN) -> TokenCounter:
    """Token lengths of a string Series: with a Hugging Face tokenizer (batched, no special
    tokens), or estimated as characters / `chars_per_token` (rounded up)."""
    if tokenizer is None:
        def estimate(texts: pl.Series) -> pl.Series:
            return (texts.str.len_chars() / chars_per_token).ceil().cast(pl.Int64)
        return estimate

    def count(texts: pl.Series) -> pl.Series:
        values = texts.to_list()
        lengths: list[int] = []
        for start in range(0, len(values), 1024):
            batch = values[start:start + 1024]
            lengths += [len(ids) for ids in
                        tokenizer(batch, add_special_tokens=False)["input_ids"]]
        return pl.Series(texts.name, lengths, pl.Int64)
    return count


# splitting ------------------------------------------------------------------------------------
def split_paragraphs(text: str) -> list[str]:
    """LongPO's paragraphs: split on two or more newlines, stripped, empty ones dropped."""
    frame = paragraphs(pl.DataFrame({"doc_id": ["d"], "text": [text]}))
    return frame["text"].to_list()


def split_sentences(text: str) -> list[str]:
    """Sentences of a text (terminal punctuation then whitespace); the last may lack one."""
    found = pl.Series([text]).str.extract_all(SENTENCE).explode().str.strip_chars()
    return [s for s in found.to_list() if s]


def split_words(text: str, pieces: int) -> list[str]:
    """A text cut into `pieces` runs of whole words of near-equal word counts."""
    words = text.split()
    size = max(1, math.ceil(len(words) / max(1, pieces)))
    return [" ".join(words[i:i + size]) for i in range(0, len(words), size)]


def paragraphs(docs: pl.DataFrame) -> pl.DataFrame:
    """One row per paragraph (`doc_id`, `text`), in document order, for all documents at once."""
    return (docs.select("doc_id", pl.col("text").str.replace_all(r"\n\n+", _SEP)
                        .str.split(_SEP).alias("text"))
            .explode("text")
            .with_columns(pl.col("text").str.strip_chars())
            .filter(pl.col("text").str.len_chars() > 0))


def pieces(docs: pl.DataFrame, max_tokens: int, count: TokenCounter) -> pl.DataFrame:
    """Paragraphs, with any paragraph over `max_tokens` split into sentences and any sentence
    still over it into runs of words. Columns: `doc_id`, `text`, `tokens`, in order."""
    units = paragraphs(docs)
    units = units.with_columns(count(units["text"]).alias("tokens"))
    units = _split_long(units, max_tokens, count,
                        lambda over: over["text"].str.extract_all(SENTENCE))
    for _ in range(3):  # each pass cuts finer; single words end it
        units = _split_long(units, max_tokens, count, lambda over: pl.Series(
            [split_words(text, math.ceil(tokens / max_tokens * 1.25))
             for text, tokens in zip(over["text"], over["tokens"], strict=True)]))
    return units


def _split_long(units: pl.DataFrame, max_tokens: int, count: TokenCounter,
                split: Callable[[pl.DataFrame], pl.Series]) -> pl.DataFrame:
    """Replace each piece over the budget by its parts (counted again), keeping the order."""
    units = units.with_row_index("_order")
    long = (pl.col("tokens") > max_tokens) & pl.col("text").str.contains(r"\s")
    over = units.filter(long)
    if over.height == 0:
        return units.drop("_order")
    parts = (over.with_columns(split(over).alias("text")).explode("text")
             .with_columns(pl.col("text").str.strip_chars())
             .filter(pl.col("text").str.len_chars() > 0))
    parts = parts.with_columns(count(parts["text"]).alias("tokens"),
                               pl.int_range(pl.len()).over("_order").alias("_part"))
    kept = units.filter(~long).with_columns(pl.lit(0, pl.Int64).alias("_part"))
    return (pl.concat([kept, parts.with_columns(pl.col("_part").cast(pl.Int64))])
            .sort("_order", "_part").drop("_order", "_part"))


# packing --------------------------------------------------------------------------------------
def pack(lengths: Iterable[int], max_tokens: int, min_tokens: int = 0) -> list[tuple[int, int]]:
    """LongPO's greedy packing as index ranges `[start, end)`: add pieces while the sum stays
    within `max_tokens`; a piece that overflows closes the chunk and starts the next; a closed
    chunk is kept only if its sum is at least `min_tokens` (and at most `max_tokens`, so a
    single piece over the budget is lost, as in the reference)."""
    ranges: list[tuple[int, int]] = []
    start = total = size = 0
    for index, length in enumerate(lengths):
        size = index + 1
        if total + length <= max_tokens:
            total += length
            continue
        if index > start and min_tokens <= total <= max_tokens:
            ranges.append((start, index))
        start, total = index, length
    if size > start and min_tokens <= total <= max_tokens:
        ranges.append((start, size))
    return ranges


def chunk_documents(docs: pl.DataFrame, max_tokens: int, min_tokens: int = 0,
                    count: TokenCounter | None = None) -> pl.DataFrame:
    """Chunks of every document: `doc_id`, `chunk_index`, `text` (pieces joined by a space, as
    LongPO joins paragraphs) and `tokens` (the sum of its pieces' counts)."""
    count = count or token_counter()
    units = pieces(docs, max_tokens, count)
    rows: list[tuple[str, int, str, int]] = []
    for (doc_id,), group in units.group_by("doc_id", maintain_order=True):
        texts, lengths = group["text"].to_list(), group["tokens"].to_list()
        for index, (start, end) in enumerate(pack(lengths, max_tokens, min_tokens)):
            rows.append((doc_id, index, " ".join(texts[start:end]), sum(lengths[start:end])))
    chunks = pl.DataFrame(rows, schema={"doc_id": pl.String, "chunk_index": pl.Int64,
                                        "text": pl.String, "tokens": pl.Int64}, orient="row")
    return chunks.join(docs.select("doc_id", "source", "doc_index"), on="doc_id",
                       how="left", maintain_order="left")
