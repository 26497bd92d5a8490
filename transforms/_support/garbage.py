"""What counts as garbage in a model's text: empty, or stuck repeating itself.

Model steps drop (or null) such outputs with these reasons instead of passing them on; the
run log counts them. Texts are few per batch (model-bound), so plain Python is fine here.
"""

from __future__ import annotations

EMPTY = "empty output"
REPETITION = "degenerate repetition"


def repeated_4gram_share(text: str, n: int = 4) -> float:
    """Share of repeated word n-grams: 0 for varied text, near 1 for a loop."""
    words = text.split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def garbage(text: str | None, max_repetition: float = 0.6, min_words: int = 24) -> str | None:
    """The reason a generated text is unusable, or None when it is fine."""
    if text is None or not text.strip():
        return EMPTY
    if len(text.split()) >= min_words and repeated_4gram_share(text) > max_repetition:
        return REPETITION
    return None
