"""Magpie's instruction sanitizer (`instruction_post_process`, docs/methods.md §1.3), with its quirks.

Reproduced as the reference behaves, bugs included, because released datasets were made
with it: the assistant-marker pattern wants a second colon after markers that already end in
one; class 3 computes a cleaned first line and throws it away; the `**` rule strips bold only
when `**` starts at index 1; and the marker positions are found before the second prefix strip
but applied after it. Styles: `llama3` (classes 1, 2.x, 3, 4, 5, 6.x, 99.x) and `gemma2`
(no step rule; classes 5.x and 6.x instead of 6.x and 99.x). Any other family: unchanged,
class 0.
"""

from __future__ import annotations

import re

PREFIX_WORDS = (
    "Task", "Prompt", "Original Prompt", "Question", "The Problem", "Problem", "Scenario",
    "The senario", "Situation", "The situation", "Context", "Challenge", "Query", "Request",
    "Instructions", "Instruction", "Descriptions", "Description",
)
NUMBERED_PREFIXES = (r"Question \d+:", r"Question \d+\.", r"Part \d+:", r"Q\d+\.", r"Q\d+:")
ASSISTANT_MARKERS = (
    "Answer:", "Answers:", "The answer is", "Correct answer", "The correct answer", "Answer is",
    "Explanation:", "Here are some", "Solution Approach:", "Solution:",
)
STEP_MARKERS = ("# Step 1", "## Step 1", "### Step 1")


def _prefix_forms(word: str) -> list[str]:
    core = word.lstrip("#* ").rstrip(":")
    return [f"{core}:", f"**{core}**", f"## {core}:"]


_ENUMERATOR = re.compile(r"^(\d+\.|\w+\))\s*")
_PREFIX = re.compile(
    "^(" + "|".join([re.escape(form) for w in PREFIX_WORDS for form in _prefix_forms(w)]
                    + list(NUMBERED_PREFIXES)) + r")\s*",
    re.IGNORECASE,
)
_ASSISTANT = re.compile(r"(?:" + "|".join(ASSISTANT_MARKERS) + ")s?:")  # case-sensitive
_STEP = re.compile(r"(?:" + "|".join(STEP_MARKERS) + r"):?")


def remove_prefix(text: str) -> str:
    """Drop a leading enumerator ("1.", "a)") and a leading label ("Task:", "**Question**",
    "Q3.", "Part 2:")."""
    text = _ENUMERATOR.sub("", text, count=1).strip()
    match = _PREFIX.match(text)
    return text[match.end():].strip() if match else text


def _unbold(text: str) -> str:
    return text.replace("**", "").strip() if text.find("**") == 1 else text.strip()


def _first_line(text: str) -> str:
    return text.split("\n")[0].strip()


def sanitize(instruction: str, style: str) -> tuple[str, float]:
    """(cleaned instruction, class number) as Magpie's post-processor gives them."""
    if style not in ("llama3", "gemma2"):
        return instruction, 0
    llama = style == "llama3"
    text = remove_prefix(instruction)
    assistant = _ASSISTANT.search(text)
    step = _STEP.search(text) if llama else None
    if text.startswith("*") and "?" in text:
        return remove_prefix(text.split("?")[0].replace("*", "").strip() + "?"), 1
    text = remove_prefix(text)
    if text.startswith('"'):
        if "?" in text:
            text, label = text.split("?")[0].replace('"', "").strip() + "?", 2.1
        else:
            text, label = _first_line(text.replace('"', "")).replace("*", "").strip(), 2.2
    elif text.startswith("<b>"):
        text, label = text.replace("*", "").strip(), 3  # the cleaned first line is discarded
    elif assistant:
        text, label = _unbold(text[: assistant.start()].strip()), 4
    elif step:
        text, label = _unbold(text[: step.start()].strip()), 5
    elif _first_line(text).endswith(":"):
        if "#" in text:
            text, label = _unbold(text.split("#")[0].strip()), (6.1 if llama else 5.1)
        elif "?" in text:
            text, label = _unbold(text.split("?")[0].strip() + "?"), (6.2 if llama else 5.2)
        else:
            text, label = _first_line(text).replace("*", "").strip(), (6.3 if llama else 5.3)
    elif "?" in text:
        text, label = _unbold(text.split("?")[0].strip() + "?"), (99.1 if llama else 6.1)
    else:
        text, label = _first_line(text).replace("*", "").strip(), (99.2 if llama else 6.2)
    return remove_prefix(text), label
