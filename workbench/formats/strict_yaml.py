"""YAML as users write it, read strictly: a key given twice in one mapping is an error.

PyYAML's safe loader keeps the last of two equal keys without a word, so a pipeline with
`output:` written twice, or two `steps:` lists, silently ran the one the reader did not
mean. `load` raises a `yaml.YAMLError` (a ConstructorError) whose `problem` names the key
and whose `problem_mark` is the line of the second one, so callers' existing "FILE, line N:
invalid YAML (...)" wording applies. Merge keys (`<<: *base`) may still override.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode

_MERGE = "tag:yaml.org,2002:merge"


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated within one mapping."""

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, MappingNode):
            first: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = first.get(key)
                except TypeError:  # an unhashable key: SafeLoader says so itself below
                    continue
                if seen is not None:
                    raise ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"duplicate key {key!r} (first given on line {seen + 1})",
                        key_node.start_mark)
                first[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load(text: str) -> Any:
    """Parse one YAML document with `StrictLoader` (safe types only)."""
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass


def load_mapping_file(path: Path, what: str, error: type[Exception],
                      shape: str) -> tuple[dict[str, Any], str]:
    """(the mapping, its text) of a YAML file; every problem is `error` naming the file (and
    the line, for bad YAML). `what` names the file's role ("pipeline"), `shape` its keys."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: no such {what} file") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        data = load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{path}{where}: invalid YAML ({problem})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: a {what} is a YAML mapping with {shape}")
    return data, text
