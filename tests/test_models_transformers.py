"""The transformers backend on the real embedded SmolLM2, checked against plain forward passes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from workbench.models import embedded, load_backend
from workbench.models.base import Backend, SamplingParams
from workbench.models.spec import ModelSpec

pytestmark = pytest.mark.slow

SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
# Magpie pre-query template for SmolLM2 (ChatML): a system block, then an open user turn.
MAGPIE = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n"
CHAT = [{"role": "user", "content": "What is the capital of France?"}]
CHATS = [
    CHAT,
    [{"role": "user", "content": "Name two colours of the rainbow."}],
    [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": "Why do cats purr?"},
    ],
]
CONTINUATIONS = [
    "The capital of France is Paris.",
    "Red and violet are two colours of the rainbow, and there are five more.",
    "Cats purr when they are content.",
]


@pytest.fixture(scope="session")
def backend() -> Backend:
    return load_backend(ModelSpec(backend="transformers", model="embedded"))


def _prompt_ids(backend, prompt) -> list[int]:
    """Independent of the backend's encoder: template text, then plain tokenization."""
    tok = backend.tokenizer
    text = (
        prompt
        if isinstance(prompt, str)
        else tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    )
    return tok(text, add_special_tokens=False)["input_ids"]


def _forward(backend, ids: list[int], **kwargs):
    import torch

    with torch.no_grad():
        return backend.model(torch.tensor([ids]), **kwargs)


def test_is_a_backend_and_loaded_once(backend):
    assert isinstance(backend, Backend)
    assert load_backend(ModelSpec(backend="transformers", model="embedded")) is backend
    assert embedded.is_converted()
    fp = backend.fingerprint()
    assert fp["backend"] == "transformers" and fp["model"] == "embedded"
    assert fp["weights"]["gguf"] == embedded.GGUF_FILE and fp["weights"]["size"] > 0
    # the converted checkpoint is a plain model, not flagged as quantized
    assert not getattr(backend.model, "is_quantized", False)
    assert getattr(backend.model.config, "quantization_config", None) is None


def test_chat_prompt_answers(backend):
    [[gen]] = backend.generate([CHAT], SamplingParams(max_new_tokens=24))
    assert gen.text.strip()
    assert gen.finish_reason in ("stop", "length")
    assert gen.prompt_tokens == len(_prompt_ids(backend, CHAT))
    assert 0 < gen.completion_tokens <= 24
    if gen.finish_reason == "length":
        assert gen.completion_tokens == 24
    assert "<|im_end|>" not in gen.text and "<|im_start|>" not in gen.text


def test_no_double_bos(backend):
    tok = backend.tokenizer
    bos = tok.bos_token_id
    # SmolLM2's tokenizer adds no special tokens of its own: its BOS comes from the template
    assert tok("hi", add_special_tokens=True)["input_ids"] == tok("hi")["input_ids"]
    assert backend.encoder.bos_id is None
    for text in (MAGPIE, backend.encoder.render(CHAT)):
        ids = backend.encoder.encode(text)
        assert ids[0] == bos and ids[1] != bos
        assert ids == _prompt_ids(backend, text)


@pytest.mark.parametrize("stop", [("<|im_end|>",), ("\n",), ("<|im_end|>", "\n", "?")])
def test_magpie_pre_query_stops(backend, stop):
    params = SamplingParams(n=3, temperature=0.7, top_p=0.9, max_new_tokens=40, stop=stop, seed=1)
    [samples] = backend.generate([MAGPIE], params)
    assert len(samples) == 3
    for gen in samples:
        assert gen.text.strip(), gen
        for s in stop:
            assert s not in gen.text
        assert "<|im_start|>" not in gen.text
        assert gen.finish_reason in ("stop", "length")
        if gen.finish_reason == "length":
            assert gen.completion_tokens == 40
        assert gen.prompt_tokens == len(_prompt_ids(backend, MAGPIE))
    assert any(g.finish_reason == "stop" for g in samples)
    assert len({g.text for g in samples}) > 1  # sampled, not three copies


def test_sampling_is_reproducible_and_batch_independent(backend):
    params = SamplingParams(n=2, temperature=0.9, max_new_tokens=12, seed=3)
    prompts = [MAGPIE, CHAT, CHATS[1]]
    batched = backend.generate(prompts, params)
    alone = [backend.generate([p], params)[0] for p in prompts]
    assert batched == alone
    other_seed = backend.generate(prompts, SamplingParams(**{**params.as_dict(), "seed": 4}))
    assert other_seed != batched


def test_greedy_n_repeats_one_answer(backend):
    [samples] = backend.generate([CHAT], SamplingParams(n=2, max_new_tokens=8))
    assert samples[0] == samples[1]


def test_logprobs_equal_single_forward(backend):
    results = backend.logprobs(CHATS, CONTINUATIONS)
    tok = backend.tokenizer
    for prompt, cont, got in zip(CHATS, CONTINUATIONS, results, strict=True):
        p_ids = _prompt_ids(backend, prompt)
        c_ids = tok(cont, add_special_tokens=False)["input_ids"]
        logits = _forward(backend, p_ids + c_ids).logits[0].float().log_softmax(-1)
        expected = [logits[len(p_ids) - 1 + k, t].item() for k, t in enumerate(c_ids)]
        assert got.total == pytest.approx(sum(expected), abs=1e-4)
        assert got.logprobs == pytest.approx(expected, abs=1e-4)
        assert "".join(got.tokens) == cont
        assert got.total < 0


def test_logprobs_batched_equals_unbatched(backend):
    saved = backend.batch_size
    try:
        backend.batch_size = 1
        single = backend.logprobs(CHATS + [MAGPIE], CONTINUATIONS + ["How do I bake bread?"])
        backend.batch_size = 4
        batched = backend.logprobs(CHATS + [MAGPIE], CONTINUATIONS + ["How do I bake bread?"])
    finally:
        backend.batch_size = saved
    for a, b in zip(single, batched, strict=True):
        assert a.total == pytest.approx(b.total, abs=1e-4)
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
    assert backend.logprobs([CHAT], [""])[0].total == 0.0


def test_next_token_distribution_matches_logits(backend):
    judge = [
        {
            "role": "user",
            "content": "Rate this answer from 1 to 6. Answer: Paris is the capital of France. "
            "Reply with a single digit.",
        }
    ]
    candidates = [str(i) for i in range(1, 7)]
    results = backend.next_token_distribution([judge, CHAT], candidates)
    tok = backend.tokenizer
    cand_ids = tok.convert_tokens_to_ids(candidates)
    for prompt, got in zip([judge, CHAT], results, strict=True):
        last = _forward(backend, _prompt_ids(backend, prompt)).logits[0, -1].float()
        expected = last.log_softmax(-1)[cand_ids].tolist()
        assert list(got) == candidates
        assert list(got.values()) == pytest.approx(expected, abs=1e-4)
        assert all(v < 0 for v in got.values())
    with pytest.raises(ValueError, match="'10' and '1' both start with token"):
        backend.next_token_distribution([CHAT], ["10", "1"])


def test_hidden_states_match_forward(backend):
    """Rows from the last prompt token to the last continuation token, as a plain unpadded
    forward gives them; the pooled form sums the predicting rows in float64."""
    import numpy as np

    results = backend.hidden_states(CHATS[:2], CONTINUATIONS[:2])
    pooled = backend.hidden_states(CHATS[:2], CONTINUATIONS[:2], pool="sum")
    tok = backend.tokenizer
    for prompt, cont, got, pool in zip(CHATS[:2], CONTINUATIONS[:2], results, pooled,
                                       strict=True):
        p_ids = _prompt_ids(backend, prompt)
        c_ids = tok(cont, add_special_tokens=False)["input_ids"]
        out = _forward(backend, p_ids + c_ids, output_hidden_states=True)
        expected = out.hidden_states[-1][0, len(p_ids) - 1 :].float().numpy()
        assert got.dtype == np.float32
        assert got.shape == (len(c_ids) + 1, backend.model.config.hidden_size)
        np.testing.assert_allclose(got, expected, atol=1e-4)
        assert pool["tokens"] == len(c_ids)
        np.testing.assert_allclose(pool["sum"], expected[:-1].astype(np.float64).sum(0),
                                   rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(pool["last"], expected[-1], atol=1e-4)


def test_hidden_states_tokenize_once_and_split_by_offsets(backend):
    """A word cut by the boundary is one token of the joint text: it counts as prompt, and
    the continuation's rows start at the first token that begins after the prompt."""
    import numpy as np

    tok = backend.tokenizer
    prompt, cont = "The capital of Fra", "nce is Paris."
    joint = tok(prompt + cont, add_special_tokens=False, return_offsets_mapping=True)
    first = next(k for k, (start, _) in enumerate(joint["offset_mapping"]) if start >= len(prompt))
    ids = joint["input_ids"]
    assert ids[:first] != tok(prompt, add_special_tokens=False)["input_ids"]  # a merged token
    (got,) = backend.hidden_states([prompt], [cont])
    out = _forward(backend, ids, output_hidden_states=True)
    expected = out.hidden_states[-1][0, first - 1 :].float().numpy()
    assert got.shape[0] == len(ids) - first + 1
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_unknown_option_is_a_clear_error():
    with pytest.raises(ValueError, match="colour"):
        load_backend(ModelSpec(backend="transformers", model="embedded", options={"colour": 1}))


# -- the one-time conversion --------------------------------------------------------------


def test_cache_root_honours_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("WORKBENCH_CACHE", raising=False)
    assert embedded.cache_root() == tmp_path / "xdg" / "workbench"
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "wb"))
    assert embedded.converted_dir().parent == tmp_path / "wb" / "models"


def test_failed_conversion_leaves_nothing_and_is_redone(monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))

    def broken(gguf: Path, out: Path) -> dict:
        (out / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("killed")

    monkeypatch.setattr(embedded, "convert", broken)
    with pytest.raises(RuntimeError):
        embedded.ensure_converted()
    assert not embedded.converted_dir().exists()
    assert list((tmp_path / "models").glob(".tmp-*")) == []

    def quick(gguf: Path, out: Path) -> dict:
        (out / "config.json").write_text("{}")
        return {"total_s": 0.0}

    monkeypatch.setattr(embedded, "convert", quick)
    final = embedded.ensure_converted()
    assert embedded.is_converted(final) and (final / "config.json").is_file()


def test_sigkilled_conversion_leaves_no_broken_cache(monkeypatch, tmp_path):
    """A real conversion killed mid-way: no final folder; the next run cleans the leftovers."""
    env = {**os.environ, "WORKBENCH_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    code = "from workbench.models import embedded; embedded.ensure_converted()"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    models = tmp_path / "models"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(models.glob(".tmp-*")):
        time.sleep(0.05)
    time.sleep(3.0)  # inside the conversion (loading the GGUF)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(models.glob(".tmp-*")), "the conversion should have been under way"
    final = [p for p in models.iterdir() if not p.name.startswith(".")]
    assert final == []

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    embedded._remove_leftovers(embedded.converted_dir())  # as ensure_converted does, locked
    assert list(models.glob(".tmp-*")) == []
