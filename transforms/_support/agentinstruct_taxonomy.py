"""AgentInstruct skills as data: agents, instruction taxonomy, refinement goals.

The built-in skills live one per file in `data/agentinstruct/` (reading comprehension, text
modification, tool use, coding, open-domain QA, creative content, analytical reasoning); a
user's own file (the step's `taxonomy:` option) adds skills or replaces built-in ones by name,
and a skill with `extends: NAME` takes every field it does not set from skill NAME. Templates
are checked when loaded, so a misspelt placeholder is an error naming the file and skill, not
a crash halfway through a run.
"""

from __future__ import annotations

import string
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from workbench.errors import InputError
from workbench.formats import strict_yaml

BUILTIN_DIR = "agentinstruct"

# template field -> (placeholders it may use, placeholders it must use); an instruction may
# leave the passage out (open-domain QA asks without it)
PLACEHOLDERS: dict[str, tuple[set[str], set[str]]] = {
    "instruction": ({"passage", "question"}, {"question"}),
    "content_prompt": ({"task", "text"}, {"text"}),
    "instruction_prompt": ({"passage", "type", "description"}, {"passage"}),
    "suggester_prompt": ({"passage", "question", "answer", "goal"}, {"question", "goal"}),
    "editor_prompt": ({"passage", "question", "answer", "suggestion"}, {"question", "suggestion"}),
}


class ContentAgent(BaseModel):
    """Rewrites a raw chunk for the skill; `identity` passes the chunk on verbatim."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    task: str = ""
    identity: bool = False


class Skill(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field("", description="what the skill teaches, in one line")
    instruction: str = Field(description="how {passage} and {question} make one instruction")
    content_system: str = ""
    content_prompt: str
    content_agents: list[ContentAgent] = Field(min_length=1)
    content_example: dict[str, str] | None = Field(
        None, description="a worked exchange: content_prompt's placeholders and `reply`")
    instruction_system: str = ""
    instruction_prompt: str
    types: dict[str, str] = Field(min_length=1, description="taxonomy: type -> description")
    suggester_system: str = ""
    suggester_prompt: str
    editor_system: str = ""
    editor_prompt: str
    goals: list[str] = Field(min_length=1)
    instruction_example: dict[str, str] | None = Field(
        None, description="a worked exchange: instruction_prompt's placeholders and `reply`")
    editor_example: dict[str, str] | None = Field(
        None, description="a worked exchange: editor_prompt's placeholders and `reply`")
    answer_system: str = Field("", description="system turn of the call that answers a "
                               "refined instruction (the instruction itself stays as written)")

    @model_validator(mode="after")
    def _templates(self) -> Skill:
        for field, (allowed, required) in PLACEHOLDERS.items():
            names = {name for _, name, _, _ in string.Formatter().parse(getattr(self, field))
                     if name is not None}
            if names - allowed:
                raise ValueError(f"{field}: unknown placeholder {{{sorted(names - allowed)[0]}}} "
                                 f"(allowed: {', '.join('{' + a + '}' for a in sorted(allowed))})")
            if required - names:
                raise ValueError(f"{field}: needs the placeholder {{{sorted(required - names)[0]}}}")
        for field, template in (("content_example", self.content_prompt),
                                ("instruction_example", self.instruction_prompt),
                                ("editor_example", self.editor_prompt)):
            example = getattr(self, field)
            if example is None:
                continue
            if "reply" not in example:
                raise ValueError(f"{field}: needs a `reply`")
            values = {k: v for k, v in example.items() if k != "reply"}
            if field == "instruction_example":  # the description comes from `types`
                values.setdefault("description", self.types.get(values.get("type", ""), ""))
            try:
                template.format(**values)
            except KeyError as exc:
                raise ValueError(f"{field}: needs a value for {{{exc.args[0]}}}") from None
        agents = [a.name for a in self.content_agents]
        if len(set(agents)) != len(agents):
            raise ValueError("content_agents: two agents share a name")
        return self


def builtin_files() -> list[Path]:
    """The built-in taxonomy files, one skill each (by convention), in name order."""
    folder = Path(str(resources.files("transforms") / "data" / BUILTIN_DIR))
    return sorted(folder.glob("*.yaml"))


@cache
def builtin_skill_names() -> tuple[str, ...]:
    """The built-in skills' names, in file order (for option listings)."""
    return tuple(_builtin_layer())


def load_skills(user_file: Path | None = None) -> dict[str, Skill]:
    """The built-in skills, then the user's file on top (same name replaces)."""
    layers = [_builtin_layer()]
    if user_file is not None:
        layers.append(_read(user_file))
    names = dict.fromkeys(name for layer in layers for name in layer)
    return {name: _build(name, layers, max(i for i, layer in enumerate(layers) if name in layer),
                         ()) for name in names}


def _builtin_layer() -> dict[str, dict[str, Any]]:
    """Every built-in file's skills as one layer: `extends:` reaches across the files, and a
    name defined in two of them is an error."""
    layer: dict[str, dict[str, Any]] = {}
    for path in builtin_files():
        for name, body in _read(path).items():
            if name in layer:
                raise InputError(f"{path}: skill {name!r} is also defined in {layer[name]['_file']}")
            layer[name] = body
    return layer


def _read(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = strict_yaml.load(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such taxonomy file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark else ""
        raise InputError(f"{path}{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    skills = data.get("skills") if isinstance(data, dict) else None
    if not isinstance(skills, dict) or not all(isinstance(v, dict) for v in skills.values()):
        raise InputError(f"{path}: a taxonomy file is a mapping `skills: {{NAME: {{...}}}}`")
    return {name: {**body, "_file": str(path)} for name, body in skills.items()}


def _build(name: str, layers: list[dict[str, dict[str, Any]]], level: int,
           seen: tuple[tuple[int, str], ...]) -> Skill:
    """Skill `name` of layer `level`; `extends: P` names skill P of the same file, or, when
    that file has no other P (a skill may extend the built-in skill it replaces), of the
    layers below."""
    body = dict(layers[level][name])
    source = body.pop("_file")
    parent = body.pop("extends", None)
    if parent is not None:
        found = [i for i in range(level, -1, -1) if parent in layers[i]
                 and (i, parent) != (level, name)]
        if not found or (found[0], parent) in seen:
            raise InputError(f"{source}: skill {name!r} extends {parent!r}, which is "
                             f"{'unknown' if not found else 'a cycle'}")
        inherited = _build(parent, layers, found[0], (*seen, (level, name))).model_dump()
        body = {**inherited, **body}
    try:
        return Skill.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        raise InputError(f"{source}: skill {name!r}: "
                         f"{f'{where}: ' if where else ''}{message}") from None
