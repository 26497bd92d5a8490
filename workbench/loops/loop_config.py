"""Loop specs (`workbench loop LOOP.yaml`): read strictly and validated as a whole before
anything runs, like pipelines.

A loop names a starting policy, a round pipeline (inline, or a pipeline YAML) whose model
`policy` is the current policy in every round, a training step between rounds (TRL's
DPOTrainer built in, or a command of the user's), the number of rounds, the input and the
output name NAME (round r publishes dataset NAME-rR). Errors name the file and the field.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from workbench.errors import LoopError, PipelineError
from workbench.formats import strict_yaml
from workbench.pipeline import Pipeline, _first_error, build_pipeline, consumed_kinds

POLICY = "policy"  # the model name the round pipeline uses for the current policy
PLACEHOLDERS = ("{export}", "{output}", "{policy}")
# set by the loop in every round; an inline round pipeline must leave them out
LOOP_KEYS = ("name", "input", "output", "seed")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraSpec(_Strict):
    """LoRA adapters through peft (merged into the weights after training, so the next round
    loads a plain model folder)."""

    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str | list[str] = Field("all-linear")


class DPOSpec(_Strict):
    """TRL's DPOTrainer on the round's export; the reference model is the round's policy."""

    beta: float = Field(0.1, gt=0)
    learning_rate: float = Field(5e-7, gt=0)
    epochs: float = Field(1.0, gt=0, description="passes over the round's pairs")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps (overrides epochs)")
    batch_size: int = Field(2, ge=1, description="pairs per device per step")
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_length: int | None = Field(1024, ge=8, description="tokens of prompt plus reply")
    loss_type: str = Field("sigmoid", description="TRL's DPO loss type")
    layout: Literal["conversational", "standard"] = Field(
        "conversational", description="the export's TRL layout")
    device: Literal["auto", "cpu", "cuda"] = Field("auto")
    bf16: bool = Field(False)
    lora: LoraSpec | None = Field(None, description="train LoRA adapters (needs peft)")

    @model_validator(mode="after")
    def _trl_installed(self) -> DPOSpec:
        if importlib.util.find_spec("trl") is None:  # refused before round 1, not after it
            raise ValueError("the built-in DPO training needs TRL, which is not installed: "
                             "`pip install 'preference-workbench[train]'` (or `pip install "
                             "trl`), or train with a `command`")
        return self

    @field_validator("lora")
    @classmethod
    def _peft_installed(cls, value: LoraSpec | None) -> LoraSpec | None:
        if value is not None and importlib.util.find_spec("peft") is None:
            raise ValueError("LoRA training needs the peft package, which is not installed: "
                             "`pip install peft`, or leave `lora` out to train all weights")
        return value


class TrainSpec(_Strict):
    """Exactly one of `dpo` (built in) or `command` (yours)."""

    dpo: DPOSpec | None = None
    command: str | list[str] | None = Field(
        None, description="run without a shell (a string is split as a shell would); "
        "{export}, {output} and {policy} are replaced by the round's export folder, the folder "
        "to write the trained model to and the current policy")

    @model_validator(mode="after")
    def _one(self) -> TrainSpec:
        if (self.dpo is None) == (self.command is None):
            raise ValueError("give exactly one of `dpo: {...}` (TRL's DPOTrainer) or "
                             "`command: ...` (your own training command)")
        if self.command is not None:
            argv = self.argv()
            if not argv:
                raise ValueError("`command` is empty")
            if not any("{output}" in a for a in argv):
                raise ValueError("`command` must write the trained model to {output}; it names "
                                 "no {output}")
        return self

    def argv(self) -> list[str]:
        """The command as a list of arguments, placeholders still in place."""
        if self.command is None:
            return []
        return shlex.split(self.command) if isinstance(self.command, str) else list(self.command)


class LoopSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,119}$",
                      description="the output name: round r publishes NAME-rR")
    policy: str = Field(min_length=1, description="the starting policy: a model folder, "
                        "`embedded`, `tiny:embedded` or a hub id")
    pipeline: str | dict[str, Any] = Field(description="the round pipeline: a pipeline YAML "
                                           "path, or its models/steps inline")
    input: str | None = Field(None, description="each round's input: a dataset or a file "
                              "(default: the pipeline file's `input`)")
    limit: int | None = Field(None, ge=1, description="use only the first N input rows")
    rounds: int = Field(ge=1, le=1000)
    seed: int | None = Field(None, description="pipeline and trainer seed (default: the "
                             "pipeline file's, else 0)")
    train: TrainSpec


@dataclass(frozen=True)
class Loop:
    spec: LoopSpec
    source: str  # the loop file, or "<python>"
    base_dir: Path  # where relative paths in the loop file resolve
    pipeline_data: dict[str, Any]  # the round pipeline as data, loop keys not yet set
    pipeline_dir: Path  # where the round pipeline's own relative paths resolve
    pipeline_text: str  # the pipeline file's text, or the inline part as YAML

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def seed(self) -> int:
        if self.spec.seed is not None:
            return self.spec.seed
        return int(self.pipeline_data.get("seed", 0) or 0)

    def round_name(self, round_: int) -> str:
        return f"{self.spec.name}-r{round_}"

    def round_pipeline(self, round_: int, policy: str) -> Pipeline:
        """Round `round_`'s pipeline: named and published as NAME-rR, the loop's input and
        seed, and its model `policy` set to the `policy` folder (or name)."""
        data = copy.deepcopy(self.pipeline_data)
        data.update(name=self.round_name(round_), output=self.round_name(round_), seed=self.seed)
        if self.spec.input is not None:
            data["input"] = self._input()
        models = data.setdefault("models", {}) or {}
        data["models"] = models
        entry = dict(models.get(POLICY) or {})
        entry["model"] = policy
        models[POLICY] = entry
        where = f"{self.source}: pipeline (round {round_})"
        try:
            return build_pipeline(data, source=where, base_dir=self.pipeline_dir,
                                  yaml_text=yaml.safe_dump(data, sort_keys=False))
        except PipelineError as exc:
            raise LoopError(str(exc)) from None

    def _input(self) -> str:
        """A relative file path resolves against the loop file's folder; anything else is a
        dataset name, left as it is."""
        given = str(self.spec.input)
        path = Path(given).expanduser()
        candidate = path if path.is_absolute() else self.base_dir / path
        return str(candidate.resolve()) if candidate.exists() else given

    def digest(self) -> str:
        """What finished rounds depend on (all but `rounds`): a loop resumed under another
        configuration would mix two experiments, so it is refused."""
        what = {"policy": self.spec.policy, "pipeline": self.pipeline_text,
                "input": self.spec.input,  # as written: the runner keys files by content
                "limit": self.spec.limit, "seed": self.seed,
                "train": self.spec.train.model_dump(mode="json")}
        blob = json.dumps(what, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_loop(path: str | Path) -> Loop:
    path = Path(path)
    data, _ = strict_yaml.load_mapping_file(path, "loop", LoopError,
                                            "name, policy, pipeline, train, rounds, ...")
    return build_loop(data, source=str(path), base_dir=path.parent)


def build_loop(data: dict[str, Any], source: str = "<python>",
               base_dir: Path | None = None) -> Loop:
    """Validate the loop and its round pipeline (built once with the starting policy), so a
    mistake fails before any model loads."""
    try:
        spec = LoopSpec.model_validate(data)
    except ValidationError as exc:
        raise LoopError(f"{source}: {_first_error(exc)}") from None
    base = (base_dir or Path.cwd()).resolve()
    if isinstance(spec.pipeline, str):
        file = Path(spec.pipeline).expanduser()
        file = file if file.is_absolute() else base / file
        try:
            text = file.read_text(encoding="utf-8")
            pipeline_data = strict_yaml.load(text)
        except FileNotFoundError:
            raise LoopError(f"{source}: field 'pipeline': no such pipeline file {file}") from None
        except (UnicodeDecodeError, yaml.YAMLError) as exc:
            raise LoopError(f"{source}: field 'pipeline': {file} is not a readable pipeline "
                            f"({str(exc).splitlines()[0]})") from None
        if not isinstance(pipeline_data, dict):
            raise LoopError(f"{source}: field 'pipeline': {file} is not a YAML mapping")
        pipeline_dir = file.parent.resolve()
    else:
        pipeline_data, text, pipeline_dir = dict(spec.pipeline), "", base
        for key in LOOP_KEYS:
            if key in pipeline_data:
                raise LoopError(f"{source}: field 'pipeline.{key}': the loop sets it in every "
                                f"round (name and output NAME-rR, the loop's input and seed); "
                                "remove it")
        text = yaml.safe_dump(pipeline_data, sort_keys=True)
    loop = Loop(spec, source, base, pipeline_data, pipeline_dir, text)
    pipeline = loop.round_pipeline(1, spec.policy)
    creates = consumed_kinds(pipeline.steps[0]) == "none"  # e.g. magpie writes the prompts
    if spec.input is None and not pipeline_data.get("input") and not creates:
        raise LoopError(f"{source}: field 'input': give the rows each round starts from (a "
                        "dataset or a file)")
    users = [s.label for s in pipeline.steps if POLICY in s.transform.models().values()]
    if not users:
        raise LoopError(f"{source}: field 'pipeline': no step uses the model {POLICY!r}, so no "
                        "round would be generated by the policy being trained (name it in a "
                        "step, e.g. `generate: {model: policy}`)")
    return loop
