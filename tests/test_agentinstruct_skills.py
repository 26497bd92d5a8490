"""`agentinstruct` beyond reading comprehension (docs/methods.md §2): every built-in skill runs
end to end on `data/documents/` with the embedded model and passes the structural check; the
same skills on a scripted backend with well-formed replies go through refinement, the
"unanswerable" goals included; every item that does not come out is a dropped row with its
reason; `workbench transforms --json` lists the skills."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from conftest import DATA
from scripted_backend import ScriptedBackend, install
from test_agentinstruct import check_rows

from transforms._support.agentinstruct_taxonomy import Skill, load_skills
from workbench.engine import parts
from workbench.engine.finalize import DROPPED_DIR
from workbench.errors import InputError
from workbench.pipeline import build_pipeline
from workbench.runner import run_pipeline

WAR = DATA / "documents" / "war_of_the_worlds_ch1-2.jsonl"
ALICE = DATA / "documents" / "alice_ch1-2.txt"
SKILLS = ["text_modification", "tool_use", "coding", "open_domain_qa", "creative_content",
          "analytical_reasoning"]
# a goal that asks for a question the material cannot answer (the paper's "unanswerable")
UNANSWERABLE = re.compile(r"unanswerable|impossible|undecidable")
NO_ANSWER = "The text does not say."


def dropped_rows(step: Any) -> pl.DataFrame:
    folder = step.checkpoint / DROPPED_DIR
    return parts.scan(folder).collect() if folder.is_dir() else pl.DataFrame(
        schema={"lineage": pl.String, "_drop_reason": pl.String})


def check_accounted(rows: pl.DataFrame, dropped: pl.DataFrame, step: Any, agents: list[str],
                    types: list[str]) -> None:
    """Every seed planned (chunk x content agent x type) comes out, or it or its passage is
    a dropped row with a reason, and the step's drop counts are those rows'."""
    assert dropped["_drop_reason"].null_count() == 0
    counts = dict(dropped.group_by("_drop_reason").len().iter_rows())
    assert counts == step.dropped
    lineages = set(rows["lineage"]) | set(dropped["lineage"])
    chunks = {lineage.split("/")[0] for lineage in lineages}
    assert chunks
    for chunk in chunks:
        for agent in agents:
            for kind in types:
                seed = f"{chunk}/{agent}/{kind}"
                assert (f"{chunk}/{agent}" in set(dropped["lineage"]) or any(
                    lineage == seed or lineage.startswith(seed + "/") for lineage in lineages)
                ), seed


def test_every_built_in_skill_has_its_flow_parts():
    skills = load_skills()
    assert set(SKILLS) | {"reading_comprehension"} <= set(skills)
    for name in SKILLS:
        skill = skills[name]
        assert skill.description and len(skill.content_agents) >= 5 and len(skill.types) >= 10
        assert len(skill.goals) >= 4 and skill.instruction_example and skill.editor_example
        assert "{question}" in skill.instruction
    assert "{passage}" not in skills["open_domain_qa"].instruction  # asked without the text
    assert any(a.identity for a in skills["text_modification"].content_agents)
    for name in ("reading_comprehension", "open_domain_qa", "tool_use", "analytical_reasoning"):
        assert any(UNANSWERABLE.search(goal) for goal in skills[name].goals), name
        assert skills[name].answer_system


# The embedded 135M model's settings for a cheap run that still yields rows: one chunk, one
# content agent, two instruction types, no refinement (test_agentinstruct.py refines on it).
EMBEDDED = {
    "text_modification": ("identity", ["paraphrase", "shortening"]),
    "tool_use": ("web_tools", ["no_tool", "parallel"]),
    "coding": ("data_structure", ["explanation", "implementation"]),
    "open_domain_qa": ("identity", ["definition", "causal"]),
    "creative_content": ("identity", ["poem", "letter"]),
    "analytical_reasoning": ("riddle", ["riddle", "deduction"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("skill", SKILLS)
def test_each_skill_end_to_end_with_the_embedded_model(skill: str, ws):
    agent, types = EMBEDDED[skill]
    spec = build_pipeline({
        "name": f"ai-{skill}", "seed": 0,
        "models": {"default": {"backend": "transformers", "model": "embedded"}},
        "steps": [{"agentinstruct": {
            "documents": [str(WAR)], "skill": skill, "chunk_tokens": 64, "max_chunks": 1,
            "content_agents": [agent], "agents_per_chunk": 1, "types": types,
            "types_per_chunk": 2, "rounds": 0, "max_new_tokens": 48, "batch_size": 4}}],
        "output": "instructions"})
    result = run_pipeline(spec, ws, progress=False)
    rows = ws.read("instructions")
    assert ws.resolve("instructions").kind == "sft"
    check_rows(rows)
    assert (rows["skill"] == skill).all() and (rows["content_agent"] == agent).all()
    assert set(rows["instruction_agent"]) <= set(types)
    assert rows["source"][0].endswith("war_of_the_worlds_ch1-2.jsonl")
    check_accounted(rows, dropped_rows(result.steps[0]), result.steps[0], [agent], types)


def well_formed(skill: Skill, garbage_type: str):
    """Replies a capable teacher would give, in each stage's format; the seed agent of
    `garbage_type` answers without labels, and a suggestion towards an unanswerable goal
    leads to a question the text does not answer."""
    stages = {skill.content_system: "content", skill.instruction_system: "seed",
              skill.suggester_system: "suggest", skill.editor_system: "edit"}

    def reply(prompt: list[dict[str, str]]) -> str:
        system = prompt[0]["content"] if prompt[0]["role"] == "system" else ""
        text = prompt[-1]["content"]
        stage = stages.get(system, "answer")
        if stage == "content":
            return "Notes made for the exercise: a white rabbit with a watch runs past Alice."
        if stage == "seed":
            if f"one {garbage_type.replace('_', ' ')} " in text:
                return "I would rather not."
            label = "Instruction" if 'Start with "Instruction:"' in text else "Question"
            return f"{label}: What does the rabbit carry?\nAnswer: A watch."
        if stage == "suggest":
            goal = text.split("Goal:", 1)[1]
            return "1. Ask what nobody says." if UNANSWERABLE.search(goal) else "1. Ask more."
        if stage == "edit":
            if "Ask what nobody says" in text:
                return f"Question: What colour is the rabbit's hat?\nAnswer: {NO_ANSWER}"
            return "Question: What does the rabbit carry, and where does it run?\nAnswer: A watch."
        return NO_ANSWER if "hat?" in text else "A watch; it runs past Alice."

    return reply


@pytest.mark.parametrize("name", ["reading_comprehension", *SKILLS])
def test_each_skill_refines_well_formed_replies(name: str, ws, monkeypatch):
    skill = load_skills()[name]
    agent = next(a.name for a in skill.content_agents if not a.identity)
    good, bad = list(skill.types)[:2]
    backend = ScriptedBackend(well_formed(skill, bad), f"skills-{name}")
    spec = build_pipeline({
        "name": f"ai-{name}", "seed": 0, "models": {"default": install(monkeypatch, backend)},
        "steps": [{"agentinstruct": {
            "documents": [str(ALICE)], "skill": name, "tokenizer": "estimate",
            "chunk_tokens": 128, "max_chunks": 1, "content_agents": [agent],
            "types": [good, bad], "types_per_chunk": 2, "rounds": 1,
            "goals_per_item": len(skill.goals), "max_per_chunk": 20}}],
        "output": "instructions"})
    result = run_pipeline(spec, ws, progress=False)
    rows = ws.read("instructions")
    check_rows(rows)
    # the good seed refined once per goal; the unlabelled one dropped with its reason
    assert sorted(rows["refinement_goal"]) == sorted(skill.goals)
    assert (rows["instruction_agent"] == good).all()
    assert (rows["seed_question"] == "What does the rabbit carry?").all()
    dropped = dropped_rows(result.steps[0])
    assert result.steps[0].dropped == {"no Question:/Answer: in instruction agent output": 1}
    assert dropped["lineage"].to_list() == [f"{rows['lineage'][0].split('/')[0]}/{agent}/{bad}"]
    check_accounted(rows, dropped, result.steps[0], [agent], [good, bad])
    unanswerable = rows.filter(pl.col("refinement_goal").str.contains(UNANSWERABLE.pattern))
    assert unanswerable.height == sum(bool(UNANSWERABLE.search(g)) for g in skill.goals)
    for row in unanswerable.iter_rows(named=True):  # "the text does not say" is an answer
        assert row["response"] == row["editor_answer"] == NO_ANSWER
        assert row["question"] == "What colour is the rabbit's hat?"
    answered = [p for p in backend.prompts if "hat?" in p[-1]["content"] or
                "where does it run" in p[-1]["content"]]
    answered = [p for p in answered if p[-1]["content"].startswith(
        skill.instruction.split("{")[0])]  # the answering calls get the instruction as is
    assert len(answered) == len(skill.goals)
    for prompt in answered:
        assert prompt[0]["content"] == skill.answer_system if skill.answer_system else \
            prompt[0]["role"] == "user"


def test_finish_reasons_are_recorded_and_cut_off_rows_are_filtered(ws, monkeypatch):
    """Each row says why its passage, instruction and response ended; a refined row whose
    answer was cut at the cap is dropped by quality_filter with its reason."""
    skill = load_skills()["reading_comprehension"]
    agent = next(a.name for a in skill.content_agents if not a.identity)
    good, bad = list(skill.types)[:2]
    base = well_formed(skill, bad)

    def reply(prompt: list[dict[str, str]]):
        text = base(prompt)
        return (text, "length") if text == NO_ANSWER else text  # unanswerable answers cut

    backend = ScriptedBackend(reply, "skills-finish")
    spec = build_pipeline({
        "name": "ai-finish", "seed": 0, "models": {"default": install(monkeypatch, backend)},
        "steps": [{"agentinstruct": {
            "documents": [str(ALICE)], "skill": "reading_comprehension",
            "tokenizer": "estimate", "chunk_tokens": 128, "max_chunks": 1,
            "content_agents": [agent], "types": [good, bad], "types_per_chunk": 2, "rounds": 1,
            "goals_per_item": len(skill.goals), "max_per_chunk": 20}},
            {"quality_filter": {}}],
        "output": "instructions"})
    result = run_pipeline(spec, ws, progress=False)
    rows = ws.read("instructions")
    assert rows.height > 0
    for column in ("passage_finish_reason", "instruction_finish_reason", "finish_reason"):
        assert rows[column].to_list() == ["stop"] * rows.height, column
    cut = sum(bool(UNANSWERABLE.search(g)) for g in skill.goals)
    assert cut >= 1 and sum(result.steps[1].dropped.values()) == cut
    assert all("length" in reason or "truncat" in reason for reason in result.steps[1].dropped)


def test_a_seed_left_unrefined_in_a_refined_chunk_is_a_dropped_row(ws, monkeypatch,
                                                                 tmp_path: Path):
    (tmp_path / "d.txt").write_text("The rabbit ran past Alice with a watch in its paw.")
    skill = load_skills()["reading_comprehension"]

    def reply(prompt: list[dict[str, str]]) -> str:
        system, text = prompt[0]["content"], prompt[-1]["content"]
        if system == skill.instruction_system:
            kind = "main" if "main idea" in text else "detail"
            return f"Question: What is the {kind} point?\nAnswer: The rabbit."
        if system == skill.suggester_system:
            return "" if "main point" in text else "1. Ask more."
        if system == skill.editor_system:
            return "Question: What is the detail point, and why?\nAnswer: The rabbit."
        return "The rabbit, in a hurry."

    backend = ScriptedBackend(reply, "skills-unrefined")
    spec = build_pipeline({
        "name": "unrefined", "seed": 0, "models": {"default": install(monkeypatch, backend)},
        "steps": [{"agentinstruct": {
            "documents": [str(tmp_path / "d.txt")], "content_agents": ["identity"],
            "types": ["main_idea", "detail"], "types_per_chunk": 2, "rounds": 1,
            "goals_per_item": 1, "min_chunk_tokens": 1}}],
        "output": "instructions"})
    result = run_pipeline(spec, ws, progress=False)
    rows = ws.read("instructions")
    assert rows["instruction_agent"].to_list() == ["detail"]
    assert result.steps[0].dropped == {"empty suggester output": 1,
                                       "not refined while its chunk was (pool replaced)": 1}
    dropped = dropped_rows(result.steps[0])
    seed = dropped.filter(pl.col("_drop_reason").str.starts_with("not refined")).row(0, named=True)
    assert seed["lineage"].endswith("/identity/main_idea") and seed["refinement_round"] == 0
    assert seed["seed_question"] == "What is the main point?"
    check_accounted(rows, dropped, result.steps[0], ["identity"], ["main_idea", "detail"])


def test_copies_of_the_worked_example_are_dropped(ws, monkeypatch, tmp_path: Path):
    """A small model often repeats the one-shot example instead of doing the task."""
    skill = load_skills()["tool_use"]
    for word in ("copycontent", "copyseed", "fine"):
        (tmp_path / f"{word}.txt").write_text(f"The {word} harbour has ships and a lighthouse.")

    def reply(prompt: list[dict[str, str]]) -> str:
        system, text = prompt[0]["content"], prompt[-1]["content"]
        if system == skill.content_system:
            if "copycontent" in text:
                return skill.content_example["reply"] + "\n"
            return f"count_ships(harbour: str): the ships in {text.split()[1]} harbour."
        if system == skill.instruction_system:
            if "copyseed" in text:  # the example's question with other words after it
                return skill.instruction_example["reply"].split("\n")[0] + "\nAnswer: none"
            return "Question: How many ships are in the harbour?\nAnswer: count_ships(harbour=...)"
        return "unused"

    backend = ScriptedBackend(reply, "skills-copies")
    spec = build_pipeline({
        "name": "copies", "seed": 0, "models": {"default": install(monkeypatch, backend)},
        "steps": [{"agentinstruct": {
            "documents": [str(tmp_path)], "skill": "tool_use", "content_agents": ["api_collection"],
            "types": ["single_call"], "rounds": 0, "min_chunk_tokens": 1}}],
        "output": "instructions"})
    result = run_pipeline(spec, ws, progress=False)
    assert result.steps[0].dropped == {"copied the worked example (content agent)": 1,
                                       "copied the worked example (instruction agent)": 1}
    rows = ws.read("instructions")
    assert rows.height == 1 and "fine" in rows["source_chunk"][0]
    assert rows["prompt"][0][0]["content"].startswith("You can use the following tools:\n\n")


def test_built_in_files_form_one_layer(tmp_path: Path, monkeypatch):
    """`extends:` reaches across the built-in files; one name in two files is an error."""
    from transforms._support import agentinstruct_taxonomy

    real = agentinstruct_taxonomy.builtin_files()
    (tmp_path / "zz_legal.yaml").write_text(
        "skills:\n  legal_reading:\n    extends: reading_comprehension\n"
        "    types: {holding: asks what the court decided.}\n")
    monkeypatch.setattr(agentinstruct_taxonomy, "builtin_files",
                        lambda: [*real, tmp_path / "zz_legal.yaml"])
    skills = load_skills()
    assert list(skills["legal_reading"].types) == ["holding"]
    assert skills["legal_reading"].goals == skills["reading_comprehension"].goals
    (tmp_path / "zz_twice.yaml").write_text("skills:\n  coding:\n    extends: tool_use\n")
    monkeypatch.setattr(agentinstruct_taxonomy, "builtin_files",
                        lambda: [*real, tmp_path / "zz_twice.yaml"])
    with pytest.raises(InputError, match=r"zz_twice\.yaml: skill 'coding' is also defined in "
                                         r".*coding\.yaml"):
        load_skills()
