"""The transform contract is declared, not found by attribute name: every registered
transform lists what it declares, and no transform writes `ctx.notes` itself."""

from __future__ import annotations

import ast
from pathlib import Path

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
    import polars as pl
    from pydantic import Field

    from workbench.transform import Context, transform

    class LooseConfig(StepConfig):
        judge_model: str = Field("default")

    with pytest.raises(TypeError, match="type the field 'judge_model' ModelName"):
        @transform("test_loose_model_field", scope="row", config=LooseConfig)
        def loose(frame: pl.LazyFrame, config: LooseConfig, ctx: Context) -> pl.LazyFrame:
            return frame
    assert "test_loose_model_field" not in load_all()
