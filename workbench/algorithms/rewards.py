"""Reward functions for RL on `workbench export --trl grpo` (TRL's GRPOTrainer signature).

`verified_reward` applies the same checkers as the `verify` step (`workbench.verifiers`), so a
completion earns 1.0 in training exactly when `verify` would have marked it passed, 0.0
otherwise. Use it as `GRPOTrainer(reward_funcs=verified_reward, ...)`: the trainer passes the
export's `answer`, `tests`, `entry_point` and `checker` columns as lists, one per completion.
No torch here: the function is plain Python over strings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

THINK = re.compile(r"^\s*<think>.*?</think>", re.DOTALL)


def completion_text(completion: str | Sequence[dict[str, Any]]) -> str:
    """A completion as text: a string as is, a conversational completion (a list of
    messages) as its last message's content; a leading `<think>...</think>` is left out, so
    the answer is what is checked."""
    if not isinstance(completion, str):
        completion = completion[-1]["content"] if completion else ""
    return THINK.sub("", completion or "", count=1)


def verified_reward(prompts: Sequence[Any], completions: Sequence[Any],
                    answer: Sequence[Any] | None = None, checker: str | Sequence[str] = "math",
                    tests: Sequence[Any] | None = None,
                    entry_point: Sequence[Any] | None = None,
                    match: Sequence[str] | None = None, **kwargs: Any) -> list[float]:
    """1.0 for each completion its checker passes, else 0.0.

    `checker` is one name for every completion or a list (the export's column). The truth is
    `tests` for `code` (with `entry_point`), else `answer` (with `match` for `regex`); a
    schema held as a mapping is sent as JSON, as `verify` sends it. Other columns TRL passes
    (`pass_rate`, the trainer state) are ignored."""
    from workbench.verifiers import CHECKERS

    n = len(completions)
    names = [checker] * n if isinstance(checker, str) else list(checker)
    rewards = []
    for i, completion in enumerate(completions):
        name = names[i]
        if name not in CHECKERS:
            raise ValueError(f"verified_reward: unknown checker {name!r} "
                             f"(checkers: {', '.join(CHECKERS)})")
        options: dict[str, Any] = {}
        if name == "code":
            truth = tests[i] if tests is not None else None
            if entry_point is not None and entry_point[i]:
                options["entry_point"] = entry_point[i]
        else:
            truth = answer[i] if answer is not None else None
            if name == "regex" and match is not None and match[i]:
                options["match"] = match[i]
        if isinstance(truth, dict | list):
            truth = json.dumps(truth)
        elif truth is not None and not isinstance(truth, str):
            truth = str(truth)
        if truth is None:
            rewards.append(0.0)
            continue
        verdict = CHECKERS[name](completion_text(completion), truth, **options)
        rewards.append(1.0 if verdict.passed else 0.0)
    return rewards
