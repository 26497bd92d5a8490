"""One table names every backend and what it can do (`workbench/models/backends.py`): each
backend class reads its name and capabilities from it, so the two cannot disagree."""

from __future__ import annotations

import pytest

from workbench.models.backends import BACKENDS, backend, backend_class


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_each_backend_class_is_its_table_entry(name: str) -> None:
    cls = backend_class(name)  # vLLM's module imports without vllm installed
    assert cls.backend == name
    assert cls.capabilities is BACKENDS[name].capabilities


def test_an_unknown_backend_lists_the_names() -> None:
    with pytest.raises(ValueError, match="choose from transformers, vllm, openai, reward"):
        backend("llamacpp")
