"""`agentinstruct` (docs/methods.md §2): taxonomy file and user skills, output parsing, the flows
end to end on a real novel with the embedded model, and garbage model output dropped with
counted reasons (scripted backend)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from conftest import DATA
from scripted_backend import FAIL, ScriptedBackend, install

from transforms._support.agentinstruct_taxonomy import load_skills
from transforms.agentinstruct import parse_labeled
from workbench.errors import InputError, PipelineError
from workbench.pipeline import build_pipeline, load_pipeline
from workbench.runner import run_pipeline

WAR = DATA / "documents" / "war_of_the_worlds_ch1-2.jsonl"
PROVENANCE = ["skill", "content_agent", "instruction_agent", "refinement_round", "source_chunk",
              "passage", "doc_id", "source", "chunk_index", "seed_question", "lineage"]


def test_builtin_taxonomy_covers_reading_comprehension():
    skill = load_skills()["reading_comprehension"]
    agents = {a.name for a in skill.content_agents}
    assert {"argument", "debate", "conversation", "meeting", "poem", "satire", "instructions",
            "expansion", "identity"} == agents  # the paper's nine RC transformations
    assert {"main_idea", "detail", "inference", "vocabulary_in_context", "strengthen",
            "weaken", "assumption", "flaw"} <= set(skill.types)
    assert len(skill.types) >= 15 and len(skill.goals) >= 3
    assert "{passage}" in skill.instruction and "{question}" in skill.instruction


def test_users_add_skills_in_their_own_file(tmp_path: Path):
    own = tmp_path / "skills.yaml"
    own.write_text(
        "skills:\n"
        "  legal_reading:\n"
        "    extends: reading_comprehension\n"
        "    types:\n"
        "      holding: asks what the court decided.\n"
        "  reading_comprehension:\n"
        "    extends: reading_comprehension\n"  # the built-in one, replaced by name
        "    goals: [Make it harder.]\n")
    skills = load_skills(own)
    assert list(skills["legal_reading"].types) == ["holding"]
    assert skills["legal_reading"].content_agents == skills["reading_comprehension"].content_agents
    assert skills["reading_comprehension"].goals == ["Make it harder."]
    bad = tmp_path / "bad.yaml"
    bad.write_text("skills:\n  x:\n    extends: reading_comprehension\n"
                   "    instruction_prompt: 'Ask about {pasage}'\n")
    with pytest.raises(InputError, match=r"bad\.yaml: skill 'x': instruction_prompt: unknown "
                                         r"placeholder \{pasage\}"):
        load_skills(bad)
    with pytest.raises(InputError, match="a taxonomy file is a mapping"):
        (tmp_path / "list.yaml").write_text("- a\n")
        load_skills(tmp_path / "list.yaml")


@pytest.mark.parametrize(("text", "expected"), [
    ("Question: Why?\nAnswer: Because.", {"question": "Why?", "answer": "Because."}),
    ("**Question:** Why?\n\n**Answer:** Because.", {"question": "Why?", "answer": "Because."}),
    ("The question: What is it?\nThe answer: A cat.", {"question": "What is it?",
                                                       "answer": "A cat."}),
    ("Modified Instruction:\nWhat now?\nModified Answer:\nThis.", {"question": "What now?",
                                                                   "answer": "This."}),
    ("Question 1: A? Answer 1: B", {"question": "A?", "answer": "B"}),
    ("Passage: New text.\nQuestion: According to the passage: why?\nAnswer: no",
     {"passage": "New text.", "question": "According to the passage: why?", "answer": "no"}),
    ("Instruction: Read the following passage:\n\nfoo\n\nQuestion: What?\nAnswer: bar",
     {"question": "What?", "answer": "bar"}),
    ("```\nQuestion: Q?\nAnswer: A\n```", {"question": "Q?", "answer": "A"}),
    ("Instructions: Shorten it.\nAnswer: Short.", {"question": "Shorten it.", "answer": "Short."}),
    # a label inside a code block is code, not a new section
    ("Question: Write f.\nAnswer:\n```python\ndef f(answer: int):\n    question: str = ''\n```",
     {"question": "Write f.", "answer": "```python\ndef f(answer: int):\n    question: str = ''\n```"}),
    ("How to answer: Question: Question:", {}),
    ("The passage is about Mars.", {}),
    ("", {}),
])
def test_labelled_output_parsing(text: str, expected: dict):
    found = parse_labeled(text)
    assert {k: v for k, v in found.items() if k != "instruction"} == expected


def check_rows(rows: pl.DataFrame) -> None:
    """docs/methods.md §2.4's structural checks."""
    assert rows.height >= 1
    for column in PROVENANCE:
        assert rows[column].null_count() == 0, column
    for row in rows.iter_rows(named=True):
        skill = load_skills()[row["skill"]]
        instruction = row["prompt"][-1]["content"]
        assert instruction.strip() and row["response"].strip()
        # self-contained: the skill's template filled with this row's passage and question
        assert instruction == skill.instruction.format(passage=row["passage"],
                                                       question=row["question"])
        assert row["question"] in instruction
        assert (row["passage"] in instruction) == ("{passage}" in skill.instruction)
        assert row["instruction_agent"] in skill.types
        assert row["content_agent"] in {a.name for a in skill.content_agents}
        assert row["lineage"].split("/")[1:3] == [row["content_agent"], row["instruction_agent"]]
        if row["refinement_round"] > 0:
            assert row["refinement_goal"] in skill.goals and row["suggestion"]


@pytest.mark.slow
def test_end_to_end_on_a_novel_with_the_embedded_model(ws):
    spec = build_pipeline({
        "name": "ai", "seed": 0, "models": {"default": {"backend": "transformers",
                                                        "model": "embedded"}},
        "steps": [{"agentinstruct": {
            "documents": [str(WAR)], "chunk_tokens": 48, "max_chunks": 1,
            "content_agents": ["identity"], "types": ["main_idea", "detail"],
            "types_per_chunk": 2, "goals_per_item": 1, "rounds": 1, "max_new_tokens": 20,
            "batch_size": 4}}],
        "output": "instructions"})
    result = run_pipeline(spec, ws, progress=False)
    rows = ws.read("instructions")
    check_rows(rows)
    assert (rows["source_chunk"] == rows["source_chunk"][0]).all()
    assert rows["source"][0].endswith("war_of_the_worlds_ch1-2.jsonl")
    step = result.steps[0]
    assert step.detail["model_calls"]["computed"] >= 2 + 2 * rows.height
    assert ws.resolve("instructions").kind == "sft"


def stage(prompt: list[dict[str, str]]) -> str:
    system = prompt[0]["content"] if prompt[0]["role"] == "system" else ""
    for name, marker in (("content", "rewrite source texts"), ("seed", "writes reading"),
                         ("suggest", "suggest concrete"), ("edit", "applying suggested")):
        if marker in system:
            return name
    return "answer"


def scripted_reply(prompt: list[dict[str, str]]) -> object:
    """Good output, except for a document whose name says which stage returns garbage."""
    text, where = prompt[-1]["content"], stage(prompt)
    if where == "content":
        chunk = text.split("\n\n")[0]  # the content prompt starts with the chunk
        return "IRRELEVANT" if "irrelevant" in chunk else f"A poem about this: {chunk}"
    garbage = {"seed": {"nolabels": "I like turtles.", "emptyseed": "", "failseed": FAIL,
                        "badanswer": "Question: Why?\nAnswer: IRRELEVANT"},
               "suggest": {"nosuggestion": "  "},
               "edit": {"noedit": "Answer: only an answer, no question"},
               "answer": {"noanswer": ""}}[where]
    for word, reply in garbage.items():
        if word in text:
            return reply
    return {"seed": "Question: What grows in the garden?\nAnswer: Roses.",
            "suggest": "1. Ask about two facts.",
            "edit": "Question: What grows in the garden, and what stands in it?\nAnswer: "
                    "Roses and a fountain.",
            "answer": "Roses grow there, and a fountain stands in it."}[where]


def test_garbage_model_output_is_dropped_with_counted_reasons(tmp_path: Path, ws, monkeypatch):
    words = ["good", "irrelevant", "nolabels", "emptyseed", "nosuggestion", "noedit",
             "noanswer", "failseed", "badanswer"]
    for word in words:
        (tmp_path / f"{word}.md").write_text(f"# {word}\n\nThe {word} garden had roses and "
                                             "a fountain.")
    backend = ScriptedBackend(scripted_reply, "agentinstruct-garbage")
    spec = build_pipeline({
        "name": "ai", "seed": 0, "models": {"default": install(monkeypatch, backend)},
        "steps": [{"agentinstruct": {"documents": [str(tmp_path)], "content_agents": ["poem"],
                                     "types": ["detail"], "goals_per_item": 1, "rounds": 1,
                                     "chunk_tokens": 64, "min_chunk_tokens": 1}}],
        "output": "instructions"})
    result = run_pipeline(spec, ws, progress=False)
    assert result.steps[0].dropped == {
        "IRRELEVANT (content agent)": 1,
        "IRRELEVANT (instruction agent)": 1,
        "no Question:/Answer: in instruction agent output": 1,
        "empty instruction agent output": 1,
        "empty suggester output": 1,
        "no Question: in editor output": 1,
        "empty answer output": 1,
        "model call failed (quarantined)": 1,
    }
    rows = ws.read("instructions")
    # good is refined and answered afresh; the chunks of noedit and nosuggestion, none of
    # whose items could be refined, keep their seeds (open-agentinstruct keeps the pool)
    assert rows.height == 3
    refined = rows.filter(pl.col("refinement_round") == 1).row(0, named=True)
    assert "good" in refined["source_chunk"]
    assert refined["response"] == "Roses grow there, and a fountain stands in it."
    assert refined["editor_answer"] == "Roses and a fountain."  # kept, not trusted
    assert refined["seed_question"] == "What grows in the garden?"
    assert refined["suggestion"] == "1. Ask about two facts."
    seeds = rows.filter(pl.col("refinement_round") == 0)
    assert sorted(seeds["source_chunk"].str.extract(r"# (\w+)").to_list()) == ["noedit",
                                                                               "nosuggestion"]
    assert (seeds["response"] == "Roses.").all()
    check_rows(rows)


def test_fan_out_is_capped_per_chunk(ws, monkeypatch, tmp_path: Path):
    (tmp_path / "d.txt").write_text("The good garden had roses and a fountain.")
    backend = ScriptedBackend(scripted_reply, "agentinstruct-cap")
    spec = build_pipeline({
        "name": "cap", "seed": 3, "models": {"default": install(monkeypatch, backend)},
        "steps": [{"agentinstruct": {"documents": [str(tmp_path / "d.txt")],
                                     "agents_per_chunk": 3, "types_per_chunk": 3,
                                     "goals_per_item": 3, "rounds": 2, "max_per_chunk": 4,
                                     "min_chunk_tokens": 1}}],
        "output": "capped"})
    result = run_pipeline(spec, ws, progress=False)
    rows = ws.read("capped")
    assert rows.height == 4 and (rows["refinement_round"] == 2).all()
    # 3 content agents -> 9 seeds planned (5 capped) -> 12 refinements planned per round (8
    # capped); an item none of whose refinements was kept leaves with its own reason
    assert result.steps[0].dropped == {"fan-out cap (max_per_chunk)": 5 + 8 + 8,
                                       "not refined while its chunk was (pool replaced)": 2}
    assert rows["instruction_agent"].n_unique() >= 1 and rows["content_agent"].n_unique() >= 1


def test_unknown_skill_agent_or_missing_documents_are_clear_errors(ws, tmp_path: Path):
    (tmp_path / "d.txt").write_text("Some text.")
    for options, message in (({"skill": "nope"}, "unknown skill 'nope'"),
                             ({"content_agents": ["haiku"]}, "no content agent 'haiku'"),
                             ({"documents": ["missing.txt"]}, "missing.txt: no such document")):
        spec = build_pipeline({"name": "err", "models": {"default": {}},
                               "steps": [{"agentinstruct": {"documents": [str(tmp_path / "d.txt")],
                                                            **options}}]}, base_dir=tmp_path)
        with pytest.raises(PipelineError, match=message):
            run_pipeline(spec, ws, progress=False)


def test_example_pipelines_validate_and_resolve_their_documents():
    for name in ("agentinstruct", "short_to_long"):
        pipeline = load_pipeline(DATA / "pipelines" / f"{name}.yaml")
        config = pipeline.steps[0].transform.config
        assert len(config.input_digest(pipeline.base_dir)) == 64  # its documents were found


def test_editing_a_document_runs_the_step_again(ws, monkeypatch, tmp_path: Path):
    doc = tmp_path / "d.txt"
    doc.write_text("The good garden had roses and a fountain.")
    backend = ScriptedBackend(scripted_reply, "agentinstruct-edit")
    spec = build_pipeline({
        "name": "edit", "models": {"default": install(monkeypatch, backend)},
        "steps": [{"agentinstruct": {"documents": [str(doc)], "content_agents": ["identity"],
                                     "types": ["detail"], "rounds": 0, "min_chunk_tokens": 1}}],
        "output": "instructions"})
    assert run_pipeline(spec, ws, progress=False).steps[0].status == "ran"
    assert run_pipeline(spec, ws, progress=False).steps[0].status == "cached"
    doc.write_text("The good orchard had apples and a well.")
    assert run_pipeline(spec, ws, progress=False).steps[0].status == "ran"
    assert "orchard" in ws.read("instructions")["source_chunk"][0]
