"""Magpie: the template registry, family detection, the reference sanitizer class by class,
first-token processors, and generation on the embedded model."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from transforms._support.magpie_sanitize import remove_prefix, sanitize
from transforms._support.magpie_templates import PROBE, detect_family, load_registry
from workbench.pipeline import build_pipeline
from workbench.runner import run_pipeline

EMBEDDED = {"default": {"backend": "transformers", "model": "embedded"}}
FAMILIES = ("llama3", "llama3.1", "llama3.3", "qwen2", "qwen2.5", "gemma2", "phi3", "mistral",
            "smollm2")


def test_registry_covers_the_families_with_stops_and_multi_turn_headers():
    families = load_registry()
    assert set(FAMILIES) <= set(families)
    for name in FAMILIES:
        family = families[name]
        assert family.pre_query_template and family.stop_tokens and family.mt_append_template
    assert families["qwen2.5"].pre_query_template.startswith(
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.")
    assert families["gemma2"].pre_query_template == "<bos><start_of_turn>user\n\n"
    assert families["phi3"].pre_query_template == "<s> <|user|>\n"
    assert families["llama3.3"].pre_query_template == families["llama3.1"].pre_query_template
    assert families["qwen2"].assistant_stops == ("Assistant", "assistant")
    with pytest.raises(ValueError, match="no 'math' variant"):
        families["gemma2"].prefix("math")


def test_users_extend_the_registry_with_their_own_file(tmp_path: Path):
    extra = tmp_path / "mine.yaml"
    extra.write_text('mymodel:\n  pre_query_template: "<|user|>\\n"\n  stop_tokens: ["<|end|>"]\n'
                     '  markers: ["<|user|>", "MyModel"]\n')
    families = load_registry(extra)
    assert families["mymodel"].stop_tokens == ("<|end|>",) and "smollm2" in families
    assert detect_family(f"<|user|>\n{PROBE}<|end|> MyModel", families).name == "mymodel"


@pytest.mark.slow
def test_embedded_chat_template_starts_with_its_pre_query_template(embedded):
    rendered = embedded.render([{"role": "user", "content": "X"}])
    families = load_registry()
    assert rendered.startswith(families["smollm2"].pre_query_template)
    assert detect_family(embedded.render([{"role": "user", "content": PROBE}]),
                         families).name == "smollm2"


def test_detection_tells_llama3_from_llama31_and_qwen_families():
    families = load_registry()
    llama3 = f"<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{PROBE}<|eot_id|>"
    llama31 = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge "
               "Date: December 2023\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
               f"{PROBE}<|eot_id|>")
    qwen2 = (f"<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
             f"{PROBE}<|im_end|>\n")
    qwen25 = families["qwen2.5"].pre_query_template + PROBE
    assert detect_family(llama3, families).name == "llama3"
    assert detect_family(llama31, families).name == "llama3.1"
    assert detect_family(qwen2, families).name == "qwen2"
    assert detect_family(qwen25, families).name == "qwen2.5"
    with pytest.raises(ValueError, match="set `template:`"):
        detect_family(f"### Human: {PROBE}", families)


@pytest.mark.parametrize(("text", "style", "expected"), [
    ("* Why is the sky blue? More text", "llama3", ("Why is the sky blue?", 1)),
    ('"How do tides work?" said the teacher', "llama3", ("How do tides work?", 2.1)),
    ('"Write a haiku about rain\nSecond line', "llama3", ("Write a haiku about rain", 2.2)),
    ("<b>Bold question</b> here\nmore", "llama3", ("<b>Bold question</b> here\nmore", 3)),
    ("Compute 2+2. The answer is: 4", "llama3", ("Compute 2+2.", 4)),
    ("Solve for x. Answer: x=2", "llama3", ("Solve for x. Answer: x=2", 99.2)),  # needs '::'
    ("Solve for x. Answer:: x=2", "llama3", ("Solve for x.", 4)),
    ("Explain recursion.\n## Step 1: base case", "llama3", ("Explain recursion.", 5)),
    ("Do the following:\nthen # heading", "llama3", ("Do the following:\nthen", 6.1)),
    ("Consider this:\nwhat is it? ok", "llama3", ("Consider this:\nwhat is it?", 6.2)),
    ("Do the following:\nfirst\nsecond", "llama3", ("Do the following:", 6.3)),
    ("Task: What is DNA? It is", "llama3", ("What is DNA?", 99.1)),
    ("1. Write a poem\nabout cats", "llama3", ("Write a poem", 99.2)),
    ("Explain recursion.\n## Step 1: base case", "gemma2", ("Explain recursion.", 6.2)),
    ("Do the following:\nfirst\nsecond", "gemma2", ("Do the following:", 5.3)),
    ("Plain instruction", "qwen2", ("Plain instruction", 0)),
])
def test_sanitizer_reproduces_each_reference_class(text, style, expected):
    assert sanitize(text, style) == expected


def test_sanitizer_quirks():
    # '**' is only stripped when it starts at index 1 (the reference's find("**") == 1)
    assert sanitize("x**Bold** ask? yes", "llama3") == ("xBold ask?", 99.1)
    assert sanitize("**Bold** ask? yes", "llama3") == ("Bold ask?", 1)  # starts with '*'
    # class 3 computes a cleaned first line and discards it
    assert sanitize("<b>Title</b>\n**body**", "llama3") == ("<b>Title</b>\nbody", 3)
    assert remove_prefix("Question 3: Why?") == "Why?"
    assert remove_prefix("**Problem** Find x") == "Find x"
    assert remove_prefix("a) Q2. hello") == "hello"


@pytest.mark.slow
def test_first_token_processors_change_only_the_first_token(embedded):
    from workbench.models.base import SamplingParams

    template = load_registry()["smollm2"].pre_query_template
    plain = embedded.generate([template], SamplingParams(max_new_tokens=6))[0][0]
    first = embedded.encoder.encode_continuation(plain.text)[0]
    banned_text = embedded.tokenizer.decode([first])
    shaped = embedded.generate([template], SamplingParams(
        max_new_tokens=6, first_token_ban=(banned_text,)))[0][0]
    assert embedded.encoder.encode_continuation(shaped.text)[0] != first
    flaming = SamplingParams(temperature=1.0, max_new_tokens=4, first_token_temperature=1.2)
    assert flaming.as_dict()["first_token_temperature"] == 1.2  # part of the cache key
    assert "first_token_temperature" not in SamplingParams().as_dict()


@pytest.mark.slow
def test_magpie_on_the_embedded_model(ws):
    spec = build_pipeline({
        "name": "magpie", "seed": 1, "models": EMBEDDED, "output": "synth",
        "steps": [{"magpie": {"n": 4, "max_new_tokens": 24, "responses": True,
                              "response_max_new_tokens": 12, "batch_size": 4}}]})
    result = run_pipeline(spec, ws, progress=False)
    data = ws.read("synth")
    assert result.output.kind == "sft" and 1 <= data.height <= 4
    template_tokens = load_registry()["smollm2"].stop_tokens + ("<|im_start|>", "<|im_end|>")
    for text in data["instruction"]:
        assert text.strip() and not any(t in text for t in template_tokens)
        assert "\n" not in text  # the reference's early stop
    assert data["response"].str.len_chars().min() > 0
    assert set(data["template"]) == {"smollm2"}
    assert data["pre_query_template"][0] == load_registry()["smollm2"].pre_query_template
    configs = data["gen_input_configs"].struct.unnest()
    assert set(configs["temperature"]) == {1.0} and set(configs["seed"]) == {1}
    assert data["instruction"].n_unique() == data.height  # independent samples per row
    prompt = data["prompt"][0]
    assert prompt.to_list() == [{"role": "user", "content": data["instruction"][0]}]


@pytest.mark.slow
def test_magpie_multi_turn_grows_the_conversation(ws):
    spec = build_pipeline({
        "name": "magpie_mt", "models": EMBEDDED, "output": "mt",
        "steps": [{"magpie": {"n": 2, "turns": 2, "max_new_tokens": 16,
                              "response_max_new_tokens": 8, "followup_max_new_tokens": 16}}]})
    run_pipeline(spec, ws, progress=False)
    data = ws.read("mt")
    for prompt in data["prompt"].to_list():
        assert [m["role"] for m in prompt] == ["user", "assistant", "user"]
        assert all(m["content"].strip() for m in prompt)
    assert data.filter(pl.col("response").str.len_chars() == 0).height == 0


class RecordingBackend:
    """Replies with fixed text and keeps each call's sampling options: what the caps test
    reads (the step under test is `magpie`, run by the real runner and call cache)."""

    backend = "transformers"
    capabilities = frozenset({"generate"})

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[tuple[str, object]] = []

    def fingerprint(self) -> dict:
        return {"backend": "recording", "name": self.name}

    def render(self, chat, add_generation_prompt: bool = True) -> str:
        return "".join(f"[{m['role']}] {m['content']}\n" for m in chat)

    def generate(self, prompts, params, seeds=None):
        from workbench.models.base import Generation

        kind = "instruction" if isinstance(prompts[0], str) and "[" not in prompts[0] else (
            "user" if isinstance(prompts[0], str) else "assistant")
        self.calls.append((kind, params))
        return [[Generation("Why is the sky blue?", "stop", 5, 6)] for _ in prompts]


@pytest.mark.parametrize(("template", "caps"), [
    ("llama3.1", (1024, 4096)),   # magpie-llama3.1-8b.sh: --max_tokens 1024
    ("gemma2", (512, 2048)),      # magpie-gemma2-9b.sh: 512 and 2048
    ("qwen2.5", (2048, 4096)),    # gen_ins.py / gen_res.py defaults
])
def test_token_caps_default_to_the_reference_scripts(ws, template, caps):
    from workbench.models import provide

    backend = RecordingBackend(f"caps-{template}")
    models = {"default": provide(backend, f"recording-{template}")}
    spec = build_pipeline({"name": "caps", "models": models, "output": "caps",
                           "steps": [{"magpie": {"n": 2, "template": template, "turns": 2}}]})
    run_pipeline(spec, ws, progress=False)
    params = {kind: p for kind, p in backend.calls}
    assert (params["instruction"].max_new_tokens, params["assistant"].max_new_tokens) == caps
    assert params["user"].max_new_tokens == 4096 and "\n" in params["user"].stop  # gen_mt.py
    data = ws.read("caps")
    assert set(data["gen_input_configs"].struct.field("max_tokens")) == {caps[0]}
    assert set(data["gen_response_configs"].struct.field("max_tokens")) == {caps[1]}
    if template == "llama3.1":  # its scripts: de-markdown on, no newline stop
        assert params["instruction"].first_token_ban == ("#", "##", "###", "####")
        assert "\n" not in params["instruction"].stop


def test_follow_up_turn_cap_and_stop_are_options(ws):
    from workbench.models import provide

    backend = RecordingBackend("caps-followup")
    models = {"default": provide(backend, "recording-followup")}
    spec = build_pipeline({"name": "fu", "models": models, "output": "fu", "steps": [{"magpie": {
        "n": 1, "template": "smollm2", "turns": 3, "max_new_tokens": 32,
        "response_max_new_tokens": 48, "followup_max_new_tokens": 20,
        "followup_early_stop": False}}]})
    run_pipeline(spec, ws, progress=False)
    users = [p for kind, p in backend.calls if kind == "user"]
    assert len(users) == 2 and all(p.max_new_tokens == 20 for p in users)
    assert all("\n" not in p.stop and "<|im_end|>" in p.stop for p in users)
    assert {p.max_new_tokens for kind, p in backend.calls if kind == "assistant"} == {48}
    sampled = build_pipeline({"name": "s", "input": "x.jsonl", "models": {"default": {}},
                              "steps": [{"sample_responses": {}}, {"generate": {"into": "g"}}]})
    assert [s.transform.config.max_new_tokens for s in sampled.steps] == [4096, 4096]
