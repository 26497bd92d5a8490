"""What identifies a model's outputs: file contents, tokenizer and chat template, options.

The call cache keys on these, so a retrained checkpoint saved under the same file names, an
edited chat template or a changed request option can never be answered from old results.
Hashing gigabytes on every load would be slow, so each file's digest is remembered under its
(path, size, mtime, inode) in the user cache; a changed file is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from workbench.store.atomic import atomic_file, file_lock, file_sha256

_MEMO_FILE = "file-digests.json"
# The lineage a trained policy folder carries (workbench.loops.loop_train): it says where the
# weights came from, changes no output, and holds their digest, so it is left out of it.
LINEAGE_FILE = "workbench-lineage.json"


def _memo_path() -> Path:
    from workbench.models.embedded import cache_root

    return cache_root() / _MEMO_FILE


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, remembered while its size, mtime and inode stay the same."""
    path = path.resolve()
    st = path.stat()
    stamp = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
    memo_path = _memo_path()
    memo = _read_memo(memo_path)
    entry = memo.get(str(path))
    if entry and entry.get("stamp") == stamp:
        return entry["sha256"]
    digest = file_sha256(path)
    try:
        with file_lock(memo_path.with_suffix(".lock")):
            memo = _read_memo(memo_path)
            memo[str(path)] = {"stamp": stamp, "sha256": digest}
            with atomic_file(memo_path) as tmp:
                tmp.write_text(json.dumps(memo))
    except OSError:  # a read-only cache folder only costs re-hashing next time
        pass
    return digest


def _read_memo(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def folder_digest(folder: Path) -> str:
    """One digest over every file below `folder` (relative path and content), hidden files,
    caches and a policy's `LINEAGE_FILE` left out, so the same checkpoint copied elsewhere has
    the same digest."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or (name == LINEAGE_FILE and Path(root) == folder):
                continue
            path = Path(root) / name
            rel = path.relative_to(folder).as_posix()
            digest.update(f"{rel}\0{file_digest(path)}\n".encode())
    return digest.hexdigest()[:16]


def tokenizer_digest(tokenizer: Any) -> str:
    """The tokenizer's vocabulary, merges, special tokens and chat template, hashed."""
    digest = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "to_str"):
        digest.update(backend.to_str().encode())
    else:
        vocab = sorted(tokenizer.get_vocab().items())
        digest.update(json.dumps(vocab, ensure_ascii=False).encode())
    specials = {
        "special": list(getattr(tokenizer, "all_special_tokens", []) or []),
        "bos": getattr(tokenizer, "bos_token", None),
        "eos": getattr(tokenizer, "eos_token", None),
        "chat_template": text_digest(getattr(tokenizer, "chat_template", None)),
    }
    digest.update(json.dumps(specials, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def text_digest(text: Any) -> str | None:
    """A short digest of a template or any JSON-able option (None stays None)."""
    if text is None:
        return None
    blob = text if isinstance(text, str) else json.dumps(text, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
