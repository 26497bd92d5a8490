"""Layouts of checked data: `--trl grpo`, an RL prompt set as TRL's GRPOTrainer reads it with
what a reward function needs to check each completion, and `--trl step-dpo`, Step-DPO's own
records of `step_pairs` rows (docs/methods.md §16.3, §16.4).

GRPO columns: `prompt` (conversational messages; GRPOTrainer renders them with the chat template),
`checker` (the `verify` checker's name), the ground truth as `answer` (math, regex,
json_schema; `match` too for regex) or `tests` plus `entry_point` (code), each taken from
the column `verify` read, and `pass_rate` when the rows have one.
GRPOTrainer passes every column but `prompt` to reward functions as keyword lists, which is
how `workbench.algorithms.rewards.verified_reward` finds them. One row per distinct prompt and truth:
pairs made from one prompt would otherwise weight it several times.
"""

from __future__ import annotations

from typing import Any

import polars as pl
import yaml

from workbench.errors import WorkbenchError
from workbench.io.layouts_longpo import require_step_rows
from workbench.schema import MESSAGES

REWARD_COLUMNS = ("answer", "tests", "entry_point")  # and `match` for regex


def verify_settings(lineage: dict[str, Any]) -> dict[str, Any] | None:
    """The options of the last `verify` step that made these rows (this pipeline's, else an
    input dataset's), with the step's defaults filled in; None when no step verified them."""
    pipeline = lineage.get("pipeline") or {}
    steps = (yaml.safe_load(pipeline.get("yaml") or "") or {}).get("steps") or []
    found = [options or {} for entry in steps if isinstance(entry, dict)
             for name, options in entry.items() if name == "verify"]
    if found:
        return _with_defaults(found[-1])
    inner = (lineage.get("input") or {}).get("lineage")
    return verify_settings(inner) if inner else None


def _with_defaults(options: dict[str, Any]) -> dict[str, Any]:
    from workbench import registry

    try:
        config = registry.get("verify")(options).config
    except Exception:  # an older dataset's options: take them as written
        return {"answer": "answer", "tests": "tests", **options}
    return config.model_dump()


def to_grpo(frame: pl.DataFrame, lineage: dict[str, Any]) -> tuple[pl.DataFrame, int]:
    """The GRPO rows and how many duplicate prompts were left out. The checker and the truth
    columns come from a `checker` column if the rows have one, else from the `verify` step in
    the lineage; without either the export is refused, naming what is missing."""
    settings = verify_settings(lineage) or {}
    checker = pl.col("checker") if "checker" in frame.columns else (
        pl.lit(settings["checker"]) if settings.get("checker") else None)
    if checker is None:
        raise WorkbenchError("--trl grpo needs to know how to check completions: run `verify` "
                             "in the pipeline that made this dataset, or give the rows a "
                             "`checker` column (math, code, regex, json_schema)")
    sources = {name: settings.get(name) or name for name in REWARD_COLUMNS}
    truth = {name: pl.col(column).alias(name) for name, column in sources.items()
             if column in frame.columns}
    if settings.get("checker") == "regex" and "match" not in frame.columns:
        truth["match"] = pl.lit(settings.get("match") or "search").alias("match")
    elif "match" in frame.columns:
        truth["match"] = pl.col("match")
    if not ({"answer", "tests"} & set(truth)):
        wanted = " or ".join(f"`{sources[c]}`" for c in ("answer", "tests"))
        raise WorkbenchError(f"--trl grpo needs the ground truth the reward checks against: "
                             f"this dataset has no {wanted} column")
    extra = [pl.col("pass_rate")] if "pass_rate" in frame.columns else []
    if "split" in frame.columns:
        extra.append(pl.col("split"))
    rows = frame.select(pl.col("prompt").cast(MESSAGES), checker.cast(pl.String).alias("checker"),
                        *[truth[c] for c in (*REWARD_COLUMNS, "match") if c in truth], *extra)
    kept = rows.unique([c for c in ("prompt", "answer", "tests") if c in rows.columns],
                       keep="first", maintain_order=True)
    return kept, rows.height - kept.height


def grpo_card_lines(columns: list[str]) -> list[str]:
    """The card's section on what the reward function reads."""
    held = [c for c in ("checker", *REWARD_COLUMNS, "match", "pass_rate") if c in columns]
    return ["## Reward", "",
            f"Columns besides `prompt`: {', '.join(f'`{c}`' for c in held)}. GRPOTrainer passes "
            "them to reward functions; `workbench.algorithms.rewards.verified_reward` applies the named "
            "checker (1.0 when the completion passes, else 0.0), as `verify` did:", "",
            "```python", "from workbench.algorithms.rewards import verified_reward",
            "trainer = GRPOTrainer(model=..., reward_funcs=verified_reward, train_dataset=...)",
            "```", ""]


STEP_DPO_FIELDS = ("prompt", "initial_reason_steps", "chosen", "rejected", "answer",
                   "step_index", "full_chosen", "full_rejected")


STEP_DPO_CARD = [
    "## Step-DPO records", "",
    "One record per wrong step found by `step_pairs`: `initial_reason_steps` are the correct "
    "steps so far, `chosen` a next step whose continuation verified, `rejected` the step after "
    "which no continuation verified, `step_index` how many steps precede it. Step-DPO's "
    "train.py appends `initial_reason_steps` to the templated `prompt` and trains DPO on the "
    "two steps.", ""]


def to_step_dpo(frame: pl.DataFrame, kind: str) -> pl.DataFrame:
    """`--trl step-dpo`: Step-DPO's records. Its train.py reads `prompt` (the question as
    text), `initial_reason_steps` (the correct steps so far, appended to the templated
    prompt) and the next step as `chosen` / `rejected`; `answer`, `step_index` and the whole
    solutions `full_chosen` / `full_rejected` come along for inspection."""
    require_step_rows(frame, kind, "step-dpo", "step_pairs",
                      ("prefix", "chosen_step", "rejected_step", "step_index"))
    single = (pl.col("prompt").list.len() == 1) & (
        pl.col("prompt").list.first().struct.field("role") == "user")
    bad = frame.filter(~single).height
    if bad:
        raise WorkbenchError(f"--trl step-dpo: {bad} rows have multi-turn or system prompts; "
                             "Step-DPO's records hold one question as text")
    optional = {"answer": "answer", "full_chosen": "chosen_full", "full_rejected": "rejected_full"}
    return frame.select(
        pl.col("prompt").list.first().struct.field("content").alias("prompt"),
        pl.col("prefix").alias("initial_reason_steps"), pl.col("chosen_step").alias("chosen"),
        pl.col("rejected_step").alias("rejected"),
        *[pl.col(source).cast(pl.String).alias(name) for name, source in optional.items()
          if source in frame.columns and name == "answer"],
        pl.col("step_index"),
        *[pl.col(source).alias(name) for name, source in optional.items()
          if source in frame.columns and name != "answer"],
        *([pl.col("split")] if "split" in frame.columns else []))
