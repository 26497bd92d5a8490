"""The training step between two rounds of a loop: TRL's DPOTrainer on the round's export
(built in), or the user's command; either writes the next policy.

The policy is written into a temporary sibling folder that is renamed once training has
finished (`atomic_dir`), so a killed training leaves no policy folder and is done again;
a policy folder that exists is complete and is never trained again. Its lineage
(`workbench-lineage.json`: base policy, round dataset, trainer and its options, metrics, the
weights' digest) lies beside the weights; the digest is the one the call cache's model
fingerprint holds for the folder, which leaves that file out.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from workbench.engine.crashpoints import crashpoint
from workbench.errors import LoopError
from workbench.loops.loop_config import DPOSpec, TrainSpec
from workbench.models.fingerprint import LINEAGE_FILE
from workbench.store.atomic import atomic_dir, atomic_file, claimed

TRAINER_DIR = ".trainer"  # TRL's own output (logs) inside the folder being written
LOG_TAIL = 20  # lines of a failed command's output shown in the error


def weights_of(model: str) -> dict[str, Any]:
    """What identifies a policy's weights, as the transformers backend's fingerprint says it
    (`weights`): a folder's files by content, the embedded model's file; a hub id as given."""
    from workbench.models.transformers_backend import describe_weights

    if model == "embedded" or Path(model).exists():
        return describe_weights(model)
    return {"hub": model}


def read_lineage(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / LINEAGE_FILE).read_text())
    except (OSError, ValueError):
        return None


def trained_policy(final: Path) -> dict[str, Any] | None:
    """The lineage of a finished policy folder (its weights' digest added where a kill came
    between the rename and that), or None when no training finished there."""
    if not final.is_dir():
        return None
    lineage = read_lineage(final) or {}
    if "weights" not in lineage:
        lineage["weights"] = weights_of(str(final))
        with atomic_file(final / LINEAGE_FILE) as tmp:
            tmp.write_text(json.dumps(lineage, indent=2, default=str))
    return lineage


def train_policy(train: TrainSpec, export: Path, base: str, final: Path, seed: int,
                 lineage: dict[str, Any], cwd: Path) -> dict[str, Any]:
    """Train the next policy from `base` on `export` into `final`; its lineage."""
    _remove_leftovers(final)
    started = time.monotonic()
    with atomic_dir(final) as tmp:
        if train.dpo is not None:
            metrics = _dpo(train.dpo, export, base, tmp, seed)
            trainer: dict[str, Any] = {"dpo": train.dpo.model_dump(mode="json"),
                                       "seed": seed, "versions": _versions()}
        else:
            metrics = _command(train, export, base, tmp, cwd, final.parent / "train.log")
            trainer = {"command": train.argv()}
        if not (tmp / "config.json").is_file():
            raise LoopError(f"the training step wrote no model to {final} (no config.json)")
        record = {**lineage, "base": {"model": base, "weights": weights_of(base)},
                  "trainer": trainer, "metrics": metrics,
                  "seconds": round(time.monotonic() - started, 2)}
        (tmp / LINEAGE_FILE).write_text(json.dumps(record, indent=2, default=str))
    done = trained_policy(final)  # the digest is taken at its final path (remembered there)
    assert done is not None
    return done


def _remove_leftovers(final: Path) -> None:
    """Temporary folders of trainings killed before they finished (no live owner)."""
    for stale in final.parent.glob(f".tmp-{final.name}-*"):
        with claimed(stale) as free:
            if free:
                shutil.rmtree(stale, ignore_errors=True)


def _dpo(spec: DPOSpec, export: Path, base: str, out: Path, seed: int) -> dict[str, Any]:
    """TRL's DPOTrainer from `base` on the export's train split; the reference model is
    `base` as it was (TRL's copy), as SPIN's and self-rewarding's rounds have it."""
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    from workbench.models.transformers_backend import resolve_model_path

    class Crashpoints(TrainerCallback):
        """Lets a test kill the process between two optimizer steps."""

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            crashpoint("loop.train_step")

    if spec.device == "cuda" and not torch.cuda.is_available():
        raise LoopError("train.dpo.device is cuda, but torch sees no CUDA device")
    use_cpu = spec.device == "cpu" or (spec.device == "auto" and not torch.cuda.is_available())
    path = resolve_model_path(base)
    data = datasets.load_from_disk(str(export))["train"]
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    peft_config = None
    if spec.lora is not None:
        from peft import LoraConfig

        peft_config = LoraConfig(r=spec.lora.r, lora_alpha=spec.lora.alpha,
                                 lora_dropout=spec.lora.dropout,
                                 target_modules=spec.lora.target_modules, task_type="CAUSAL_LM")
    args = DPOConfig(
        output_dir=str(out / TRAINER_DIR), beta=spec.beta, learning_rate=spec.learning_rate,
        num_train_epochs=spec.epochs, max_steps=spec.max_steps or -1,
        per_device_train_batch_size=spec.batch_size,
        gradient_accumulation_steps=spec.gradient_accumulation_steps,
        max_length=spec.max_length, loss_type=[spec.loss_type], use_cpu=use_cpu,
        bf16=spec.bf16, seed=seed, data_seed=seed, report_to=[], save_strategy="no",
        logging_steps=1, disable_tqdm=True)
    trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=[Crashpoints()])
    trainer.remove_callback(PrinterCallback)  # metrics go to the lineage, not the terminal
    result = trainer.train()
    trained = trainer.model
    if spec.lora is not None:  # a plain folder the next round (or vLLM) loads as it is
        trained = trained.merge_and_unload()
    trained.save_pretrained(out)
    tokenizer.save_pretrained(out)
    shutil.rmtree(out / TRAINER_DIR, ignore_errors=True)
    return {"pairs": len(data), "steps": result.global_step,
            "train_loss": round(float(result.training_loss), 6)}


def _command(train: TrainSpec, export: Path, base: str, out: Path, cwd: Path,
             log: Path) -> dict[str, Any]:
    """The user's command, placeholders replaced, without a shell; its output goes to
    `log` and a non-zero exit status is an error showing its last lines."""
    from workbench.models.transformers_backend import resolve_model_path

    values = {"{export}": str(export), "{output}": str(out),
              "{policy}": resolve_model_path(base)}
    argv = []
    for arg in train.argv():
        for key, value in values.items():
            arg = arg.replace(key, value)
        argv.append(arg)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as sink:
        try:
            status = subprocess.run(argv, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT,
                                    check=False).returncode
        except OSError as exc:
            raise LoopError(f"train.command: cannot run {argv[0]!r}: {exc.strerror}") from None
    if status != 0:
        tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL:]
        shown = "\n".join(f"    {line}" for line in tail)
        raise LoopError(f"train.command exited with status {status} (full output in {log}):"
                        f"\n{shown}")
    return {"exit_status": status, "log": str(log)}


def _versions() -> dict[str, str]:
    found = {}
    for package in ("trl", "transformers", "torch", "peft"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found
