"""A backend whose replies a test scripts: garbage on purpose (empty, repetitive, refusals,
unparseable, failed calls), to check that model steps drop such rows with counted reasons.

`install` puts it where the pipeline runner loads models from, under a `models:` entry, so a
test drives the real runner, call cache and run log around it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from workbench.models.base import CallFailed, Generation, SamplingParams

FAIL = object()  # a reply that makes the call fail


class ScriptedBackend:
    backend: ClassVar[str] = "transformers"
    capabilities: ClassVar[frozenset[str]] = frozenset({"generate"})

    def __init__(self, reply: Callable[[list[dict[str, str]]], Any], name: str) -> None:
        self.reply = reply
        self.name = name
        self.prompts: list[Any] = []

    def fingerprint(self) -> dict[str, Any]:
        return {"backend": "scripted", "name": self.name}

    def generate(self, prompts: Sequence[Any], params: SamplingParams,
                 seeds: Sequence[int] | None = None) -> list[Any]:
        out: list[Any] = []
        for prompt in prompts:
            self.prompts.append(prompt)
            text = self.reply(list(prompt))
            if text is FAIL:
                out.append(CallFailed("scripted failure"))
            else:  # a (text, finish_reason) pair scripts a reply cut off at the cap
                text, finish = text if isinstance(text, tuple) else (text, "stop")
                out.append([Generation(text, finish, 10, len(text.split()))
                            for _ in range(params.n)])
        return out


def install(monkeypatch: Any, backend: ScriptedBackend) -> dict[str, Any]:
    """A `models:` entry that the runner resolves to `backend` (no model is loaded); the next
    `install` under the same name replaces it."""
    from workbench.models import provide

    return provide(backend, f"scripted-{backend.name}")
