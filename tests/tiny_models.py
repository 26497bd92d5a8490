"""A 2-layer Llama of the embedded model's architecture, with its tokenizer and chat template:
the trainers' format handling is the same as on the real model, and a step takes seconds."""

from __future__ import annotations

from pathlib import Path


def small_llama(path: Path) -> Path:
    """Save the tiny model and the embedded tokenizer to `path` (trainers load their
    reference model from a path) and return it."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from workbench.models.embedded import ensure_converted

    embedded = ensure_converted()
    config = AutoConfig.from_pretrained(embedded, num_hidden_layers=2, hidden_size=64,
                                        intermediate_size=128, num_attention_heads=4,
                                        num_key_value_heads=2, head_dim=16)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(embedded).save_pretrained(path)
    return path
