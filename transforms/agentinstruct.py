"""`agentinstruct`: AgentInstruct's three flows over raw documents (docs/methods.md §2).

1. **Content transformation.** Per chunk, `min(agents_per_chunk, #agents)` content agents
   (drawn with the seed) rewrite the chunk into a passage suited to the skill: an argument, a
   debate, a poem, ... or the chunk itself (`identity`, no model call). An agent that answers
   `IRRELEVANT` drops its passage, with the reason counted.
2. **Seed instructions.** Per chunk, `min(types_per_chunk, #types)` types of the skill's
   taxonomy; the agent of each type writes one question and its answer for every passage.
   The instruction is the passage plus the question (the skill's `instruction` template), so
   it is self-contained by construction rather than by trusting the model to copy the text.
3. **Refinement.** `rounds` suggester-editor rounds: each item gets `goals_per_item` goals;
   the suggester proposes changes, the editor applies them (it may rewrite the passage too).
   A round replaces the pool; a chunk none of whose items could be refined in a round keeps
   its previous items (as open-agentinstruct does), and an item left unrefined in a chunk
   that was refined is dropped with its reason. Refined instructions are answered again by a
   separate call (the skill's `answer_system` as system turn): the editor's answer is kept
   as `editor_answer`, never as the response.

Fan-out is capped: no stage plans more than `max_per_chunk` model calls per chunk; the
items left out are dropped with the reason `fan-out cap`. Model output that cannot be used
(empty, IRRELEVANT, no question or answer, a failed call) drops its row with a named
reason; nothing crashes, and every item planned either comes out or is a dropped row. Every
row carries its agents (`content_agent`, `instruction_agent`, `refinement_round`,
`refinement_goal`, `suggestion`), its source (`source_chunk`, `doc_id`, `source`,
`chunk_index`) and its `lineage` (chunk/agent/type/round-goal, the call cache's sample id).
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import Field, model_validator

from transforms._support.agentinstruct_taxonomy import (
    Skill,
    builtin_files,
    builtin_skill_names,
    load_skills,
)
from transforms._support.doc_source import DocumentSource, load_chunks
from workbench.errors import PipelineError
from workbench.schema import MESSAGES
from workbench.transform import DROP, QUARANTINED, Context, ModelStep, Seeded, transform

IRRELEVANT = re.compile(r"^\W*IRRELEVANT\W*$", re.IGNORECASE)
# `Question:`, `**Instruction:**`, `Modified Answer:`, `The question:`, `Passage 1:` ...
# A label starts a line (after markdown marks) or follows the end of a sentence.
LABEL = re.compile(r"(?:^|(?<=[.?!] ))[ \t>#*_-]*(?:the\s+|modified\s+|new\s+|revised\s+)?"
                   r"(question|instruction|answer|passage)s?(?:\s*\d+)?[*_]*\s*[:：][*_]*[ \t]*",
                   re.IGNORECASE | re.MULTILINE)
FENCE = re.compile(r"```[^\n]*\n?")
FENCED = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)  # a code block (to the end if unclosed)


class AgentInstructConfig(DocumentSource, ModelStep, Seeded):
    skill: str = Field("reading_comprehension",
                       description="a skill of the taxonomy (built in: "
                       f"{', '.join(builtin_skill_names())}; or one of your `taxonomy:` file)",
                       json_schema_extra={"choices": list(builtin_skill_names())})
    taxonomy: str | None = Field(None, description="your own taxonomy YAML (same layout as "
                                 "the files in transforms/data/agentinstruct/), added to the "
                                 "built-in skills")
    content_agents: list[str] | None = Field(None, description="use only these content agents")
    types: list[str] | None = Field(None, description="use only these instruction types")
    agents_per_chunk: int = Field(3, ge=1, description="content agents drawn per chunk")
    types_per_chunk: int = Field(3, ge=1, description="instruction types drawn per chunk")
    rounds: int = Field(1, ge=0, description="suggester-editor rounds (0: seeds only)")
    goals_per_item: int = Field(3, ge=1, description="refinement goals drawn per item")
    max_per_chunk: int = Field(9, ge=1, description="fan-out cap: model calls planned per "
                               "chunk and stage")
    chunk_tokens: int = Field(512, ge=16, description="chunk budget (open-agentinstruct: "
                              "20,000 characters)")
    min_chunk_tokens: int = Field(32, ge=0)
    max_chunks: int | None = Field(None, ge=1, description="use only the first N chunks")
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.9, gt=0, le=1)
    max_new_tokens: int = Field(512, ge=1, description="for every agent call")
    answer_max_new_tokens: int | None = Field(None, ge=1,
                                              description="for the final answers (default: "
                                              "max_new_tokens)")

    @model_validator(mode="after")
    def _sizes(self) -> AgentInstructConfig:
        if self.min_chunk_tokens > self.chunk_tokens:
            raise ValueError("min_chunk_tokens is larger than chunk_tokens")
        return self

    def extra_files(self, base_dir: Path | None) -> list[Path]:
        return [*builtin_files(), *([_path(self.taxonomy, base_dir)] if self.taxonomy else [])]


@dataclass(frozen=True)
class Item:
    """One unit of work as it moves through the flows; becomes one output (or dropped) row."""

    key: str  # its lineage, e.g. "doc:0/debate/inference/r1g2": the call-cache sample id
    doc_id: str
    source: str
    chunk_index: int
    source_chunk: str
    content_agent: str | None = None
    passage: str | None = None
    instruction_agent: str | None = None
    question: str | None = None
    answer: str | None = None
    seed_question: str | None = None
    seed_answer: str | None = None
    refinement_round: int = 0
    refinement_goal: str | None = None
    suggestion: str | None = None
    editor_answer: str | None = None
    response: str | None = None
    # why each generated text ended ("stop", or "length" when cut at max_new_tokens):
    # quality_filter drops rows whose instruction or response was cut off
    passage_finish_reason: str | None = None
    instruction_finish_reason: str | None = None
    finish_reason: str | None = None
    raw_output: str | None = None
    drop: str | None = None


@transform("agentinstruct", scope="global", consumes="none", produces="sft",
           needs=("generate",))
def agentinstruct(frame: pl.LazyFrame, config: AgentInstructConfig, ctx: Context) -> pl.LazyFrame:
    """Instructions and answers from documents through AgentInstruct's three flows."""
    skill = _skill(config, ctx)
    chunks = load_chunks(config, ctx, config.model, config.chunk_tokens,
                         config.min_chunk_tokens, config.max_chunks)
    flow = Flow(config, ctx, skill)
    items = [Item(key=f"{c['doc_id']}:{c['chunk_index']}", doc_id=c["doc_id"],
                  source=c["source"], chunk_index=c["chunk_index"], source_chunk=c["text"])
             for c in chunks.iter_rows(named=True)]
    items = flow.transform_content(items)
    items = flow.seed_instructions(items)
    for round_number in range(1, config.rounds + 1):
        items = flow.refine(items, round_number)
    items = flow.answer(items)
    ctx.report(flow.report(items))
    return rows(items + flow.dropped, skill, config.skill).lazy()


def _skill(config: AgentInstructConfig, ctx: Context) -> Skill:
    skills = load_skills(ctx.path(config.taxonomy) if config.taxonomy else None)
    if config.skill not in skills:
        raise PipelineError(f"unknown skill {config.skill!r} (skills: {', '.join(skills)})")
    skill = skills[config.skill]
    agents = {a.name for a in skill.content_agents}
    for chosen, known, what in ((config.content_agents, agents, "content agent"),
                                (config.types, set(skill.types), "instruction type")):
        unknown = sorted(set(chosen or ()) - known)
        if unknown:
            raise PipelineError(f"skill {config.skill!r} has no {what} {unknown[0]!r} "
                                f"(it has: {', '.join(sorted(known))})")
    return skill


def _path(value: str, base_dir: Path | None) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() or base_dir is None else base_dir / path


class Flow:
    """The three flows over a list of items; unusable items land in `dropped`."""

    def __init__(self, config: AgentInstructConfig, ctx: Context, skill: Skill) -> None:
        from workbench.models.base import SamplingParams

        self.config, self.ctx, self.skill = config, ctx, skill
        self.seed = config.seed_or(ctx)
        self.finished: dict[str, str | None] = {}  # "KEY#stage" -> the call's finish_reason
        self.params = SamplingParams(temperature=config.temperature, top_p=config.top_p,
                                     max_new_tokens=config.max_new_tokens, seed=self.seed)
        self.answer_params = replace(self.params, max_new_tokens=config.answer_max_new_tokens
                                     or config.max_new_tokens)
        self.agents = [a for a in skill.content_agents
                       if config.content_agents is None or a.name in config.content_agents]
        self.types = [t for t in skill.types if config.types is None or t in config.types]
        self.dropped: list[Item] = []
        # what the worked examples say, to catch a small model copying them instead of working
        self.copies = {"content": (skill.content_example or {}).get("reply"),
                       "seed": parse_labeled((skill.instruction_example or {}).get("reply", "")),
                       "edit": parse_labeled((skill.editor_example or {}).get("reply", ""))}

    # flow 1 -----------------------------------------------------------------------------------
    def transform_content(self, chunks: list[Item]) -> list[Item]:
        planned = []
        for chunk in chunks:
            rng = self._rng(chunk.key, "content")
            for agent in rng.sample(self.agents, min(self.config.agents_per_chunk,
                                                     len(self.agents))):
                planned.append(replace(chunk, key=f"{chunk.key}/{agent.name}",
                                       content_agent=agent.name))
        planned = self._cap(planned)
        by_name = {a.name: a for a in self.agents}
        verbatim = [replace(i, passage=i.source_chunk) for i in planned
                    if by_name[i.content_agent].identity]
        asked = [i for i in planned if not by_name[i.content_agent].identity]
        example = _example(self.skill.content_prompt, self.skill.content_example)
        prompts = [_chat(self.skill.content_system, self.skill.content_prompt.format(
            task=by_name[i.content_agent].task, text=i.source_chunk), example) for i in asked]
        done = []
        for item, text in zip(asked, self._generate(asked, prompts, "content"), strict=True):
            reason = _unusable(text, "content agent")
            if not reason and _copied(text, self.copies["content"]):
                reason = "copied the worked example (content agent)"
            if reason:
                self._drop(item, reason, text)
            else:
                done.append(replace(item, passage=text,
                                    passage_finish_reason=self._ended(item, "content")))
        return _ordered(verbatim + done, planned)

    # flow 2 -----------------------------------------------------------------------------------
    def seed_instructions(self, contents: list[Item]) -> list[Item]:
        types_of: dict[str, list[str]] = {}
        planned = []
        for item in contents:
            chunk = _chunk_key(item)
            if chunk not in types_of:
                rng = self._rng(chunk, "types")
                types_of[chunk] = rng.sample(self.types, min(self.config.types_per_chunk,
                                                             len(self.types)))
            planned += [replace(item, key=f"{item.key}/{t}", instruction_agent=t)
                        for t in types_of[chunk]]
        planned = self._cap(planned)
        prompts = [_chat(self.skill.instruction_system, self.skill.instruction_prompt.format(
            passage=i.passage, type=i.instruction_agent.replace("_", " "),
            description=self.skill.types[i.instruction_agent]),
            _example(self.skill.instruction_prompt, self.skill.instruction_example,
                     description=self.skill.types.get(
                         (self.skill.instruction_example or {}).get("type", ""), "")))
            for i in planned]
        seeds = []
        for item, text in zip(planned, self._generate(planned, prompts, "seed"), strict=True):
            reason = _unusable(text, "instruction agent")
            parsed = parse_labeled(text or "")
            if not reason and not (parsed.get("question") and parsed.get("answer")):
                reason = "no Question:/Answer: in instruction agent output"
            if not reason and any(IRRELEVANT.fullmatch(parsed[k]) for k in ("question", "answer")):
                reason = "IRRELEVANT (instruction agent)"
            if not reason and _copies(parsed, self.copies["seed"]):
                reason = "copied the worked example (instruction agent)"
            if reason:
                self._drop(item, reason, text)
                continue
            ended = self._ended(item, "seed")  # question and answer come from one reply
            seeds.append(replace(item, question=parsed["question"], answer=parsed["answer"],
                                 seed_question=parsed["question"], seed_answer=parsed["answer"],
                                 instruction_finish_reason=ended, finish_reason=ended))
        return seeds

    # flow 3 -----------------------------------------------------------------------------------
    def refine(self, items: list[Item], round_number: int) -> list[Item]:
        goals = self.skill.goals
        planned = []
        for item in items:
            rng = self._rng(item.key, "goals", round_number)
            for index in sorted(rng.sample(range(len(goals)),
                                           min(self.config.goals_per_item, len(goals)))):
                planned.append(replace(item, key=f"{item.key}/r{round_number}g{index + 1}",
                                       refinement_round=round_number,
                                       refinement_goal=goals[index]))
        planned = self._cap(planned)
        prompts = [_chat(self.skill.suggester_system, self.skill.suggester_prompt.format(
            passage=i.passage, question=i.question, answer=i.answer, goal=i.refinement_goal))
            for i in planned]
        suggested = []
        for item, text in zip(planned, self._generate(planned, prompts, "suggest"), strict=True):
            reason = _unusable(text, "suggester", irrelevant=False)
            if reason:
                self._drop(item, reason, text)
            else:
                suggested.append(replace(item, suggestion=text))
        prompts = [_chat(self.skill.editor_system, self.skill.editor_prompt.format(
            passage=i.passage, question=i.question, answer=i.answer, suggestion=i.suggestion),
            _example(self.skill.editor_prompt, self.skill.editor_example)) for i in suggested]
        refined = []
        for item, text in zip(suggested, self._generate(suggested, prompts, "edit"), strict=True):
            parsed = parse_labeled(text or "")
            reason = _unusable(text, "editor", irrelevant=False)
            if not reason and not parsed.get("question"):
                reason = "no Question: in editor output"
            if not reason and _copies(parsed, self.copies["edit"]):
                reason = "copied the worked example (editor)"
            if reason:
                self._drop(item, reason, text)
                continue
            refined.append(replace(item, question=parsed["question"],
                                   passage=parsed.get("passage") or item.passage,
                                   answer=parsed.get("answer"),
                                   editor_answer=parsed.get("answer"),
                                   instruction_finish_reason=self._ended(item, "edit")))
        refined_chunks = {_chunk_key(i) for i in refined}
        kept = [i for i in items if _chunk_key(i) not in refined_chunks]  # the reference quirk
        parents = {i.key.rsplit("/", 1)[0] for i in refined}
        for item in items:  # replaced by its chunk's refined items: say so, do not lose it
            if _chunk_key(item) in refined_chunks and item.key not in parents:
                self._drop(item, "not refined while its chunk was (pool replaced)")
        return _ordered(refined + kept, planned + items)

    # final answers ----------------------------------------------------------------------------
    def answer(self, items: list[Item]) -> list[Item]:
        """Seeds keep their agent's answer; refined instructions are answered afresh."""
        refined = [i for i in items if i.refinement_round > 0]
        prompts = [_chat(self.skill.answer_system, self.instruction(i)) for i in refined]
        answers = self._generate(refined, prompts, "answer", self.answer_params)
        fresh = {}
        for item, text in zip(refined, answers, strict=True):
            reason = _unusable(text, "answer", irrelevant=False)
            if reason:
                self._drop(item, reason, text)
            else:
                fresh[item.key] = replace(item, response=text,
                                          finish_reason=self._ended(item, "answer"))
        out = []
        for item in items:
            if item.refinement_round == 0:
                out.append(replace(item, response=item.answer))
            elif item.key in fresh:
                out.append(fresh[item.key])
        return out

    def instruction(self, item: Item) -> str:
        return self.skill.instruction.format(passage=item.passage, question=item.question)

    def report(self, items: list[Item]) -> dict[str, Any]:
        """Taxonomy coverage of the kept rows (docs/methods.md §2.4 asks for it to be balanced)."""
        coverage: dict[str, int] = {}
        for item in items:
            coverage[item.instruction_agent or ""] = coverage.get(item.instruction_agent or "",
                                                                  0) + 1
        return {"instruction_types": dict(sorted(coverage.items())),
                "content_agents": sorted({i.content_agent or "" for i in items})}

    # helpers ----------------------------------------------------------------------------------
    def _rng(self, *parts: Any) -> random.Random:
        return random.Random(":".join(str(p) for p in (self.seed, *parts)))

    def _generate(self, items: list[Item], prompts: list[list[dict[str, str]]], stage: str,
                  params: Any = None) -> list[str | None]:
        """One model call per item; a failed call quarantines (drops) its item."""
        if not items:
            return []
        keys = [f"{i.key}#{stage}" for i in items]
        results = self.ctx.call(self.config.model, "generate", prompts, params or self.params,
                                row_ids=keys, sample_ids=keys, batch_size=self.config.batch_size)
        texts: list[str | None] = []
        for key, result in zip(keys, results, strict=True):
            texts.append(None if result is None else result[0].text.strip())
            self.finished[key] = None if result is None else result[0].finish_reason
        return texts

    def _ended(self, item: Item, stage: str) -> str | None:
        return self.finished.get(f"{item.key}#{stage}")

    def _cap(self, planned: list[Item]) -> list[Item]:
        """At most `max_per_chunk` items per chunk, drawn with the seed; the rest dropped."""
        by_chunk: dict[str, list[Item]] = {}
        for item in planned:
            by_chunk.setdefault(_chunk_key(item), []).append(item)
        kept: set[str] = set()
        for chunk, group in by_chunk.items():
            if len(group) <= self.config.max_per_chunk:
                kept.update(i.key for i in group)
                continue
            rng = self._rng(chunk, "cap", group[0].key)
            kept.update(i.key for i in rng.sample(group, self.config.max_per_chunk))
        for item in planned:
            if item.key not in kept:
                self._drop(item, "fan-out cap (max_per_chunk)")
        return [i for i in planned if i.key in kept]

    def _drop(self, item: Item, reason: str, text: str | None = None) -> None:
        self.dropped.append(replace(item, drop=reason, raw_output=text))


def _chat(system: str, user: str,
          example: tuple[str, str] | None = None) -> list[dict[str, str]]:
    """A chat prompt: optional system turn, optional worked exchange, the request."""
    head = [{"role": "system", "content": system}] if system.strip() else []
    if example is not None:
        head += [{"role": "user", "content": example[0]},
                 {"role": "assistant", "content": example[1]}]
    return [*head, {"role": "user", "content": user}]


def _example(template: str, example: dict[str, str] | None,
             **extra: str) -> tuple[str, str] | None:
    """A skill's worked exchange as (request, reply), or None."""
    if example is None:
        return None
    values = {**extra, **{k: v for k, v in example.items() if k != "reply"}}
    if "type" in values:
        values["type"] = values["type"].replace("_", " ")
    return template.format(**values), example["reply"]


def _unusable(text: str | None, who: str, irrelevant: bool = True) -> str | None:
    """The drop reason for a model output that cannot be used, or None."""
    if text is None:
        return f"{QUARANTINED} (quarantined)"
    if not text.strip():
        return f"empty {who} output"
    if irrelevant and IRRELEVANT.fullmatch(text):
        return f"IRRELEVANT ({who})"
    return None


def _copies(parsed: dict[str, str], example: dict[str, str]) -> bool:
    """Whether a parsed reply's question or answer repeats the worked example's."""
    return any(_copied(parsed.get(k) or "", example.get(k)) for k in ("question", "answer"))


def _copied(text: str, reference: str | None) -> bool:
    """Whether `text` repeats `reference` (a worked example's reply or question): equal, or
    one the start of the other (a copy cut off by the token cap), ignoring case, spacing and
    punctuation."""
    if not reference:
        return False
    ours, theirs = _normal(text), _normal(reference)
    shorter = min(len(ours), len(theirs))
    return bool(ours) and (ours == theirs or (shorter >= 20 and (
        theirs.startswith(ours) or ours.startswith(theirs))))


def _normal(text: str) -> str:
    return " ".join(re.sub(r"[\W_]+", " ", text.lower()).split())


def parse_labeled(text: str) -> dict[str, str]:
    """Sections of a model's labelled output: `question` (or `instruction`), `answer`,
    `passage`; the first non-empty section of each label wins; markdown emphasis and
    surrounding quotes are removed. A label inside a code fence counts only when no label
    stands outside one (a reply wrapped in a fence whole), so code that declares
    `answer: int` does not cut a coding answer short; such a wrapping fence is removed,
    fences inside a section are kept."""
    fences = [(m.start(), m.end()) for m in FENCED.finditer(text)]
    outside = [m for m in LABEL.finditer(text)
               if not any(start <= m.start() < end for start, end in fences)]
    if not outside and fences:
        text = FENCE.sub("", text)
    matches = outside or list(LABEL.finditer(text))
    found: dict[str, str] = {}
    if not matches:
        return found
    ends = [m.start() for m in matches[1:]] + [len(text)]
    for match, end in zip(matches, ends, strict=True):
        label = match.group(1).lower()
        body = text[match.end():end]
        body = body.strip().strip("*_").strip().strip('"“”').strip()
        if body and label not in found:
            found[label] = body
    if "question" not in found and "instruction" in found:
        found["question"] = found["instruction"]
    return found


def _chunk_key(item: Item) -> str:
    return f"{item.doc_id}:{item.chunk_index}"


def _ordered(items: list[Item], order: list[Item]) -> list[Item]:
    """`items` in the order their keys first appear in `order` (chunk by chunk, as planned)."""
    position: dict[str, int] = {}
    for item in order:
        position.setdefault(item.key, len(position))
    return sorted(items, key=lambda i: position[i.key])


def rows(items: list[Item], skill: Skill, skill_name: str) -> pl.DataFrame:
    """Kept and dropped items as one frame; the instruction is `prompt`'s user turn."""
    columns = [f.name for f in fields(Item) if f.name not in ("key", "drop", "answer")]
    records = []
    for item in items:
        record = {k: v for k, v in asdict(item).items() if k in columns}
        record["lineage"] = item.key
        known = item.passage is not None and item.question is not None
        record["prompt"] = [{"role": "user", "content": skill.instruction.format(
            passage=item.passage, question=item.question)}] if known else None
        record["skill"] = skill_name
        record[DROP] = item.drop
        records.append(record)
    schema: dict[str, Any] = {name: pl.String for name in [*columns, "lineage", "skill"]}
    schema.update({"chunk_index": pl.Int64, "refinement_round": pl.Int64, "prompt": MESSAGES,
                   DROP: pl.String})
    frame = pl.DataFrame(records, schema=schema)
    return frame.select("prompt", "response", *[c for c in frame.columns
                                                 if c not in ("prompt", "response")])
