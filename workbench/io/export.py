"""Export datasets in the layouts TRL's trainers load as they are, with a lineage card."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import polars as pl

from workbench.errors import WorkbenchError
from workbench.io.card import dataset_card
from workbench.schema import MESSAGES
from workbench.workspace import Workspace

FORMATS = ("hf", "parquet", "jsonl")
TRL_LAYOUTS = ("standard", "conversational")
TASKS = {"preference": "preference", "sft": "prompt-completion", "instruction": "prompt-only"}


def assistant(column: str) -> pl.Expr:
    return pl.concat_list(
        pl.struct(pl.lit("assistant").alias("role"), pl.col(column).alias("content"))
    ).alias(column)


def to_trl(frame: pl.DataFrame, kind: str, layout: str) -> pl.DataFrame:
    """Exactly the columns TRL expects: prompt/chosen/rejected, prompt/completion, or prompt."""
    if kind == "candidates":
        raise WorkbenchError("candidates datasets have no TRL layout: pair them first "
                             "(e.g. a best/worst pairing step) or export as preference")
    replies = {"preference": ["chosen", "rejected"], "sft": ["response"], "instruction": []}[kind]
    if layout == "conversational":
        out = frame.select(pl.col("prompt").cast(MESSAGES), *[assistant(c) for c in replies])
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
                           *[pl.col(c) for c in replies])
    return out.rename({"response": "completion"}) if kind == "sft" else out


def apply_labels(frame: pl.DataFrame, labels: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, int]]:
    """Latest label per row wins: the preferred side becomes `chosen`; tie/both_bad rows go."""
    if labels.height == 0:
        return frame, {"labelled": 0}
    latest = (labels.sort(["created_at", "label_id"])
              .group_by("row_id").last()
              .select(pl.col("row_id").alias("id"), "choice", "a_is_chosen"))
    joined = frame.join(latest, on="id", how="left")
    prefers_chosen = (pl.col("choice") == "a") == pl.col("a_is_chosen")
    swap = pl.col("choice").is_in(["a", "b"]) & ~prefers_chosen
    out = joined.filter(~pl.col("choice").is_in(["tie", "both_bad"]).fill_null(False)).with_columns(
        pl.when(swap).then(pl.col("rejected")).otherwise(pl.col("chosen")).alias("chosen"),
        pl.when(swap).then(pl.col("chosen")).otherwise(pl.col("rejected")).alias("rejected"),
    )
    stats = {
        "labelled": int(joined["choice"].is_not_null().sum()),
        "swapped": int(joined.select(swap.fill_null(False).sum()).item()),
        "dropped_tie_or_both_bad": joined.height - out.height,
    }
    return out.drop("choice", "a_is_chosen"), stats


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
) -> dict[str, Any]:
    """Write `ref` to `out` atomically; returns what was written (paths, split sizes)."""
    if fmt not in FORMATS:
        raise WorkbenchError(f"unknown format {fmt!r} (formats: {', '.join(FORMATS)})")
    if trl not in TRL_LAYOUTS:
        raise WorkbenchError(f"unknown TRL layout {trl!r} (layouts: {', '.join(TRL_LAYOUTS)})")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise WorkbenchError(f"{out} exists and is not empty (use --overwrite to replace it)")
    version = workspace.resolve(ref)
    frame = workspace.read(version.ref)
    label_stats = None
    if labels:
        if version.kind != "preference":
            raise WorkbenchError(f"--labels applies to preference datasets, {version.name} is {version.kind}")
        frame, label_stats = apply_labels(frame, workspace.latest_labels(version.name))
    splits = {name: to_trl(part, version.kind, trl)
              for name, part in split_frame(frame, split_test, seed).items()}
    if sum(p.height for p in splits.values()) == 0:
        raise WorkbenchError(f"{version.ref} has no rows to export")
    card = dataset_card(workspace, version, splits, trl, fmt, label_stats)

    tmp = out.parent / f".tmp-{out.name}-{uuid.uuid4().hex[:8]}"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        if fmt == "hf":
            _dataset_dict(splits).save_to_disk(str(tmp))
        else:
            tmp.mkdir()
            for name, part in splits.items():
                if fmt == "parquet":
                    part.write_parquet(tmp / f"{name}.parquet")
                else:
                    part.write_ndjson(tmp / f"{name}.jsonl")
        (tmp / "README.md").write_text(card, encoding="utf-8")
        (tmp / "workbench_export.json").write_text(json.dumps(
            {"dataset": version.ref, "kind": version.kind, "trl": trl, "format": fmt,
             "splits": {k: v.height for k, v in splits.items()}}, indent=2))
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if push_to_hub:
        _dataset_dict(splits).push_to_hub(push_to_hub)
    return {"out": str(out), "format": fmt, "trl": trl, "task": TASKS[version.kind],
            "splits": {k: v.height for k, v in splits.items()}}


def _dataset_dict(splits: dict[str, pl.DataFrame]) -> Any:
    import datasets

    return datasets.DatasetDict(
        {name: datasets.Dataset(part.to_arrow()) for name, part in splits.items()}
    )


def _replace(tmp: Path, out: Path) -> None:
    """Move the finished export into place; an old one is removed only after that."""
    old = None
    if out.exists():
        old = out.parent / f".old-{out.name}-{uuid.uuid4().hex[:8]}"
        os.rename(out, old)
    os.rename(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
