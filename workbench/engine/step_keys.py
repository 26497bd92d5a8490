"""Checkpoint keys: each step's key chains the previous key with everything that decides the
step's output, so a changed config re-runs that step and the later ones only.

A step's key hashes: the key before it (the first chains on the input's fingerprint, the
pipeline seed and `CHECKPOINT_FORMAT`), its name and options, its code
(`code_fingerprint`), the specs of the models it names, the pipeline's batch size, and the
digest of files it reads itself (`StepConfig.input_digest`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from workbench.errors import PipelineError, WorkbenchError
from workbench.pipeline import Pipeline, Step
from workbench.transform import code_fingerprint

# Bump when the runner changes what a step's checkpoint holds (ids, columns, drop handling).
CHECKPOINT_FORMAT = 3


def chain_key(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def first_key(input_fingerprint: str, seed: int) -> str:
    return chain_key(input_fingerprint, seed, CHECKPOINT_FORMAT)


def step_key(previous: str, step: Step, pipeline: Pipeline) -> str:
    spec = pipeline.spec
    return chain_key(previous, step.name, step.transform.config.model_dump(mode="json"),
                     code_fingerprint(type(step.transform)),
                     {n: m.model_dump() for n, m in spec.models.items()
                      if n in step.transform.models().values()},
                     spec.batch_size, *files_digest(step, pipeline))


def files_digest(step: Step, pipeline: Pipeline) -> list[str]:
    """The content hash of files a step reads by itself (a config's `input_digest`, e.g.
    the documents of `agentinstruct`), so an edited file re-runs the step."""
    try:
        digest = step.transform.config.input_digest(pipeline.base_dir)
    except WorkbenchError as exc:
        raise PipelineError(f"{step.label}: {exc}") from exc
    return [] if digest is None else [digest]
