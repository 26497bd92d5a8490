"""The transform contract is declared, not found by attribute name: every registered
transform lists what it declares, and no transform writes `ctx.notes` itself."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from workbench.registry import describe, load_all
from workbench.transform import HOOKS, StepConfig, declared_hooks, model_fields

ROOT = Path(__file__).resolve().parent.parent
# names the runner once looked up on configs; only a user option (a field) may use them now
OLD_HOOKS = ("kind", "consumes", "needs", "content_digest")


def test_every_transform_lists_its_declared_contract() -> None:
    listed = {entry["name"]: entry for entry in describe()}
    assert set(listed) == set(load_all())
    for name, cls in load_all().items():
        entry = listed[name]
        assert entry["scope"] in ("row", "global"), name
        assert issubclass(cls.Config, StepConfig), name
        assert entry["needs"] == list(cls.needs)
        assert entry["models"] == model_fields(cls.Config)
        assert set(entry["decided_by_options"]) <= set(HOOKS)
    # spot checks of what the listing says
    assert listed["judge"]["models"] == ["model", "weak_model"]
    assert listed["judge"]["decided_by_options"] == ["accepted_kinds", "capabilities"]
    assert listed["generate"]["decided_by_options"] == ["output_kind", "accepted_kinds"]
    assert listed["agentinstruct"]["decided_by_options"] == ["input_digest"]
    assert listed["split"]["models"] == [] and listed["split"]["decided_by_options"] == []


@pytest.mark.parametrize("name", sorted(load_all()))
def test_no_hook_is_found_by_attribute_name(name: str) -> None:
    config = load_all()[name].Config
    for attribute in OLD_HOOKS:
        if hasattr(config, attribute) or attribute in config.model_fields:
            assert attribute in config.model_fields, (
                f"{name}: {attribute!r} on the config is not an option; override a "
                f"StepConfig method ({', '.join(HOOKS)}) instead")
    # a field that looks like a model reference is typed as one, so the runner sees it
    for field in config.model_fields:
        if field == "model" or field.endswith("_model"):
            assert field in model_fields(config), f"{name}.{field} is not typed ModelName"


def test_options_decide_what_the_config_declares() -> None:
    registry = load_all()
    pairs = registry["pairs"]
    assert pairs({"method": "sft_vs_generated"}).config.accepted_kinds() == ("sft",)
    assert pairs({}).config.accepted_kinds() == ("candidates",)
    judge = registry["judge"]
    assert judge({"method": "llm_pairwise"}).config.capabilities() == (
        "next_token_distribution",)
    assert judge({"method": "llm_pairwise"}).config.accepted_kinds() == ("preference",)
    generate = registry["generate"]
    assert generate({"n": 1}).output_kind("instruction") == "sft"
    assert generate({"n": 3, "temperature": 0.7}).output_kind("instruction") == "candidates"
    assert generate({}).config.accepted_kinds() is None  # the decorator's: instruction
    spin = generate({"into": "generated"})  # an answer beside the row's own
    assert spin.config.accepted_kinds() == ("instruction", "sft")
    assert spin.output_kind("sft") == "sft" and spin.output_kind("instruction") == "instruction"
    assert registry["sql"]({"query": "SELECT * FROM input", "kind": "sft"}).output_kind(
        "preference") == "sft"
    assert registry["split"]({}).output_kind("preference") == "preference"
    assert judge({"method": "density_ratio", "weak_model": "weak"}).models() == {
        "model": "default", "weak_model": "weak"}
    assert declared_hooks(registry["sample"].Config) == []


def _writes_notes(tree: ast.AST) -> list[int]:
    """Lines that touch `<anything>.notes` (reading included: transforms have no need)."""
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr == "notes"]


def test_no_transform_touches_ctx_notes() -> None:
    offenders = {}
    for path in sorted((ROOT / "transforms").rglob("*.py")):
        lines = _writes_notes(ast.parse(path.read_text(), str(path)))
        if lines:
            offenders[path.name] = lines
    assert offenders == {}
    # the check itself finds such a write
    assert _writes_notes(ast.parse("ctx.notes['report'] = {}")) == [1]


def test_a_model_field_typed_str_is_refused_at_registration() -> None:
    from pydantic import Field

    from workbench.transform import Context, transform

    class LooseConfig(StepConfig):
        judge_model: str = Field("default")

    with pytest.raises(TypeError, match="type the field 'judge_model' ModelName"):
        @transform("test_loose_model_field", scope="row", config=LooseConfig)
        def loose(frame: pl.LazyFrame, config: LooseConfig, ctx: Context) -> pl.LazyFrame:
            return frame
    assert "test_loose_model_field" not in load_all()


# keeps_content: a flagged step's kept rows keep their content, hence their ids ---------------
MODEL_FREE = {  # every flagged transform that calls no model, with options for the data below
    "filter": {"where": {"chosen": {"min_chars": 40}}},
    "quality_filter": {"min_chars": 30},
    "select_columns": {"columns": ["prompt", "chosen", "rejected", "ches_score"]},
    "dedup_exact": {"columns": ["prompt"]},
    "dedup_minhash": {"columns": ["chosen"], "threshold": 0.5},
    "sample": {"n": 150},
    "split": {"test_size": 0.2},
    "decontaminate": {},
    "length_bias": {"bootstrap": 5},
    "ches_filter": {"by": "ches_score", "drop_fraction": 0.3},
    "deita_select": {"budget": 200, "threshold": 0.5},
    "dedup_embedding": {"threshold": 0.5},
    "verify": {"checker": "regex", "answer": "pattern"},  # adds passed and detail columns
}
WITH_MODELS = {"embed", "judge", "ches_score", "deita_score", "magpie_tags", "magpie_neighbors",
               "rationale"}  # checked as they run (a few rows a part are hashed)


def test_keeps_content_and_stateless_are_declared_and_listed() -> None:
    listed = {entry["name"]: entry for entry in describe()}
    # the library's transforms (other test modules register their own in this process)
    registry = {n: c for n, c in load_all().items() if c.__module__.startswith("transforms.")}
    for name, cls in registry.items():
        assert listed[name]["keeps_content"] is cls.keeps_content
        assert listed[name]["stateless"] is cls.stateless
        if cls.stateless:  # several batches may run in one call: no model, batch-local
            assert cls.scope == "row" and not cls.needs and not model_fields(cls.Config)
    # every flagged transform is covered here (a new one must be added to a list above)
    assert {n for n, c in registry.items() if c.keeps_content} == set(MODEL_FREE) | WITH_MODELS
    for name in ("generate", "pairs", "sql", "rename", "magpie", "grape_select"):
        assert not registry[name].keeps_content, name
    assert [n for n, c in sorted(registry.items()) if c.stateless] == [
        "filter", "quality_filter", "rename", "select_columns"]


def _scored_hh() -> pl.DataFrame:
    """The bundled HH-RLHF rows, 40 exact copies among them, and the columns the selection
    steps read (scores, unit vectors that put every fifth row near the one before)."""
    from workbench.io.importer import load

    frame = load(ROOT / "data" / "hh_rlhf_harmless_test_600.jsonl.gz")[0].drop("id")
    frame = pl.concat([frame, frame.head(40)])
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(frame.height, 16))
    vectors[5::5] = vectors[4:-1:5] + 0.01 * rng.normal(size=vectors[5::5].shape)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return frame.with_columns(
        pl.Series("ches_score", rng.random(frame.height)),
        pl.Series("deita_score", rng.random(frame.height)),
        pl.Series("embedding", vectors.astype(np.float32).tolist(), pl.List(pl.Float32)),
        pl.lit(r"\bthe\b").alias("pattern"))


@pytest.mark.parametrize("name", sorted(MODEL_FREE))
def test_a_keeps_content_step_keeps_each_rows_content_and_id(tmp_path: Path, name: str) -> None:
    from workbench import schema
    from workbench.pipeline import build_pipeline
    from workbench.runner import run_pipeline
    from workbench.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    before = ws.read(ws.write_dataset("hh", _scored_hh(), "preference").ref)
    pipeline = build_pipeline({"name": "keeps", "input": "hh", "seed": 1, "batch_size": 100,
                               "steps": [{name: MODEL_FREE[name]}], "output": "out",
                               "allow_empty": True})
    result = run_pipeline(pipeline, ws, progress=False)
    out = ws.read("out")
    assert 0 < out.height <= before.height
    assert out["id"].is_unique().all()
    joined = out.join(before, on="id", how="left", suffix="_in")
    for column in schema.CONTENT["preference"]:  # the input row with that id, unchanged
        assert joined[f"{column}_in"].null_count() == 0, column
        assert joined[column].equals(joined[f"{column}_in"].alias(column)), column
    # and each id is still its content's hash (numbered among copies)
    assert (out["id"].str.slice(0, 16) == schema.content_hashes(out, "preference")).all()
    assert result.steps[0].detail["ids"] == "kept"
    if "parent_id" in out.columns:
        assert out["parent_id"].null_count() == out.height
