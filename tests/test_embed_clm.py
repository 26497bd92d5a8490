"""`embed` with `model:`: deita's CLM embedder (the conversation in the vicuna_v1.1 template, a
causal LM's final hidden state at the last token), checked against an independent forward
pass of the embedded model, and run through `deita_select` in a pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from transforms.embed import VICUNA_SYSTEM, EmbedConfig, _conversation
from workbench.pipeline import build_pipeline
from workbench.runner import run_pipeline

ROWS = [
    {"prompt": [{"role": "user", "content": "Name a prime number."}], "response": "Seven."},
    {"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "How are you?"}], "response": "Fine, thanks."},
    {"prompt": [{"role": "system", "content": "Be terse."},
                {"role": "user", "content": "2+2?"}], "response": "4"},
]


def vicuna(messages: list[dict], answer: str | None) -> str:
    """deita's get_prompt for ADD_COLON_TWO, written out: system + sep, then per message
    role + ": " + text + (sep after a user turn, sep2 after an assistant turn)."""
    system = next((m["content"] for m in messages if m["role"] == "system"), VICUNA_SYSTEM)
    turns = [m for m in messages if m["role"] != "system"]
    if answer is not None:
        turns = [*turns, {"role": "assistant", "content": answer}]
    out = system + " "
    for m in turns:
        role, sep = ("USER", " ") if m["role"] == "user" else ("ASSISTANT", "</s>")
        out += f"{role}: {m['content']}{sep}"
    return out


def test_conversation_is_deitas_vicuna_prompt() -> None:
    frame = pl.DataFrame(ROWS)
    got = frame.select(_conversation(frame.schema, EmbedConfig(model="default")))
    assert got.to_series().to_list() == [vicuna(r["prompt"], r["response"]) for r in ROWS]
    prompts_only = frame.drop("response")
    got = prompts_only.select(_conversation(prompts_only.schema, EmbedConfig(model="default")))
    assert got.to_series().to_list() == [vicuna(r["prompt"], None) for r in ROWS]


def test_model_and_encoder_are_exclusive() -> None:
    with pytest.raises(ValueError, match="not both"):
        EmbedConfig(model="default", encoder="static")
    assert EmbedConfig(model="default").capabilities() == ("hidden_states",)
    assert EmbedConfig().capabilities() is None


@pytest.mark.slow
def test_last_token_state_equals_an_independent_forward(ws, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.models.transformers_backend import resolve_model_path

    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    spec = build_pipeline({
        "name": "clm", "input": str(source), "output": "embedded_rows",
        "models": {"default": {"backend": "transformers", "model": "embedded"}},
        "steps": [{"embed": {"model": "default"}},
                  {"sql": {"query": "SELECT *, length(response) AS score FROM input"}},
                  {"deita_select": {"threshold": 0.999, "score": "score"}}]})
    out = run_pipeline(spec, ws, progress=False)
    rows = ws.read("embedded_rows")
    assert out.steps[2].rows_out == rows.height == 3
    assert rows["embedding_encoder"].unique().to_list() == [
        "clm:default (last-token hidden state of the whole conversation in vicuna_v1.1)"]
    path = resolve_model_path("embedded")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    for row in rows.iter_rows(named=True):
        text = vicuna(row["prompt"], row["response"])
        ids = tokenizer(text, return_tensors="pt").input_ids  # as deita tokenizes
        with torch.inference_mode():
            state = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1]
        want = state.double().numpy()
        want /= np.linalg.norm(want)
        assert np.allclose(np.asarray(row["embedding"], dtype=np.float64), want, atol=1e-4)
