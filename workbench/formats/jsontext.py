"""JSON text for `--json` output that any JSON parser reads: NaN and ±Infinity become null.

Python's json writes bare `NaN` and `Infinity`, which are not JSON; a float field that holds
one (a dataset written from Python, a report's degenerate fit) is printed as null instead.
"""

from __future__ import annotations

import json
import math
from typing import Any


def dumps(value: Any) -> str:
    """One line of JSON; non-finite floats anywhere in `value` are written as null."""
    try:
        return json.dumps(value, ensure_ascii=False, default=str, allow_nan=False)
    except ValueError:  # a non-finite float somewhere: only then walk the value
        return json.dumps(_finite(value), ensure_ascii=False, default=str, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
