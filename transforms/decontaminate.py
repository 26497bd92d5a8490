"""`decontaminate`: Tulu 3's n-gram overlap test against benchmark prompts (docs/methods.md §7.5).

For a benchmark instance i (its tokens T_i) and a training document d, the tokens of i covered
by an n-gram that d also contains give score(i, d) = |covered| / |T_i|. A training row is
contaminated when max over its documents and all instances of that score is > threshold
(strict, as in open-instruct's `search.py`). Documents are the user turns of a message column
(open-instruct indexes user turns only), or the whole text of a string column.

Tokens (`tokenizer:`) are lowercased word runs (`words`, `\\w+`: case, whitespace and
punctuation do not matter) or spaCy-style English tokens (`spacy_like`, punctuation and
contraction pieces count, as in the reference, whose test instances are tokenized by spaCy).
Exact n-gram sets replace Elasticsearch's top-100 phrase hits, so this finds a superset of its
matches. An instance or document with fewer than n tokens is compared by exact normalised
match instead. Benchmarks: the sets shipped in `data/benchmarks/` (provenance and licenses in
`data/SOURCES.md`) and any JSONL, JSON, CSV or Parquet file named in `benchmarks:`.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from pydantic import Field, field_validator

from workbench.algorithms.ngrams import Unit, ngram_table, whole_keys
from workbench.errors import InputError
from workbench.io.read import read_raw
from workbench.transform import DROP, Context, StepConfig, transform

BENCHMARK_DIR = Path(__file__).resolve().parent.parent / "data" / "benchmarks"
# name: (file in data/benchmarks, text field, item id field); the fields Tulu 3 queries
SHIPPED: dict[str, tuple[str, str, str | None]] = {
    "mt_bench": ("mt_bench_questions.jsonl", "turns", "question_id"),
    "gsm8k": ("gsm8k_test.jsonl", "question", None),
    "humaneval": ("humaneval.jsonl.gz", "prompt", "task_id"),
    "ifeval": ("ifeval_input_data.jsonl", "prompt", "key"),
    "mmlu": ("mmlu_test_questions.jsonl.gz", "question", "id"),
    "math": ("math_test_problems.jsonl.gz", "problem", "id"),
    "bbh": ("bbh_inputs.jsonl.gz", "input", "id"),
    "truthfulqa": ("truthfulqa_questions.jsonl.gz", "question", "id"),
}
TOKENIZERS: dict[str, Unit] = {"words": "word", "spacy_like": "spacy_like"}
TEXT_FIELDS = ("prompt", "question", "instruction", "input", "turns")
ID_FIELDS = ("question_id", "task_id", "key", "id")


class BenchmarkFile(StepConfig):
    path: str = Field(description="a JSONL, JSON, CSV or Parquet file, or a glob of them")
    name: str | None = Field(None, description="benchmark name in reports (default: file stem)")
    field: str | None = Field(None, description="text field (default: the first of prompt, "
                              "question, instruction, input, turns; a list field gives one "
                              "instance per element)")
    id_field: str | None = Field(None, description="item id field (default: question_id, "
                                 "task_id, key or id, else the record number)")
    csv_columns: list[str] | None = Field(None, description="column names of a headerless CSV")


class DecontaminateConfig(StepConfig):
    shipped: list[str] = Field(list(SHIPPED), description="benchmarks from data/benchmarks: "
                               + ", ".join(SHIPPED))
    benchmarks: list[str | BenchmarkFile] = Field([], description="more benchmark files")
    columns: list[str] = Field(["prompt"], min_length=1, description="training text checked; "
                               "message lists give one document per user turn")
    n: int = Field(8, ge=1, description="n-gram length in tokens")
    threshold: float = Field(0.5, ge=0, le=1, description="contaminated iff overlap > this")
    tokenizer: Literal["words", "spacy_like"] = Field(
        "words", description="words: lowercased \\w+ runs; spacy_like: spaCy-style English "
        "tokens, punctuation included (workbench/algorithms/spacy_like.py)")
    action: Literal["drop", "flag"] = Field("drop", description="flag: keep rows, mark "
                                            "`contaminated`")

    @field_validator("shipped")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in SHIPPED]
        if unknown:
            raise ValueError(f"unknown shipped benchmark {unknown[0]!r} (shipped: "
                             f"{', '.join(SHIPPED)})")
        return names


@transform("decontaminate", scope="global", keeps_content=True)
def decontaminate(frame: pl.LazyFrame, config: DecontaminateConfig,
                  ctx: Context) -> pl.LazyFrame:
    """Adds `overlap` (the best score) and, above the threshold, `contaminated_by`
    ("benchmark:item"); drops those rows (or flags them with `contaminated`)."""
    data = frame.collect()
    missing = [c for c in config.columns if c not in data.columns]
    if missing:
        raise ValueError(f"no column {missing[0]!r} (columns: {', '.join(data.columns)})")
    instances = load_benchmarks(config, ctx)
    docs = _documents(data, config.columns)
    hits = overlaps(docs, instances, config.n, TOKENIZERS[config.tokenizer])
    best = (hits.sort(["row", "score", "instance"], descending=[False, True, False])
            .unique("row", keep="first", maintain_order=True))
    over = best.filter(pl.col("score") > config.threshold)
    label = pl.col("benchmark") + pl.lit(":") + pl.col("item")
    per_row = (best.join(instances.select("instance", label.alias("by")), on="instance")
               .select("row", pl.col("score").alias("overlap"),
                       pl.when(pl.col("score") > config.threshold).then("by")
                       .alias("contaminated_by")))
    out = (data.with_row_index("row").with_columns(pl.col("row").cast(pl.Int64))
           .join(per_row, on="row", how="left").drop("row")
           .with_columns(pl.col("overlap").fill_null(0.0)))
    flagged = pl.col("contaminated_by").is_not_null()
    reason = f"contaminated: {config.n}-gram overlap > {config.threshold:g} with a benchmark"
    if config.action == "drop":
        out = out.with_columns(pl.when(flagged).then(pl.lit(reason)).alias(DROP))
    else:
        out = out.with_columns(flagged.alias("contaminated"))
    ctx.report(_report(instances, hits, over, config))
    return out.lazy()


def load_benchmarks(config: DecontaminateConfig, ctx: Context | None = None) -> pl.DataFrame:
    """One row per benchmark instance: `instance` (0..), `benchmark`, `item`, `text`."""
    specs = [BenchmarkFile(path=str(BENCHMARK_DIR / SHIPPED[name][0]), name=name,
                           field=SHIPPED[name][1], id_field=SHIPPED[name][2])
             for name in config.shipped]
    for spec in config.benchmarks:
        spec = BenchmarkFile(path=spec) if isinstance(spec, str) else spec
        path = ctx.path(spec.path) if ctx is not None else Path(spec.path)
        specs.append(spec.model_copy(update={"path": str(path)}))
    frames = [_read_benchmark(spec) for spec in specs]
    if not frames:
        raise ValueError("no benchmarks: name some in `benchmarks:` or keep `shipped:`")
    return pl.concat(frames).with_row_index("instance").with_columns(
        pl.col("instance").cast(pl.Int64))


def _read_benchmark(spec: BenchmarkFile) -> pl.DataFrame:
    paths = sorted(glob.glob(spec.path)) if glob.has_magic(spec.path) else [spec.path]
    if not paths or not all(Path(p).is_file() for p in paths):
        raise InputError(f"benchmark file {spec.path!r} not found")
    name = spec.name or Path(paths[0]).name.split(".")[0]
    parts = []
    for path in paths:
        raw = read_raw(path, csv_columns=spec.csv_columns)
        field = spec.field or next((f for f in TEXT_FIELDS if f in raw.columns), None)
        if field is None or field not in raw.columns:
            raise InputError(f"{path}: no text field {spec.field or TEXT_FIELDS} "
                             f"(columns: {', '.join(raw.columns)})")
        id_field = spec.id_field or next((f for f in ID_FIELDS if f in raw.columns), None)
        item = (pl.col(id_field).cast(pl.String) if id_field
                else pl.int_range(pl.len()).cast(pl.String))
        if len(paths) > 1:
            item = pl.lit(Path(path).name.split(".")[0] + "/") + item
        part = raw.select(item.alias("item"), pl.col(field).alias("text"))
        if isinstance(part.schema["text"], pl.List):  # e.g. MT-Bench turns: one per turn
            part = (part.with_columns(pl.int_ranges(pl.col("text").list.len()).alias("turn"))
                    .explode("text", "turn")
                    .select(pl.col("item") + pl.lit("#turn") + (pl.col("turn") + 1).cast(pl.String),
                            "text"))
        parts.append(part.with_columns(pl.col("text").cast(pl.String)))
    return pl.concat(parts).select(pl.lit(name).alias("benchmark"), "item", "text")


def _documents(data: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """Training documents: (`row`, `text`), user turns of message columns, else whole text."""
    parts = []
    for column in columns:
        base = data.select(pl.int_range(pl.len(), dtype=pl.Int64).alias("row"), column)
        dtype = data.schema[column]
        if isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct):
            turns = base.explode(column).filter(pl.col(column).struct.field("role") == "user")
            parts.append(turns.select("row", pl.col(column).struct.field("content").alias("text")))
        elif isinstance(dtype, pl.List):
            parts.append(base.explode(column).select("row", pl.col(column).cast(pl.String)
                                                     .alias("text")))
        else:
            parts.append(base.select("row", pl.col(column).cast(pl.String).alias("text")))
    return pl.concat(parts).filter(pl.col("text").is_not_null())


def overlaps(docs: pl.DataFrame, instances: pl.DataFrame, n: int,
             unit: Unit = "word") -> pl.DataFrame:
    """Per (training row, instance) with any overlap: the best score over the row's docs."""
    doc_grams, doc_len = ngram_table(docs["text"], n, unit)
    inst_grams, inst_len = ngram_table(instances["text"], n, unit)
    doc_row = docs["row"].to_numpy()
    matched = (inst_grams.rename({"row": "instance"})
               .join(doc_grams.select(pl.col("row").alias("doc"), "key").unique(),
                     on="key", how="inner"))
    covered = (
        matched.select("doc", "instance", "start").unique()
        .sort("doc", "instance", "start")
        .with_columns((pl.col("start").shift(-1).over("doc", "instance") - pl.col("start"))
                      .fill_null(n).clip(upper_bound=n).alias("span"))
        .group_by("doc", "instance").agg(pl.col("span").sum().alias("covered"))
    )
    lengths = pl.DataFrame({"instance": np.arange(len(inst_len)), "tokens": inst_len})
    scored = covered.join(lengths, on="instance").select(
        "doc", "instance", (pl.col("covered") / pl.col("tokens")).alias("score"))
    short = _exact_short(docs, doc_len, instances, inst_len, n, unit)
    owners = pl.DataFrame({"doc": np.arange(len(doc_row)), "row": doc_row})
    return (pl.concat([scored, short]).join(owners, on="doc")
            .group_by("row", "instance").agg(pl.col("score").max()))


def _exact_short(docs: pl.DataFrame, doc_len: np.ndarray, instances: pl.DataFrame,
                 inst_len: np.ndarray, n: int, unit: Unit) -> pl.DataFrame:
    """Instances with fewer than n tokens match a document with the same normalised text."""
    short = np.flatnonzero((inst_len > 0) & (inst_len < n))
    small = np.flatnonzero((doc_len > 0) & (doc_len < n))
    if len(short) == 0 or len(small) == 0:
        return pl.DataFrame(schema={"doc": pl.Int64, "instance": pl.Int64, "score": pl.Float64})
    inst = pl.DataFrame({"instance": short, "key": whole_keys(instances["text"][short], unit)})
    doc = pl.DataFrame({"doc": small, "key": whole_keys(docs["text"][small], unit)})
    return (doc.join(inst, on="key").select(pl.col("doc").cast(pl.Int64),
                                            pl.col("instance").cast(pl.Int64),
                                            pl.lit(1.0).alias("score")))


def _report(instances: pl.DataFrame, hits: pl.DataFrame, over: pl.DataFrame,
            config: DecontaminateConfig) -> dict:
    """Per benchmark: instances, training rows whose best match is there, items hit."""
    names = instances.group_by("benchmark", maintain_order=True).len()
    bench = instances.select("instance", "benchmark")
    rows = over.join(bench, on="instance").group_by("benchmark").len()
    items = (hits.filter(pl.col("score") > config.threshold).join(bench, on="instance")
             .group_by("benchmark").agg(pl.col("instance").n_unique().alias("items_hit")))
    table = (names.join(rows, on="benchmark", how="left", suffix="_rows")
             .join(items, on="benchmark", how="left").fill_null(0))
    return {
        "n": config.n, "threshold": config.threshold, "action": config.action,
        "tokenizer": config.tokenizer,
        "contaminated_rows": over.height,
        "benchmarks": {r["benchmark"]: {"instances": r["len"], "rows_hit": r["len_rows"],
                                        "items_hit": r["items_hit"]}
                       for r in table.iter_rows(named=True)},
    }
