"""`tiny:embedded`: a randomly initialised two-layer model with the embedded SmolLM2's
architecture, vocabulary and chat template, for loops and tests that must train in seconds on
a CPU.

It is built once per seed into the user cache (`cache_root()/models/tiny-embedded-...`),
written to a temporary folder and renamed, as the embedded model's conversion is, so a killed
build never leaves half a model. Its answers are noise: it exercises the plumbing of a loop
(generation, pairing, DPO, resume), not the quality of anything. Build it by hand with
`python -c "from workbench.models.tiny import ensure_tiny; print(ensure_tiny())"`; a loop whose
`policy:` is `tiny:embedded` builds it on first use.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from workbench.store.atomic import atomic_dir, file_lock

NAME = "tiny:embedded"
# The embedded config with these entries replaced: about 3.2M parameters, most of them the
# (tied) 49,152-token embedding.
SHAPE = {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
         "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16}
# Bump when the build changes, so an old folder is not reused.
BUILD_VERSION = 1
MARKER = "workbench-tiny.json"


def tiny_dir(seed: int = 0) -> Path:
    """Where the tiny model of `seed` lives (whether or not it is built yet)."""
    from workbench.models import embedded

    ident = json.dumps({"shape": SHAPE, "seed": seed, "build": BUILD_VERSION,
                        "embedded": embedded.weights_id()}, sort_keys=True)
    digest = hashlib.sha256(ident.encode()).hexdigest()[:12]
    return embedded.cache_root() / "models" / f"tiny-embedded-{digest}"


def ensure_tiny(seed: int = 0) -> Path:
    """The tiny model's folder (config, safetensors, tokenizer), built first if needed."""
    final = tiny_dir(seed)
    if (final / MARKER).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(final.parent / f".{final.name}.lock"):
        if (final / MARKER).is_file():  # another process built it while we waited
            return final
        if final.exists():  # no marker: not ours to trust
            import shutil

            shutil.rmtree(final)
        with atomic_dir(final) as tmp:
            build(tmp, seed)
            (tmp / MARKER).write_text(json.dumps({"shape": SHAPE, "seed": seed,
                                                  "build": BUILD_VERSION}, indent=2))
    return final


def build(out: Path, seed: int = 0) -> None:
    """A random model of the embedded config cut to `SHAPE`, seeded, and the embedded
    tokenizer, saved to `out`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from workbench.models.embedded import ensure_converted

    embedded = ensure_converted()
    config = AutoConfig.from_pretrained(embedded, **SHAPE)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(embedded).save_pretrained(out)


def resolve(model: str) -> str:
    """`tiny:embedded` (optionally `tiny:embedded@SEED`) as the folder it names; any other
    model name as it is."""
    name, _, seed = model.partition("@")
    if name != NAME:
        return model
    if seed and not seed.isdigit():
        raise ValueError(f"{model!r}: the seed after '@' is a whole number, e.g. {NAME}@1")
    return str(ensure_tiny(int(seed or 0)))
