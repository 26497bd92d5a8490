"""`magpie_tags`: Magpie's LLM-judged tags plus language and lengths (docs/methods.md §1.6).

Each LLM tag sends Magpie's own prompt (difficulty, input quality, task category) through
the tagger's chat template with the literal `{` as a prefill, greedy, stopping at `}`; the
reply is read as `"{\n" + text + "}"` cut after its last `}`, then parsed as JSON. A reply
that does not parse gives nulls for that tag and its reason in `tag_errors`, counted in the
run log; it never stops the run. Language is lingua's ISO code; lengths are characters, as
Magpie's filter notebook measures them.

The three prompts are Magpie's own (`exp/str_utils.py` of magpie-align/magpie, MIT license),
kept verbatim because the tags are only comparable with released data when asked the same way.
"""

from __future__ import annotations

import json
from typing import Literal

import polars as pl
from pydantic import Field

from workbench.transform import Context, ModelName, ModelStep, transform

DIFFICULTY = '''
# Instruction 

You first need to identify the given user intent and then label the difficulty level of the user query based on the content of the user query.

## User Query
```
{input}
```

## Output Format
Given the user query, in your output, you first need to identify the user intent and the knowledge needed to solve the task in the user query.
Then, rate the difficulty level of the user query as `very easy`, `easy`, `medium`, `hard`, or `very hard`.

Now, please output the user intent and difficulty level below in a json format by filling in the placeholders in []:
```
{{   
    "intent": "The user wants to [....]",
    "knowledge": "To solve this problem, the models need to know [....]",
    "difficulty": "[very easy/easy/medium/hard/very hard]"
}}
```
'''  # noqa: W291 - the reference prompt's trailing spaces are kept

QUALITY = '''
# Instruction

You need to rate the quality of the user query based on its clarity, specificity, and coherence.

The rating scale is as follows:

- very poor: The query is unclear, vague, or incoherent. It lacks essential information and context.
- poor: The query is somewhat unclear or lacks important details. It requires significant clarification.
- average: The query is moderately clear and specific. It may require some additional information for a complete understanding.
- good: The query is clear, specific, and mostly well-formed. It provides sufficient context for understanding the user's intent.
- excellent: The query is very clear, specific, and well-articulated. It contains all the necessary information and context for providing a comprehensive response.

## User Query
```
{input}
```

## Output Format
Given the user query, you first need to give an assesement, highlighting the strengths and/or weaknesses of the user query.
Then, you need to output a rating from very poor to excellent by filling in the placeholders in [...]:
```
{{   
    "explanation": "[...]",
    "input_quality": "[very poor/poor/average/good/excellent]"
}}
```
'''  # noqa: W291

CATEGORY = '''
# Instruction

Please label the task tags for the user query.

## User Query
```
{input}
```

## Tagging the user input
Please label the task tags for the user query. You will need to analyze the user query and select the most relevant task tag from the list below.

all_task_tags = [
    "Information seeking",  # Users ask for specific information or facts about various topics.
    "Reasoning",  # Queries require logical thinking, problem-solving, or processing of complex ideas.
    "Planning",  # Users need assistance in creating plans or strategies for activities and projects.
    "Editing",  # Involves editing, rephrasing, proofreading, or other tasks related to the composition of general written content.
    "Coding & Debugging",  # Users seek help with writing, reviewing, or fixing code in programming.
    "Math",  # Queries related to mathematical concepts, problems, and calculations.
    "Role playing",  # Users engage in scenarios requiring ChatGPT to adopt a character or persona.
    "Data analysis",  # Requests involve interpreting data, statistics, or performing analytical tasks.
    "Creative writing",  # Users seek assistance with crafting stories, poems, or other creative texts. 
    "Advice seeking",  # Users ask for recommendations or guidance on various personal or professional issues.
    "Brainstorming",  # Involves generating ideas, creative thinking, or exploring possibilities. 
    "Others"  # Any queries that do not fit into the above categories or are of a miscellaneous nature.
]

## Output Format:
Note that you can only select a single primary tag. Other applicable tags can be added to the list of other tags.
Now, please output your tags below in a json format by filling in the placeholders in <...>:
```
{{ 
    "primary_tag": "<primary tag>",
    "other_tags": ["<tag 1>", "<tag 2>", ... ]
}}
```
'''  # noqa: W291

# tag -> (prompt, {json key: output column})
LLM_TAGS = {
    "difficulty": (DIFFICULTY, {"intent": "intent", "knowledge": "knowledge",
                                "difficulty": "difficulty"}),
    "quality": (QUALITY, {"explanation": "quality_explanation", "input_quality": "input_quality"}),
    "category": (CATEGORY, {"primary_tag": "task_category", "other_tags": "other_task_category"}),
}
GENERATOR_COLUMN = {"difficulty": "difficulty_generator", "quality": "quality_generator",
                    "category": "task_category_generator"}
Tag = Literal["difficulty", "quality", "category", "language", "length"]


class MagpieTagsConfig(ModelStep):
    model: ModelName = Field("default", description="the tagger (a name under `models:`)")
    tags: list[Tag] = Field(default_factory=lambda: ["difficulty", "quality", "category",
                                                     "language", "length"])
    max_new_tokens: int = Field(1024, ge=8, description="reference: 1024")


def parse_tag_reply(text: str | None) -> tuple[dict | None, str | None]:
    """Magpie's reading of a tagger reply that followed the `{` prefill and stopped at `}`."""
    if text is None:
        return None, "no reply from the tagger"
    body = "{\n" + text.strip()
    body = body[: body.rfind("}") + 1]
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        return None, f"unparseable JSON ({exc.msg})"
    if not isinstance(value, dict):
        return None, "JSON is not an object"
    return value, None


@transform("magpie_tags", scope="row", consumes="any", produces="same",
           keeps_content=True)
def magpie_tags(frame: pl.LazyFrame, config: MagpieTagsConfig, ctx: Context) -> pl.LazyFrame:
    """Tag each row's (first-turn) instruction; unparseable tags are nulls with a reason."""
    data = frame.collect()
    instruction = data.select(pl.col("prompt").list.eval(
        pl.element().filter(pl.element().struct.field("role") == "user")
        .struct.field("content")).list.first().fill_null("")).to_series().to_list()
    columns: dict[str, pl.Series] = {}
    errors: list[list[str]] = [[] for _ in instruction]
    for tag in (t for t in config.tags if t in LLM_TAGS):
        values, problems = _llm_tag(tag, instruction, data["id"].to_list(), config, ctx)
        for column, series in values.items():
            columns[column] = series
        for i, problem in enumerate(problems):
            if problem:
                errors[i].append(f"{tag}: {problem}")
                reason = f"{tag} tags nulled: {problem.split(' (')[0]}"
                ctx.count_nulled(reason)
    if "language" in config.tags:
        from workbench.algorithms.language import detect_languages

        columns["language"] = pl.Series("language", detect_languages(instruction), pl.String)
    out = data.with_columns(list(columns.values()))
    if "length" in config.tags:
        out = out.with_columns(pl.Series("instruction_length", [len(t) for t in instruction]))
        if "response" in out.columns:
            out = out.with_columns(pl.col("response").str.len_chars().alias("response_length"))
    if any(t in LLM_TAGS for t in config.tags):
        out = out.with_columns(pl.Series("tag_errors", errors, pl.List(pl.String)))
    return out.lazy()


def _llm_tag(tag: str, instructions: list[str], ids: list[str], config: MagpieTagsConfig,
             ctx: Context) -> tuple[dict[str, pl.Series], list[str | None]]:
    from workbench.models.base import SamplingParams

    template, keys = LLM_TAGS[tag]
    prompts = [[{"role": "user", "content": template.format(input=text)},
                {"role": "assistant", "content": "{"}] for text in instructions]
    params = SamplingParams(max_new_tokens=config.max_new_tokens, stop=("}",), seed=ctx.seed)
    results = ctx.call(config.model, "generate", prompts, params,
                       row_ids=[f"{i}:tag:{tag}" for i in ids], batch_size=config.batch_size)
    parsed = []
    for result in results:
        gen = result[0] if result else None
        # the stop string is cut from the text; the reference keeps it, so put it back
        text = None if gen is None else gen.text + ("}" if gen.finish_reason == "stop" else "")
        parsed.append(parse_tag_reply(text))
    values: dict[str, pl.Series] = {}
    for key, column in keys.items():
        raw = [(value or {}).get(key) for value, _ in parsed]
        if column == "other_task_category":
            cells = [[str(v) for v in x] if isinstance(x, list) else None for x in raw]
            values[column] = pl.Series(column, cells, pl.List(pl.String))
        else:
            cells = [None if x is None else str(x) for x in raw]
            values[column] = pl.Series(column, cells, pl.String)
    generator = str(ctx.model(config.model).fingerprint().get("model"))
    column = GENERATOR_COLUMN[tag]
    values[column] = pl.Series(column, [None if v is None else generator for v, _ in parsed],
                               pl.String)
    return values, [problem for _, problem in parsed]
