"""The vLLM backend: needs vLLM and a CUDA GPU; compared against the transformers backend."""

from __future__ import annotations

import importlib.util
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from workbench.models.base import CapabilityError, SamplingParams

HAS_VLLM = importlib.util.find_spec("vllm") is not None


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


needs_gpu = pytest.mark.skipif(
    not (HAS_VLLM and _cuda()), reason="needs vLLM and a CUDA GPU (pip install '.[gpu]')"
)
MAGPIE = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n<|im_start|>user\n"
)
CHAT = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed")
def test_missing_vllm_names_the_extra():
    from workbench.models.vllm_backend import VLLMBackend

    with pytest.raises(ImportError, match=r"pip install 'preference-workbench\[gpu\]'"):
        VLLMBackend("embedded")


def test_max_logprobs_must_be_positive():
    from workbench.models.vllm_backend import VLLMBackend

    with pytest.raises(ValueError, match="max_logprobs must be at least 1"):
        VLLMBackend("embedded", max_logprobs=0)


@pytest.fixture(scope="module")
def vllm_backend():
    from workbench.models.vllm_backend import VLLMBackend

    return VLLMBackend("embedded", gpu_memory_utilization=0.3, dtype="float32")


@pytest.fixture(scope="module")
def hf_backend():
    from workbench.models.transformers_backend import TransformersBackend

    return TransformersBackend("embedded", device="cuda", dtype="float32")


@pytest.mark.slow
@pytest.mark.gpu
@needs_gpu
def test_generate_structure_and_stops(vllm_backend):
    [[chat]] = vllm_backend.generate([CHAT], SamplingParams(max_new_tokens=24))
    assert chat.text.strip() and chat.finish_reason in ("stop", "length")
    assert chat.prompt_tokens > 0 and 0 < chat.completion_tokens <= 24
    params = SamplingParams(n=3, temperature=0.7, max_new_tokens=40, stop=("\n",), seed=1)
    [samples] = vllm_backend.generate([MAGPIE], params)
    assert len(samples) == 3 and all("\n" not in g.text for g in samples)
    assert vllm_backend.generate([MAGPIE], params) == [samples]  # seeded


@pytest.mark.slow
@pytest.mark.gpu
@needs_gpu
def test_scores_agree_with_transformers(vllm_backend, hf_backend):
    conts = ["The capital of France is Paris."]
    a = vllm_backend.logprobs([CHAT], conts)[0]
    b = hf_backend.logprobs([CHAT], conts)[0]
    assert a.total == pytest.approx(b.total, abs=5e-2)
    assert len(a.logprobs) == len(b.logprobs)
    cands = [str(i) for i in range(1, 7)]
    va = vllm_backend.next_token_distribution([CHAT], cands)[0]
    vb = hf_backend.next_token_distribution([CHAT], cands)[0]
    for c in cands:  # every digit, in the top 20 or read in the exact second pass
        assert va[c] == pytest.approx(vb[c], abs=5e-2)
    with pytest.raises(CapabilityError):
        vllm_backend.hidden_states([CHAT], conts)


@pytest.mark.slow
@pytest.mark.gpu
@needs_gpu
def test_candidates_outside_the_top_k_are_read_exactly(hf_backend):
    """With max_logprobs 1 at most one candidate comes with the generated token; the others
    are read from prompt log-probs of prompt + candidate: all equal the full-vocabulary
    log-softmax (transformers), none is -inf, nothing falls back."""
    from workbench.models.vllm_backend import VLLMBackend

    narrow = VLLMBackend("embedded", gpu_memory_utilization=0.3, dtype="float32", max_logprobs=1)
    cands = [str(i) for i in range(1, 7)] + ["Paris", "zebra"]
    prompts = [CHAT, "Rate from 1 to 6: Paris is in France.\nRating: "]
    for got, want in zip(narrow.next_token_distribution(prompts, cands),
                         hf_backend.next_token_distribution(prompts, cands), strict=True):
        assert list(got) == cands
        assert list(got.values()) == pytest.approx(list(want.values()), abs=5e-2)


@pytest.mark.slow
@pytest.mark.gpu
@needs_gpu
def test_first_token_processors_run_on_vllm_as_on_transformers(vllm_backend, hf_backend):
    """Magpie's de-markdown ban goes through the engine logits processor: banning the greedy
    first token moves both backends to the same other first token; flaming is seeded."""
    assert vllm_backend.shapes_first_token
    plain = vllm_backend.generate([MAGPIE], SamplingParams(max_new_tokens=6))[0][0]
    first = vllm_backend.encoder.encode_continuation(plain.text)[0]
    ban = SamplingParams(max_new_tokens=6, first_token_ban=(vllm_backend.tokenizer.decode([first]),))
    [[shaped]] = vllm_backend.generate([MAGPIE], ban)
    [[reference]] = hf_backend.generate([MAGPIE], ban)
    got = vllm_backend.encoder.encode_continuation(shaped.text)[0]
    assert got != first
    assert got == hf_backend.encoder.encode_continuation(reference.text)[0]
    flaming = SamplingParams(temperature=1.0, max_new_tokens=8, first_token_temperature=1.2,
                             seed=3)
    assert vllm_backend.generate([MAGPIE], flaming) == vllm_backend.generate([MAGPIE], flaming)


@pytest.mark.slow
@pytest.mark.gpu
@needs_gpu
def test_template_token_stops_go_as_stop_token_ids(vllm_backend):
    """A stop that is a special token is never in vLLM's detokenized text; sent as an id it
    ends the generation ("stop"), and the text holds no template token."""
    params = SamplingParams(max_new_tokens=64, stop=("<|im_end|>", "<|im_start|>"))
    [[chat]] = vllm_backend.generate([CHAT], params)
    assert chat.finish_reason == "stop" and "<|im_" not in chat.text


@pytest.mark.slow
@pytest.mark.gpu
@needs_gpu
def test_magpie_with_de_markdown_runs_on_vllm(ws):
    from workbench.pipeline import build_pipeline
    from workbench.runner import run_pipeline

    spec = build_pipeline({
        "name": "mv", "seed": 1, "output": "mv",
        "models": {"default": {"backend": "vllm", "model": "embedded",
                               "options": {"gpu_memory_utilization": 0.3, "dtype": "float32"}}},
        "steps": [{"magpie": {"n": 4, "first_token": "de_markdown", "max_new_tokens": 24}}]})
    run_pipeline(spec, ws, progress=False)
    data = ws.read("mv")
    assert data.height >= 1
    assert set(data["gen_input_configs"].struct.field("first_token")) == {"de_markdown"}
    assert not data["instruction"].str.starts_with("#").any()
