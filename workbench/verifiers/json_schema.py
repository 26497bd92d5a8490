"""`json_schema`: the response's JSON validates against a schema held in the ground truth.

The JSON is the first fenced block labelled `json` (or unlabelled), else the whole response
stripped. The schema is a JSON object (text or already parsed) in any draft `jsonschema`
knows (read from its `$schema`, else the latest); `format` keywords are checked where
`jsonschema` has a checker for them.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from workbench.verifiers import Verdict, short

FENCE = re.compile(r"```[ \t]*(json)?[ \t]*\r?\n(.*?)```", re.DOTALL | re.IGNORECASE)


def check(response: str, truth: Any, **options: Any) -> Verdict:
    """Pass when the response's JSON is valid against the schema in `truth`."""
    if truth is None:
        return Verdict(False, "no ground truth")
    try:
        validator = _validator(truth if isinstance(truth, str) else json.dumps(truth))
    except ValueError as exc:
        return Verdict(False, f"bad schema: {short(str(exc), 120)}")
    text = extract_json(response or "")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return Verdict(False, f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    from jsonschema.exceptions import best_match

    error = best_match(validator.iter_errors(value))
    if error is None:
        return Verdict(True, "valid against the schema")
    return Verdict(False, short(f"schema violation at {error.json_path}: {error.message}", 200))


def extract_json(response: str) -> str:
    """The first fenced `json` (or unlabelled) block, else the whole response."""
    blocks = FENCE.findall(response)
    labelled = [body for language, body in blocks if language]
    chosen = labelled or [body for _, body in blocks]
    return (chosen[0] if chosen else response).strip()


@functools.lru_cache(maxsize=256)
def _validator(schema_text: str) -> Any:
    """A checked validator for the schema; ValueError when the schema is not one."""
    from jsonschema import exceptions, validators

    try:
        schema = json.loads(schema_text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg}") from None
    if not isinstance(schema, (dict, bool)):
        raise ValueError("a schema is a JSON object")
    cls = validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except exceptions.SchemaError as exc:
        raise ValueError(exc.message) from None
    return cls(schema, format_checker=cls.FORMAT_CHECKER)
