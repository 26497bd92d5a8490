"""Export datasets in the layouts TRL's trainers load as they are, with a lineage card."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from workbench.algorithms.reasoning import EXPORT_MODES as REASONING_MODES
from workbench.algorithms.reasoning import for_export, trace_column
from workbench.algorithms.stats import pass_rates
from workbench.errors import WorkbenchError
from workbench.io.card import data_files, dataset_card
from workbench.io.export_columns import (
    METHOD_COLUMNS,
    check_columns_mode,
    method_columns,
    rdpo_rationale,
)
from workbench.io.export_folder import (
    MARKER,
    check_split_names,
    export_target,
    files_in,
    inside,
    staged,
)
from workbench.io.layouts_longpo import to_longpo
from workbench.io.layouts_verified import to_grpo, to_step_dpo
from workbench.labeling.policy import apply_labels
from workbench.schema import MESSAGES
from workbench.workspace import Workspace

FORMATS = ("hf", "parquet", "jsonl")
TRL_LAYOUTS = ("standard", "conversational", "kto", "rdpo", "longpo", "grpo", "step-dpo")
RECORD_LAYOUTS = ("longpo", "grpo", "step-dpo")  # a method's own records: no method columns
TASKS = {"preference": "preference", "sft": "prompt-completion", "instruction": "prompt-only"}


def assistant(column: str) -> pl.Expr:
    return pl.concat_list(
        pl.struct(pl.lit("assistant").alias("role"), pl.col(column).alias("content"))
    ).alias(column)


def to_trl(frame: pl.DataFrame, kind: str, layout: str, columns: str = "method") -> pl.DataFrame:
    """The columns TRL expects: prompt/chosen/rejected, prompt/completion, prompt, or (kto)
    prompt/completion/label; preference rows also keep the method columns (export_columns)
    unless `columns` is "minimal". rdpo: conversational prompt/chosen/rejected plus
    `rationale` and `rationale_prompt`; longpo, grpo and step-dpo: the records `to_longpo`,
    `to_grpo` and `to_step_dpo` made, as they are. Trace columns the rows still hold
    (`reasoning.for_export` with keep) follow their replies (`reasoning` beside a completion,
    `chosen_reasoning`/`rejected_reasoning`)."""
    if layout == "kto":
        return to_kto(frame, kind)
    if layout in RECORD_LAYOUTS:
        return frame
    if kind == "candidates":
        raise WorkbenchError("candidates datasets have no TRL layout: pair them first "
                             "(e.g. a best/worst pairing step) or export as preference")
    if layout == "rdpo" and kind != "preference":
        raise WorkbenchError(f"--trl rdpo needs a preference dataset; this one is {kind}")
    replies = {"preference": ["chosen", "rejected"], "sft": ["response"], "instruction": []}[kind]
    traces = [pl.col(trace_column(c)) for c in replies if trace_column(c) in frame.columns]
    if layout == "rdpo":
        extra = [pl.col("rationale"), pl.col("rationale_prompt")]
    else:
        extra = method_columns(frame) if kind == "preference" and columns == "method" else []
    if layout in ("conversational", "rdpo"):
        out = frame.select(pl.col("prompt").cast(MESSAGES), *[assistant(c) for c in replies],
                           *traces, *extra)
    else:
        single = (pl.col("prompt").list.len() == 1) & (
            pl.col("prompt").list.first().struct.field("role") == "user")
        bad = frame.filter(~single).height
        if bad:
            raise WorkbenchError(
                f"{bad} rows have multi-turn or system prompts, which TRL's standard layout "
                "cannot hold; use --trl conversational"
            )
        out = frame.select(pl.col("prompt").list.first().struct.field("content").alias("prompt"),
                           *[pl.col(c) for c in replies], *traces, *extra)
    return out.rename({"response": "completion"}) if kind == "sft" else out


def to_kto(frame: pl.DataFrame, kind: str) -> pl.DataFrame:
    """TRL's unpaired preference layout, conversational: prompt, completion, label.

    sft rows need a boolean `label` (e.g. imported KTO data); a preference pair becomes two
    rows, its chosen reply labelled true and its rejected reply false.
    """
    prompt = pl.col("prompt").cast(MESSAGES)
    if kind == "sft" and frame.schema.get("label") == pl.Boolean:
        trace = [pl.col("reasoning")] if "reasoning" in frame.columns else []
        return frame.select(prompt, assistant("response").alias("completion"), *trace,
                            pl.col("label"))
    if kind == "preference":
        pairs = frame.with_row_index("_pair")
        traced = any(trace_column(side) in frame.columns for side in ("chosen", "rejected"))
        sides = [pairs.select("_pair", prompt, assistant(side).alias("completion"),
                              *([_trace_of(frame, side).alias("reasoning")] if traced else []),
                              pl.lit(side == "chosen").alias("label"))
                 for side in ("chosen", "rejected")]
        return pl.concat(sides).sort("_pair", "label", descending=[False, True]).drop("_pair")
    has = "sft without a boolean label column" if kind == "sft" else kind
    raise WorkbenchError(f"--trl kto needs a preference dataset or an sft dataset with a boolean "
                         f"`label` column (e.g. imported KTO data); this one is {has}")


def _trace_of(frame: pl.DataFrame, side: str) -> pl.Expr:
    column = trace_column(side)
    return pl.col(column) if column in frame.columns else pl.lit(None, pl.String)


def drop_ties(frame: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Pairs marked `tie` (e.g. Chatbot Arena ties, HelpSteer2 strength 0) teach no preference."""
    if frame.schema.get("tie") != pl.Boolean:
        return frame, 0
    kept = frame.filter(~pl.col("tie").fill_null(False))
    return kept, frame.height - kept.height


def split_frame(frame: pl.DataFrame, split_test: float | None, seed: int) -> dict[str, pl.DataFrame]:
    if split_test is not None:
        if not 0 < split_test < 1:
            raise WorkbenchError(f"--split-test must be between 0 and 1, got {split_test}")
        n_test = round(frame.height * split_test)
        rank = pl.int_range(pl.len()).shuffle(seed=seed)
        marked = frame.with_columns((rank < n_test).alias("_test"))
        return {"train": marked.filter(~pl.col("_test")).drop("_test"),
                "test": marked.filter(pl.col("_test")).drop("_test")}
    if "split" in frame.columns:
        check_split_names(frame)
        return {str(name): part.drop("split")
                for (name,), part in frame.partition_by("split", as_dict=True,
                                                        maintain_order=True).items()}
    return {"train": frame}


def export_dataset(
    workspace: Workspace,
    ref: str,
    out: str | Path,
    fmt: str = "hf",
    trl: str = "conversational",
    split_test: float | None = None,
    labels: bool = False,
    seed: int = 0,
    overwrite: bool = False,
    push_to_hub: str | None = None,
    keep_ties: bool = False,
    label_policy: str = "majority",
    columns: str = "method",
    reasoning: str = "keep",
) -> dict[str, Any]:
    """Write `ref` to `out` atomically; returns what was written (paths, split sizes, how many
    rows labels and ties removed, and what a named layout left out).

    Preference rows keep the allow-listed method columns (export_columns) unless `columns` is
    "minimal"; `trl` "rdpo" and "longpo" write those methods' training layouts, "grpo" an RL
    prompt set with the columns `workbench.algorithms.rewards.verified_reward` reads, "step-dpo" Step-DPO's
    records. Reasoning traces are kept in their own columns, stripped, or put back inline in
    the replies (`reasoning`: keep, strip, inline; workbench.algorithms.reasoning.for_export), whatever
    `columns` is.

    Only `out` is written: split names must be plain names, and an existing folder is replaced
    only with `overwrite` and only when it holds an earlier export (see export_folder)."""
    if fmt not in FORMATS:
        raise WorkbenchError(f"unknown format {fmt!r} (formats: {', '.join(FORMATS)})")
    if trl not in TRL_LAYOUTS:
        raise WorkbenchError(f"unknown TRL layout {trl!r} (layouts: {', '.join(TRL_LAYOUTS)})")
    check_columns_mode(columns)
    if reasoning not in REASONING_MODES:
        raise WorkbenchError(f"unknown --reasoning {reasoning!r} "
                             f"(choices: {', '.join(REASONING_MODES)})")
    if labels and trl == "longpo":
        raise WorkbenchError("--labels does not apply to --trl longpo: LongPO's chosen answer is "
                             "the one that saw the short context, by construction")
    if labels and trl == "grpo":
        raise WorkbenchError("--labels does not apply to --trl grpo: it exports prompts, and "
                             "the reward comes from the checker")
    out = Path(out)
    target = export_target(out, workspace.root, overwrite)
    version = workspace.resolve(ref)
    frame = workspace.read(version.ref)
    label_stats = None
    if labels:
        if version.kind != "preference":
            raise WorkbenchError(f"--labels applies to preference datasets, {version.name} is {version.kind}")
        frame, label_stats = apply_labels(frame, workspace.latest_labels(version.name), label_policy)
    ties = 0
    if not keep_ties:
        frame, ties = drop_ties(frame)
    frame, traced = for_export(frame, version.kind, reasoning)
    left_out: dict[str, int] = {}
    if trl == "rdpo":
        frame, left_out["pairs without a rationale"] = rdpo_rationale(frame)
    if trl == "longpo":  # one record per long context, before splitting
        frame = to_longpo(frame, version.kind)
    rates = pass_rates(frame.lazy())
    if trl == "grpo":  # one row per prompt, before splitting
        frame, left_out["duplicate prompts"] = to_grpo(frame, version.lineage)
    if trl == "step-dpo":
        frame = to_step_dpo(frame, version.kind)
    splits = {name: to_trl(part, version.kind, trl, columns)
              for name, part in split_frame(frame, split_test, seed).items()}
    if sum(p.height for p in splits.values()) == 0:
        raise WorkbenchError(f"{version.ref} has no rows to export")
    left_out = {k: v for k, v in left_out.items() if v}
    card = dataset_card(workspace, version, splits, trl, fmt, label_stats, ties, left_out,
                        reasoning=(reasoning, traced), pass_rates=rates)

    with staged(target) as tmp:
        _write(tmp, splits, fmt)
        inside(tmp, "README.md").write_text(card, encoding="utf-8")
        (tmp / MARKER).write_text(json.dumps(
            {"dataset": version.ref, "kind": version.kind, "trl": trl, "format": fmt,
             "columns": columns, "reasoning": reasoning, "reasoning_rows": traced,
             "left_out": left_out,
             "folder": target.name,  # where a crash-orphaned .old-export-* copy belongs
             "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
             "splits": {k: v.height for k, v in splits.items()}, "ties_excluded": ties,
             "labels": label_stats, "files": files_in(tmp)}, indent=2))
    if push_to_hub:
        _dataset_dict(splits).push_to_hub(push_to_hub)
    task = {"kto": "unpaired-preference", "rdpo": "rationale-preference",
            "longpo": "longpo-records", "grpo": "rl-prompts",
            "step-dpo": "step-preference"}.get(trl, TASKS.get(version.kind, version.kind))
    return {"out": str(out), "format": fmt, "trl": trl, "task": task, "columns": columns,
            "reasoning": reasoning, "reasoning_rows": traced,
            "splits": {k: v.height for k, v in splits.items()}, "ties_excluded": ties,
            "labels": label_stats, "left_out": left_out,
            "method_columns": [] if trl in RECORD_LAYOUTS else
            [c for c in next(iter(splits.values())).columns if c in METHOD_COLUMNS]}


def _write(folder: Path, splits: dict[str, pl.DataFrame], fmt: str) -> None:
    """Each split's rows in `folder`, every path checked to lie inside it first (the card's
    `data_files` patterns too)."""
    for name in splits:
        inside(folder, name if fmt == "hf" else f"{name}.{fmt}")
        inside(folder, data_files(fmt, name))
    if fmt == "hf":
        _dataset_dict(splits).save_to_disk(str(folder))
        return
    for name, part in splits.items():
        if fmt == "parquet":
            part.write_parquet(inside(folder, f"{name}.parquet"))
        else:
            part.write_ndjson(inside(folder, f"{name}.jsonl"))


def _dataset_dict(splits: dict[str, pl.DataFrame]) -> Any:
    import datasets

    return datasets.DatasetDict(
        {name: datasets.Dataset(part.to_arrow()) for name, part in splits.items()}
    )
