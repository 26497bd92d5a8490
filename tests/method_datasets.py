"""Datasets made by the real method steps on a scripted model: Curry-DPO pairs with rationales,
and LongPO's short-to-long pairs (shared by the export and trainer tests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
from scripted_backend import ScriptedBackend, install

from workbench.pipeline import build_pipeline
from workbench.runner import run_pipeline
from workbench.workspace import Workspace

QUESTIONS = ["Name a primary colour.", "Say hello in French."]
RESPONSES = [["Red.", "Blue is one.", "Purple polka dots.", "Yellow, with red and blue."],
             ["Bonjour.", "Hola.", "Salut !"]]
SCORES = [[4.0, 1.0, 3.0, 2.0], [5.0, 1.0, 4.0]]


def rationale_reply(prompt: list[dict[str, str]]) -> str:
    return "Response {} answers the question; the other does not.".format(
        prompt[-1]["content"].split("preferred Response ")[1][0])


def explain(ws: Workspace, tmp_path: Path, monkeypatch: Any) -> Workspace:
    """Scored candidates -> Curry-DPO pairs (all_pairs, anchor best) -> rationales."""
    source = tmp_path / "cands.parquet"
    pl.DataFrame({"prompt": QUESTIONS, "responses": RESPONSES, "scores": SCORES}).write_parquet(
        source)
    model = install(monkeypatch, ScriptedBackend(rationale_reply, "rationale"))
    spec = build_pipeline({"name": "rat", "input": str(source), "output": "explained",
                           "models": {"default": model},
                           "steps": [{"pairs": {"method": "all_pairs", "anchor": "best"}},
                                     {"rationale": {"max_new_tokens": 24}}]})
    run_pipeline(spec, ws, progress=False)
    return ws


def longpo_reply(prompt: list[dict[str, str]]) -> str:
    text = prompt[-1]["content"]
    if text.startswith("Context:\n"):
        return "1: What happens first?\n2: Who speaks?\n3: Where is it?\n4: Why does it end?"
    if "\n\n\n" in text:  # only the long context joins chunks with three newlines
        return "The rejected answer saw everything, at length."
    return "The chosen answer saw the short chunk."


def long_pairs_in(ws: Workspace, tmp_path: Path, monkeypatch: Any) -> Workspace:
    docs = tmp_path / "docs.jsonl"
    with docs.open("w") as f:
        for word in ("rose", "oak", "fern"):  # each: two paragraphs, two chunks, one context
            f.write(json.dumps({"text": f"The {word} garden had roses and a fountain.\n\n"
                                        f"Later the {word} visitors walked home slowly."}) + "\n")
    model = install(monkeypatch, ScriptedBackend(longpo_reply, "longpo"))
    spec = build_pipeline({"name": "s2l", "seed": 0, "models": {"default": model},
                           "steps": [{"short_to_long": {"documents": [str(docs)],
                                                        "chunk_tokens": 16, "min_chunk_tokens": 1,
                                                        "context_tokens": 64}}],
                           "output": "pairs"})
    run_pipeline(spec, ws, progress=False)
    return ws
