"""`short_to_long`: LongPO's short-to-long preference pairs from long documents (docs/methods.md §6).

Reference: DAMO-NLP-SG/LongPO `data_prepare/` @ a619607 (generate_qa.py, postprocess_qa.py,
generate_longpo_pair.py, postprocess_longpo_pair.py).

1. **Chunks.** Paragraphs (`\\n\\n+`) greedily packed into chunks of at most `chunk_tokens`,
   kept if at least `min_chunk_tokens`, pieces joined by a space (`workbench.algorithms.documents`).
2. **Long contexts.** Consecutive chunks of a document packed up to `context_tokens` (the
   reference's ~128K-token documents); the long prompt is its chunks joined by `"\\n\\n\\n"`,
   so every short chunk is a substring of it. A context needs `min_context_chunks` chunks.
3. **Questions.** From each short chunk: `"Context:\\n" + chunk + "\\n\\n" + QUERY_PROMPT`,
   parsed with the reference regex; the chunk is kept only if exactly `num_questions` parse
   (`min_questions` relaxes this). One question is drawn, and one of the 20 phrases.
4. **Turns.** At most `turns` chunks per context (reference: 2), drawn with the seed in the
   reference's `random.sample` order. Drawing before the chosen answers are generated saves
   their calls and changes nothing: the reference draws regardless of the answers.
5. **Answers.** chosen: `chunk + "\\n\\n" + question`; rejected: `long_prompt + "\\n\\n" +
   question`, where question = phrase + " " + the parsed question.
6. **Filters** (reference order): an empty response, a meaningless one (repetition ratio >
   0.95 for rejected, > 0.9 for chosen, or fewer than 2 words of 3+ characters), any of the 37
   refusal phrases in either, a short sequence over `max_short_tokens`.

Each row is one turn: `prompt` is the long-context user turn (what the policy sees) and the
row carries what a LongPO trainer needs (`long_prompt`, `short_prompt`, `question`,
`context_id`, `turn`); `longpo_records` (workbench.io.layouts_longpo) groups turns into the
reference's training records, which `workbench export --trl longpo` writes.
"""

from __future__ import annotations

import random
import re
from typing import Any

import polars as pl
from pydantic import Field, model_validator

from transforms._support.doc_source import DocumentSource, load_chunks
from workbench.algorithms.documents import pack
from workbench.transform import DROP, QUARANTINED, Context, ModelStep, Seeded, transform

# generate_qa.py's QUERT_PROMPT, verbatim for 4 questions (the count is a parameter here).
QUERY_PROMPT = """
Based on the content presented above, generate {n} comprehensive English questions that test a reader's comprehension, analytical skills, and ability to extract and interconnect key themes and ideas across the entire document.

Each question should:
1. Encourage the reader to draw connections between different sections or concepts within the text.
2. Challenge the reader to not only recall information but also to synthesize and summarize the material in a coherent manner.
3. Be unique in its focus, avoiding repetition and ensuring a broad coverage of the document's content.
4. Stimulate critical thinking by requiring the application or evaluation of the text's information in broader contexts or hypothetical scenarios, if relevant.
5. Ensure the question is clear and unambiguous.

Please directly give the questions without verbose illustration, and format the {n} questions numerically from “1:” to “{n}:”.
"""

PHRASES = (
    "As described in the preceding text,",
    "As detailed in the foregoing document,",
    "As mentioned earlier in the text,",
    "As specified in the above material,",
    "As indicated in the preceding pages,",
    "In accordance with the above content,",
    "As set forth in the document mentioned,",
    "Following the details provided above,",
    "As elaborated in the prior document,",
    "Pursuant to the information above,",
    "In line with the preceding information,",
    "Reflecting on the content above,",
    "Based on the preceding descriptions,",
    "With reference to the document above,",
    "Drawing from the details above,",
    "Considering the information outlined above,",
    "As articulated in the previous sections,",
    "Conforming to the descriptions above,",
    "As captured in the above explanations,",
    "As chronicled in the earlier document,",
)

# postprocess_longpo_pair.py's CENSORED_PHRASES (trailing spaces and the curly apostrophe kept).
REFUSALS = (
    "I can't assist",
    "content is not available",
    "As an AI assistant",
    "I am unable to",
    "Sorry, I can't",
    "That topic is outside my scope",
    "My guidelines prevent me from addressing",
    "I can't help with",
    "I can't fulfill this request",
    "I don't have the capability",
    "This topic is restricted",
    "I cannot discuss this subject",
    "This information is not accessible",
    "I'm not permitted to provide",
    "I have no data on this issue",
    "My training data does not cover this",
    "Access to this information is restricted",
    "This query is beyond my capabilities",
    "Sorry, I can't delve into that",
    "This goes beyond my operational boundaries",
    "I cannot support this inquiry",
    "I'm programmed not to respond to this",
    "This matter is beyond my scope",
    "My responses are limited",
    "I have no input on that",
    "My algorithm restricts me from answering",
    "I'm sorry, but that's beyond my reach",
    "My response capabilities don’t include this topic",
    "This falls outside my answer scope",
    "I don't cover ",
    "I can't engage with ",
    "I'm not the right resource for that information",
    "This content is beyond my purview",
    "I don't handle this type of query",
    "My training limits me from assisting on this",
    "This issue is beyond my functionality",
    "I am restricted from",
)

# A number, then any of `:.!?-`, then the question up to the next such number or the end.
QUESTION = re.compile(r"\b\d+\s*[:.!?-]+\s*(.+?)\s*(?=\b\d+\s*[:.!?-]+\s*|$)", re.DOTALL)
# Then `*`, whitespace, `#`, `.` and `!` are trimmed from both ends.
TRIM = re.compile(r"^[\*\s#.!]*(.+?)[\*\s#.!]*$", re.DOTALL)


class ShortToLongConfig(DocumentSource, ModelStep, Seeded):
    chunk_tokens: int = Field(128, ge=8, description="short chunk budget (reference: 30000)")
    min_chunk_tokens: int = Field(32, ge=0, description="shorter chunks are dropped "
                                  "(reference: 16384)")
    context_tokens: int = Field(512, ge=16, description="long context budget (reference: the "
                                "~128K-token documents, process_length 131072)")
    min_context_chunks: int = Field(2, ge=1, description="a long context needs this many chunks")
    max_contexts: int | None = Field(None, ge=1, description="use only the first N contexts")
    num_questions: int = Field(4, ge=1, description="questions asked for per chunk (reference 4)")
    min_questions: int | None = Field(None, ge=1, description="keep a chunk with at least this "
                                      "many parsed questions (default: exactly num_questions)")
    turns: int = Field(2, ge=1, description="turns (chunks) drawn per long context (reference 2)")
    question_temperature: float = Field(0.7, ge=0)
    question_top_p: float = Field(0.9, gt=0, le=1)
    question_max_new_tokens: int = Field(96, ge=1, description="reference: 1024")
    answer_temperature: float = Field(1.0, ge=0)
    answer_top_p: float = Field(1.0, gt=0, le=1)
    answer_max_new_tokens: int = Field(64, ge=1, description="reference: 1024")
    chosen_repetition: float = Field(0.9, ge=0, le=1, description="max repetition ratio")
    rejected_repetition: float = Field(0.95, ge=0, le=1, description="max repetition ratio")
    max_short_tokens: int = Field(32768, ge=1, description="drop a turn whose short sequence "
                                  "(chunk, question, longer answer) is longer")
    batch_size: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _sizes(self) -> ShortToLongConfig:
        if self.min_chunk_tokens > self.chunk_tokens:
            raise ValueError("min_chunk_tokens is larger than chunk_tokens")
        if self.context_tokens <= self.chunk_tokens:
            raise ValueError("context_tokens must be larger than chunk_tokens: the long context "
                             "holds several chunks")
        if self.min_questions is not None and self.min_questions > self.num_questions:
            raise ValueError("min_questions is larger than num_questions")
        return self


@transform("short_to_long", scope="global", consumes="none", produces="preference",
           needs=("generate",))
def short_to_long(frame: pl.LazyFrame, config: ShortToLongConfig, ctx: Context) -> pl.LazyFrame:
    """Preference pairs whose chosen answer saw a short chunk and rejected the long context."""
    seed = config.seed_or(ctx)
    chunks = load_chunks(config, ctx, config.model, config.chunk_tokens, config.min_chunk_tokens)
    turns = long_contexts(chunks, config.context_tokens, config.min_context_chunks,
                          config.max_contexts)
    turns = ask_questions(turns, config, ctx, seed)
    turns = draw_turns(turns, config.turns, seed)
    turns = answer(turns, config, ctx, seed)
    return filter_pairs(turns, config).lazy()


def long_contexts(chunks: pl.DataFrame, context_tokens: int, min_chunks: int,
                  limit: int | None = None) -> pl.DataFrame:
    """One row per chunk of each kept long context, with `context_id`, `long_prompt`."""
    parts = []
    for (doc_id,), group in chunks.group_by("doc_id", maintain_order=True):
        for index, (start, end) in enumerate(pack(group["tokens"], context_tokens)):
            if end - start < min_chunks:
                continue
            window = group.slice(start, end - start)
            parts.append(window.with_columns(
                pl.lit(f"{doc_id}-{index}").alias("context_id"),
                pl.lit("\n\n\n".join(window["text"])).alias("long_prompt"),
                pl.lit(int(window["tokens"].sum())).alias("context_tokens")))
            if limit is not None and len(parts) >= limit:
                break
        if limit is not None and len(parts) >= limit:
            break
    if not parts:
        return chunks.head(0).with_columns(pl.lit(None, pl.String).alias("context_id"),
                                           pl.lit(None, pl.String).alias("long_prompt"),
                                           pl.lit(None, pl.Int64).alias("context_tokens"))
    return pl.concat(parts).rename({"text": "short_prompt", "tokens": "chunk_tokens"})


def question_prompt(chunk: str, n: int = 4) -> str:
    """generate_qa.py's user message for question generation."""
    return "Context:\n" + chunk + "\n\n" + QUERY_PROMPT.format(n=n)


def parse_questions(text: str) -> list[str]:
    """generate_qa.py's `extract_questions`: numbered items, trimmed, empty ones dropped."""
    return [TRIM.sub(r"\1", q.strip()) for q in QUESTION.findall(text) if q.strip()]


def ask_questions(turns: pl.DataFrame, config: ShortToLongConfig, ctx: Context,
                  seed: int) -> pl.DataFrame:
    """Questions from each short chunk; one drawn, with a phrase, where enough parse."""
    from workbench.models.base import SamplingParams

    params = SamplingParams(temperature=config.question_temperature,
                            top_p=config.question_top_p,
                            max_new_tokens=config.question_max_new_tokens, seed=seed)
    keys = _keys(turns)
    prompts = [[{"role": "user", "content": question_prompt(c, config.num_questions)}]
               for c in turns["short_prompt"]]
    results = _generate(ctx, config, prompts, params, [f"{k}#questions" for k in keys])
    wanted = config.min_questions
    outputs, parsed, raw, phrases, reasons = [], [], [], [], []
    for key, result in zip(keys, results, strict=True):
        text = None if result is None else result[0].text
        questions = parse_questions(text or "")
        enough = (len(questions) >= wanted if wanted is not None
                  else len(questions) == config.num_questions)
        rng = random.Random(f"{seed}:{key}:question")
        outputs.append(text)
        parsed.append(questions)
        raw.append(rng.choice(questions) if questions and enough else None)
        phrases.append(rng.choice(PHRASES))
        if result is None:
            reasons.append(f"{QUARANTINED} (quarantined)")
        elif not enough:
            need = (f"at least {wanted}" if wanted is not None
                    else f"exactly {config.num_questions}")
            reasons.append(f"questions: {need} did not parse")
        else:
            reasons.append(None)
    out = turns.with_columns(pl.Series("question_output", outputs, pl.String),
                             pl.Series("questions", parsed, pl.List(pl.String)),
                             pl.Series("raw_question", raw, pl.String),
                             pl.Series("phrase", phrases, pl.String),
                             pl.Series(DROP, reasons, pl.String))
    return out.with_columns(pl.when(pl.col(DROP).is_null())
                            .then(pl.col("phrase") + " " + pl.col("raw_question"))
                            .alias("question"))


def draw_turns(turns: pl.DataFrame, per_context: int, seed: int) -> pl.DataFrame:
    """At most `per_context` usable chunks per context, in the order drawn (`turn`)."""
    order: dict[int, int] = {}
    usable = turns.with_row_index("_row").filter(pl.col(DROP).is_null())
    for (context_id,), group in usable.group_by("context_id", maintain_order=True):
        rows = group["_row"].to_list()
        if len(rows) > per_context:
            rows = random.Random(f"{seed}:{context_id}:turns").sample(rows, per_context)
        order.update({row: turn for turn, row in enumerate(rows)})
    turn = pl.Series("turn", [order.get(i) for i in range(turns.height)], pl.Int64)
    reason = (pl.when(pl.col(DROP).is_null() & pl.col("turn").is_null())
              .then(pl.lit(f"not drawn (more than {per_context} turns in the context)"))
              .otherwise(pl.col(DROP)))
    return turns.with_columns(turn).with_columns(reason.alias(DROP))


def answer(turns: pl.DataFrame, config: ShortToLongConfig, ctx: Context,
           seed: int) -> pl.DataFrame:
    """chosen from the short chunk, rejected from the long context, for each drawn turn."""
    from workbench.models.base import SamplingParams

    params = SamplingParams(temperature=config.answer_temperature, top_p=config.answer_top_p,
                            max_new_tokens=config.answer_max_new_tokens, seed=seed)
    live = turns.with_row_index("_row").filter(pl.col(DROP).is_null())
    short = (live["short_prompt"] + "\n\n" + live["question"]).to_list()
    long = (live["long_prompt"] + "\n\n" + live["question"]).to_list()
    keys = _keys(live)
    prompts = [[{"role": "user", "content": text}] for text in short + long]
    results = _generate(ctx, config, prompts, params,
                        [f"{k}#chosen" for k in keys] + [f"{k}#rejected" for k in keys])
    n = live.height
    values: dict[str, list[Any]] = {name: [None] * turns.height for name in (
        "chosen", "rejected", "chosen_finish_reason", "rejected_finish_reason",
        "short_tokens", "failed")}
    for i, row in enumerate(live["_row"]):
        chosen, rejected = results[i], results[n + i]
        values["failed"][row] = chosen is None or rejected is None
        if chosen is not None:
            values["chosen"][row] = chosen[0].text
            values["chosen_finish_reason"][row] = chosen[0].finish_reason
        if rejected is not None:
            values["rejected"][row] = rejected[0].text
            values["rejected_finish_reason"][row] = rejected[0].finish_reason
        if chosen is not None and rejected is not None:
            values["short_tokens"][row] = chosen[0].prompt_tokens + max(
                chosen[0].completion_tokens, rejected[0].completion_tokens)
    types = {"short_tokens": pl.Int64, "failed": pl.Boolean}
    out = turns.with_columns(pl.Series(k, v, types.get(k, pl.String)) for k, v in values.items())
    user = pl.struct(pl.lit("user").alias("role"), pl.col("_text").alias("content"))
    out = out.with_columns(
        pl.when(pl.col("failed")).then(pl.lit(f"{QUARANTINED} (quarantined)"))
        .otherwise(pl.col(DROP)).alias(DROP),
        (pl.col("long_prompt") + "\n\n" + pl.col("question")).alias("_text"))
    out = out.with_columns(pl.concat_list(user).alias("prompt")).drop("_text")
    out = out.with_columns((pl.col("short_prompt") + "\n\n" + pl.col("question")).alias("_text"))
    return out.with_columns(pl.concat_list(user).alias("chosen_prompt")).drop("_text", "failed")


def meaningless(column: str, threshold: float, min_word_length: int = 3) -> pl.Expr:
    """postprocess_longpo_pair.py's `is_meaningless_response` as an expression: lowercased,
    punctuation removed, split on whitespace; true if there are no words, if the share of word
    occurrences whose word occurs more than once exceeds `threshold`, or if fewer than 2 words
    have `min_word_length` characters."""
    words = (pl.col(column).str.to_lowercase().str.replace_all(r"[^\w\s]", "")
             .str.extract_all(r"\S+"))
    total = words.list.len()
    repeated = words.list.eval(pl.element().is_duplicated()).list.sum()
    long = words.list.eval(pl.element().str.len_chars() >= min_word_length).list.sum()
    return (total == 0) | (repeated / total > threshold) | (long < 2)


def repeated_word_share(column: str) -> pl.Expr:
    """The repetition ratio alone (occurrences of repeated words / words), for inspection."""
    words = (pl.col(column).str.to_lowercase().str.replace_all(r"[^\w\s]", "")
             .str.extract_all(r"\S+"))
    return words.list.eval(pl.element().is_duplicated()).list.sum() / words.list.len()


def refusal(*columns: str) -> pl.Expr:
    """Any refusal phrase, case-insensitively, in the columns joined by newlines."""
    text = pl.concat_str([pl.col(c).str.to_lowercase() for c in columns], separator="\n")
    return text.str.contains_any([p.lower() for p in REFUSALS])


def filter_pairs(turns: pl.DataFrame, config: ShortToLongConfig) -> pl.DataFrame:
    """The reference filters as drop reasons, in its order; earlier reasons win."""
    live = pl.col(DROP).is_null()
    reason = (
        pl.when(~live).then(pl.col(DROP))
        .when(pl.col("rejected") == "").then(pl.lit("empty rejected response"))
        .when(pl.col("chosen") == "").then(pl.lit("empty chosen response"))
        .when(meaningless("rejected", config.rejected_repetition))
        .then(pl.lit(f"meaningless rejected response (repetition > "
                     f"{config.rejected_repetition} or < 2 words of 3+ letters)"))
        .when(meaningless("chosen", config.chosen_repetition))
        .then(pl.lit(f"meaningless chosen response (repetition > {config.chosen_repetition} "
                     "or < 2 words of 3+ letters)"))
        .when(refusal("rejected", "chosen")).then(pl.lit("refusal phrase in a response"))
        .when(pl.col("short_tokens") > config.max_short_tokens)
        .then(pl.lit(f"short sequence over {config.max_short_tokens} tokens"))
    )
    out = turns.with_columns(reason.alias(DROP))
    first = ["prompt", "chosen", "rejected", "question", "short_prompt", "long_prompt",
             "context_id", "turn"]
    return out.select(*first, *[c for c in out.columns if c not in first])


def _keys(frame: pl.DataFrame) -> list[str]:
    return [f"{d}:{c}" for d, c in zip(frame["doc_id"], frame["chunk_index"], strict=True)]


def _generate(ctx: Context, config: ShortToLongConfig, prompts: list[Any], params: Any,
              keys: list[str]) -> list[Any]:
    if not prompts:
        return []
    return ctx.call(config.model, "generate", prompts, params, row_ids=keys, sample_ids=keys,
                    batch_size=config.batch_size)
