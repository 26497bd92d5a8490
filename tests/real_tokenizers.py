"""Real tokenizers from the wheels that ship them, and tiny random models saved with them.

`mistral-common` (Apache-2.0) carries Mistral's SentencePiece v1/v3 files and tekken JSON in
its package data; `llama-models` carries Llama 3's tiktoken `tokenizer.model` (under the
Llama license: it is read from the installed package, never copied into this repository).
Both are in the `dev` extra. Outside CI a missing package skips the test; in CI (`CI` or `WORKBENCH_REQUIRE_SHARED`,
which `.ci/run` sets) it fails.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

# deita's Mistral_Scorer ids of "1".."6" (docs/methods.md §3.1), as the reference hard-codes them
MISTRAL_V1_DIGITS = [28740, 28750, 28770, 28781, 28782, 28784]
MISTRAL_FILES = {"v1": "tokenizer.model.v1", "v3": "mistral_instruct_tokenizer_240323.model.v3"}


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        message = f"{name} is not installed (pip install -e '.[dev]' brings it)"
        if os.environ.get("CI") or os.environ.get("WORKBENCH_REQUIRE_SHARED"):  # .ci/run sets it
            pytest.fail(message)
        pytest.skip(message)
    return Path(next(iter(spec.submodule_search_locations)))


def mistral_file(version: str) -> Path:
    return _package_dir("mistral_common") / "data" / MISTRAL_FILES[version]


def tekken_file() -> Path:
    return _package_dir("mistral_common") / "data" / "tekken_240911.json"


def llama3_file() -> Path:
    return _package_dir("llama_models") / "llama3" / "tokenizer.model"


@functools.cache
def mistral_tokenizer(version: str) -> Any:
    """Mistral's SentencePiece file as a transformers tokenizer that adds BOS, as Mistral's
    own tokenizer config does (transformers 5.x loads a `tokenizer.model` correctly through
    from_pretrained on its folder; LlamaTokenizer(vocab_file=...) would not)."""
    import tempfile

    from transformers import LlamaTokenizer

    with tempfile.TemporaryDirectory() as folder:
        shutil.copyfile(mistral_file(version), Path(folder) / "tokenizer.model")
        return LlamaTokenizer.from_pretrained(folder, add_bos_token=True)


@functools.cache
def tekken_tokenizer() -> Any:
    from transformers.integrations.mistral.tokenizer import convert_tekken_tokenizer

    return convert_tekken_tokenizer(str(tekken_file()), chat_template="")


@functools.cache
def llama3_reference() -> Any:
    """llama-models' own tiktoken tokenizer: the reference the converted one is checked on."""
    _package_dir("llama_models")
    from llama_models.llama3.tokenizer import Tokenizer

    return Tokenizer(llama3_file())


@functools.cache
def llama3_tokenizer() -> Any:
    """Llama 3's tiktoken file converted to a transformers fast tokenizer (TikTokenConverter,
    Llama 3's split pattern and its 256 special tokens), adding <|begin_of_text|> as Llama 3's
    tokenizer.json does."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ref = llama3_reference()
    specials = sorted(ref.special_tokens, key=ref.special_tokens.get)
    converted = TikTokenConverter(str(llama3_file()), pattern=ref.pat_str,
                                  extra_special_tokens=specials).converted()
    converted.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      special_tokens=[("<|begin_of_text|>", ref.bos_id)]),
    ])
    return PreTrainedTokenizerFast(tokenizer_object=converted, bos_token="<|begin_of_text|>",
                                   eos_token="<|eot_id|>")


def tiny_model(tokenizer: Any, folder: Path, arch: str = "mistral", seed: int = 0) -> Path:
    """A 2-layer random-weight causal LM over the tokenizer's whole vocabulary, saved with the
    tokenizer. A wide initializer spreads the logits, so reading a wrong id shows."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    config_cls, model_cls = ((MistralConfig, MistralForCausalLM) if arch == "mistral"
                             else (LlamaConfig, LlamaForCausalLM))
    config = config_cls(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, initializer_range=0.3,
        max_position_embeddings=4096, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=arch != "mistral")
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
