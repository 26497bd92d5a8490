"""Annotator names: one spelling per person, so " Alice" and "alice" vote as one annotator.

A name is normalised before it is stored or compared: Unicode NFC, surrounding whitespace
stripped, inner runs of whitespace made one space, then lower-cased. Empty after that, longer
than 64 characters, or holding control characters is an error.
"""

from __future__ import annotations

import re
import unicodedata

from workbench.errors import WorkbenchError

MAX_LENGTH = 64
_SPACES = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def normalise(name: object) -> str:
    """The stored form of an annotator name (see the module doc); raises on a bad one."""
    if not isinstance(name, str):
        raise WorkbenchError(f"an annotator name is text, not {type(name).__name__}")
    text = _SPACES.sub(" ", unicodedata.normalize("NFC", name)).strip().lower()
    if not text:
        raise WorkbenchError("an annotator name is 1 to 64 characters (it is empty once "
                             "surrounding spaces are stripped)")
    if len(text) > MAX_LENGTH:
        raise WorkbenchError(f"an annotator name is 1 to {MAX_LENGTH} characters, not "
                             f"{len(text)}")
    if _CONTROL.search(text):
        raise WorkbenchError(f"annotator name {name!r} holds control characters")
    return text
