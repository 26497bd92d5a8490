"""What the call cache keys a model on: file contents (not names and sizes), the tokenizer and
its chat template."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workbench.models.fingerprint import file_digest, folder_digest, tokenizer_digest
from workbench.models.transformers_backend import describe_weights


@pytest.fixture
def own_cache(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))


def test_a_retrained_checkpoint_with_the_same_file_sizes_is_another_model(tmp_path: Path, own_cache):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"hidden_size": 8}')
    weights = folder / "model.safetensors"
    weights.write_bytes(b"\x00" * 4096)
    before = describe_weights(str(folder))
    stat = weights.stat()
    weights.write_bytes(b"\x01" + b"\x00" * 4095)  # same name, same size
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    after = describe_weights(str(folder))
    assert before != after
    # the same content elsewhere is the same model
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "config.json").write_text('{"hidden_size": 8}')
    (copy / "model.safetensors").write_bytes(b"\x01" + b"\x00" * 4095)
    assert folder_digest(copy) == folder_digest(folder)


def test_file_digests_are_remembered_until_the_file_changes(tmp_path: Path, own_cache):
    path = tmp_path / "w.bin"
    path.write_bytes(b"abc")
    first = file_digest(path)
    memo = (tmp_path / "cache" / "file-digests.json").read_text()
    assert first in memo
    path.write_bytes(b"abd")
    assert file_digest(path) != first


def test_tokenizer_and_chat_template_are_part_of_the_fingerprint():
    from transformers import AutoTokenizer

    from workbench.models import embedded

    tokenizer = AutoTokenizer.from_pretrained(embedded.ensure_converted())
    base = tokenizer_digest(tokenizer)
    assert tokenizer_digest(tokenizer) == base
    tokenizer.chat_template = tokenizer.chat_template.replace("<|im_start|>", "<|im_start|> ")
    assert tokenizer_digest(tokenizer) != base
