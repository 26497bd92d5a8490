"""deita_score end to end in a pipeline on tiny models saved with real tokenizers (Mistral's
SentencePiece v1, Llama 3's tiktoken), checked against the scores computed here from the
model's logits at the reference digit ids; and deita's known value on fixed logits.

The expected scores use nothing of the workbench: the prompt is tokenized by the tokenizer
saved in the model's folder (what the model reads; transformers' conversion of Mistral's
SentencePiece file splits a run of two spaces as '▁▁' + 'All' where sentencepiece itself gives
'▁' + '▁All', so the package's own encoder would score a different text on 3 of these
prompts) after the BOS id of the tokenizer's own package, one plain forward pass gives the
last position's logits, and Σ i · softmax(z at the 6 digit ids)_i is written out. The digit
ids are deita's constants for Mistral and tiktoken's own ids of "1".."6" for Llama 3.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest
import yaml
from conftest import DATA, cli
from real_tokenizers import (
    MISTRAL_V1_DIGITS,
    llama3_reference,
    llama3_tokenizer,
    mistral_file,
    mistral_tokenizer,
    tiny_model,
)

from transforms.deita import COMPLEXITY_TEMPLATE, QUALITY_TEMPLATE

pytestmark = pytest.mark.slow
HH = DATA / "hh_rlhf_harmless_test_600.jsonl.gz"
ROWS = 3
# docs/methods.md §3.4: logits (1, 2, 3, 4, 5, 6) at the digits give 5.43293; by hand,
# Σ i·e^i / Σ e^i = 3458.79... / 636.63... = 5.432932763
KNOWN = 5.432932763071741


def run_deita(model: Path, tmp_path: Path, failures: dict | None = None) -> tuple[pl.DataFrame, dict]:
    """`workbench run` on a pipeline scoring ROWS real HH-RLHF rows with the model folder."""
    spec = {
        "name": "deita_real", "input": str(HH),
        "models": {"scorer": {"backend": "transformers", "model": str(model),
                              "options": {"dtype": "float32", "batch_size": 4}}},
        "steps": [{"sql": {"query": f"SELECT * FROM input LIMIT {ROWS}"}},
                  {"deita_score": {"model": "scorer", "response": "chosen", "batch_size": 4}}],
        "output": "scored",
    }
    if failures is not None:
        spec["failures"] = failures
    path = tmp_path / "deita.yaml"
    path.write_text(yaml.safe_dump(spec))
    ws = tmp_path / "ws"
    result = cli("run", str(path), workspace=ws, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr + result.stdout
    runs = json.loads(cli("runs", "--json", workspace=ws).stdout)
    steps = json.loads(cli("runs", runs[0]["run_id"], "--json", workspace=ws).stdout)["steps"]
    return pl.read_parquet(ws / "datasets" / "scored" / "v1" / "data.parquet"), steps[-1]


def turns(row: dict) -> list[tuple[str, str]]:
    """(instruction, output) per user turn, deita's ShareGPT rule written as a plain loop."""
    messages = [m for m in row["prompt"] if m["role"] in ("user", "assistant")]
    out = []
    for k, message in enumerate(messages):
        if message["role"] != "user":
            continue
        if k + 1 < len(messages) and messages[k + 1]["role"] == "assistant":
            out.append((message["content"], messages[k + 1]["content"]))
        elif k + 1 == len(messages):
            out.append((message["content"], row["chosen"]))
        else:
            out.append((message["content"], ""))
    return out


def expected(model, encode, digits: list[int], text: str) -> float:
    import torch

    with torch.no_grad():
        logits = model(input_ids=torch.tensor([encode(text)])).logits[0, -1].double()
    p = logits[digits].softmax(-1)
    return float(sum((i + 1) * p[i] for i in range(6)))


def check_scores(out: pl.DataFrame, folder: Path, bos: int, digits: list[int]) -> int:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype="float32").eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)

    def encode(text: str) -> list[int]:
        return [bos, *tokenizer(text, add_special_tokens=False)["input_ids"]]

    assert out.height == ROWS and out["deita_score"].null_count() == 0
    checked = 0
    for row in out.iter_rows(named=True):
        pairs = turns(row)
        assert len(row["complexity_scores"]) == len(row["quality_scores"]) == len(pairs)
        total = 0.0
        for (instruction, output), c, q in zip(pairs, row["complexity_scores"],
                                               row["quality_scores"], strict=True):
            want_c = expected(model, encode, digits,
                              COMPLEXITY_TEMPLATE.format(instruction=instruction))
            want_q = expected(model, encode, digits,
                              QUALITY_TEMPLATE.format(instruction=instruction, output=output))
            assert c == pytest.approx(want_c, abs=1e-4)
            assert q == pytest.approx(want_q, abs=1e-4)
            total += want_c * want_q
            checked += 2
        assert row["complexity_score"] == row["complexity_scores"][-1]
        assert row["deita_score"] == pytest.approx(total, abs=1e-3)
    # a random model of wide initialization: the scores spread, so a wrong id would show
    assert out["complexity_score"].max() - out["complexity_score"].min() > 0.05
    return checked


def test_deita_score_in_a_pipeline_on_a_mistral_v1_model(tmp_path: Path):
    from mistral_common.tokens.tokenizers.sentencepiece import SentencePieceTokenizer

    folder = tiny_model(mistral_tokenizer("v1"), tmp_path / "mistral-v1", arch="mistral")
    out, step = run_deita(folder, tmp_path)
    bos = SentencePieceTokenizer(str(mistral_file("v1"))).bos_id
    checked = check_scores(out, folder, bos, MISTRAL_V1_DIGITS)
    assert checked >= 2 * ROWS
    assert "fallbacks" not in step["detail"]  # every digit read from the full vocabulary


def test_deita_score_in_a_pipeline_on_a_llama3_tokenizer_model(tmp_path: Path):
    ref = llama3_reference()
    folder = tiny_model(llama3_tokenizer(), tmp_path / "llama3", arch="llama")
    out, step = run_deita(folder, tmp_path)
    digits = [ref.encode(d, bos=False, eos=False)[0] for d in "123456"]
    checked = check_scores(out, folder, ref.bos_id, digits)
    assert checked >= 2 * ROWS
    assert "fallbacks" not in step["detail"]


def test_deita_known_value_on_fixed_logits(tmp_path: Path):
    """A Mistral-v1 model whose weights make the logits 1..6 at deita's digit ids and 0
    elsewhere, whatever the prompt: every turn scores 5.432933 and a row Σ_t 5.432933²."""
    import torch
    from transformers import AutoModelForCausalLM

    folder = tiny_model(mistral_tokenizer("v1"), tmp_path / "fixed", arch="mistral")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype="float32")
    model.config.rms_norm_eps = 1e-30
    width = model.config.hidden_size
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                weight.zero_()  # the layers add nothing: the last hidden state is the embedding
        model.model.embed_tokens.weight.zero_()
        model.model.embed_tokens.weight[:, 0] = 1.0  # after the final norm: sqrt(width) · e0
        model.model.norm.weight.fill_(1.0)
        model.lm_head.weight.zero_()
        for value, tid in enumerate(MISTRAL_V1_DIGITS, start=1):
            model.lm_head.weight[tid, 0] = value / math.sqrt(width)
    model.save_pretrained(folder)
    out, _ = run_deita(folder, tmp_path)
    for row in out.iter_rows(named=True):
        n = len(row["complexity_scores"])
        assert row["complexity_scores"] == pytest.approx([KNOWN] * n, abs=1e-5)
        assert row["quality_scores"] == pytest.approx([KNOWN] * n, abs=1e-5)
        assert row["deita_score"] == pytest.approx(n * KNOWN**2, abs=1e-4)
    assert out["complexity_scores"].list.len().max() > 1  # a multi-turn row: Σ over turns


def test_the_candidate_ids_option_replaces_the_in_context_id(tmp_path: Path):
    import torch

    from workbench.errors import PipelineError
    from workbench.models.transformers_backend import TransformersBackend
    from workbench.pipeline import build_pipeline

    folder = tiny_model(mistral_tokenizer("v1"), tmp_path / "mistral-v1", arch="mistral")
    prompt = COMPLEXITY_TEMPLATE.format(instruction="Name a prime number.")
    plain = TransformersBackend(str(folder), dtype="float32")
    spaced_one = plain.tokenizer.convert_tokens_to_ids("▁1")
    chosen = TransformersBackend(str(folder), dtype="float32", candidate_ids={"1": spaced_one})
    ids = [plain.encoder.bos_id, *plain.tokenizer(prompt, add_special_tokens=False)["input_ids"]]
    with torch.no_grad():
        lp = plain.model(input_ids=torch.tensor([ids])).logits[0, -1].double().log_softmax(-1)
    [got] = chosen.next_token_distribution([prompt], list("123456"))
    want = [spaced_one, *MISTRAL_V1_DIGITS[1:]]
    assert list(got.values()) == pytest.approx(lp[want].tolist(), abs=1e-4)
    assert chosen.fingerprint()["candidate_ids"] == {"1": spaced_one}
    assert "candidate_ids" not in plain.fingerprint()  # without it, generation keys stay
    with pytest.raises(PipelineError, match="candidate_ids"):
        build_pipeline({"name": "x", "models": {"default": {
            "backend": "transformers", "model": str(folder),
            "options": {"candidate_ids": {"1": "one"}}}}, "steps": [{"deita_score": {}}]})
