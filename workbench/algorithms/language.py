"""Language of a text, as Magpie tags it: lingua over all languages, ISO 639-1 upper case.

One detector per process (building it is cheap; its models load on first use, about 1 GB in
the default high-accuracy mode, far less with `fast=True`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any


@functools.cache
def _detector(fast: bool) -> Any:
    from lingua import LanguageDetectorBuilder

    from workbench.models import refuse_if_models_off

    refuse_if_models_off("lingua's language models")

    builder = LanguageDetectorBuilder.from_all_languages()
    if fast:
        builder = builder.with_low_accuracy_mode()
    return builder.build()


def detect_languages(texts: Sequence[str | None], fast: bool = False) -> list[str | None]:
    """ISO 639-1 code ("EN", "FR", ...) per text; None for empty text or no confident answer."""
    items = [t if isinstance(t, str) else "" for t in texts]
    found = _detector(fast).detect_languages_in_parallel_of(items)
    return [lang.iso_code_639_1.name if lang is not None and text.strip() else None
            for lang, text in zip(found, items, strict=True)]
