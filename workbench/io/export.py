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
    cleared_on_swap,
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
from workbench.schema import MESSAGES
from workbench.workspace import Workspace

FORMATS = ("hf", "parquet", "jsonl")
TRL_LAYOUTS = ("standard", "conversational", "kto", "rdpo", "longpo", "grpo", "step-dpo")
RECORD_LAYOUTS = ("longpo", "grpo", "step-dpo")  # a method's own records: no method columns
TASKS = {"preference": "preference", "sft": "prompt-completion", "instruction": "prompt-only"}
LABEL_POLICIES = ("majority", "latest", "annotator:NAME")


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


def _side(choice: pl.Expr, a_is_chosen: pl.Expr) -> pl.Expr:
    """A label as a decision about the dataset's pair: chosen, rejected, tie or both_bad."""
    return (pl.when(choice.is_in(["a", "b"]))
            .then(pl.when((choice == "a") == a_is_chosen).then(pl.lit("chosen"))
                  .otherwise(pl.lit("rejected")))
            .otherwise(choice))


LEAD_PREFIX = "lead:"  # an adjudicator's resolution is a label by annotator "lead:NAME"


def label_decisions(labels: pl.DataFrame, policy: str = "majority") -> pl.DataFrame:
    """One row per labelled row_id with its `decision` (chosen, rejected, tie, both_bad), null
    when annotators reach no strict majority.

    `labels` holds the latest label per (row, annotator), as `Workspace.latest_labels` gives.
    majority: each annotator's latest label is one vote; a decision needs more than half the
    votes. latest: the latest label across annotators wins. annotator:NAME: only NAME's labels.
    Under majority and latest, a lead's resolution (annotator `lead:NAME`, made in the app's
    adjudication view) settles its row: the latest resolution decides, whatever the votes.
    """
    votes = labels.select("row_id", "annotator", "created_at", "label_id",
                          _side(pl.col("choice"), pl.col("a_is_chosen")).alias("decision"))
    if policy.startswith("annotator:"):
        from workbench.labeling.annotators import normalise

        name = normalise(policy.removeprefix("annotator:"))
        known = sorted(votes["annotator"].unique().to_list())
        if name not in known:
            raise WorkbenchError(f"--label-policy {policy}: no labels by {name!r} "
                                 f"(annotators: {', '.join(known) or 'none'})")
        return votes.filter(pl.col("annotator") == name).select("row_id", "decision")
    if policy not in ("majority", "latest"):
        raise WorkbenchError(f"unknown label policy {policy!r} "
                             f"(policies: {', '.join(LABEL_POLICIES)})")
    lead = pl.col("annotator").str.starts_with(LEAD_PREFIX)
    resolved = (votes.filter(lead).sort("created_at", "label_id").group_by("row_id").last()
                .select("row_id", "decision"))
    votes = votes.filter(~lead).join(resolved.select("row_id"), on="row_id", how="anti")
    if policy == "latest":
        decided = votes.sort("created_at", "label_id").group_by("row_id").last().select(
            "row_id", "decision")
    else:
        counts = votes.group_by("row_id", "decision").len()
        winners = counts.filter(pl.col("len") * 2 > pl.col("len").sum().over("row_id"))
        decided = votes.select("row_id").unique().join(
            winners.select("row_id", "decision"), on="row_id", how="left")
    return pl.concat([decided, resolved])


def apply_labels(frame: pl.DataFrame, labels: pl.DataFrame, policy: str = "majority",
                 keep_undecided: bool = False) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Human labels decide each labelled pair: a preference for the rejected side swaps it
    (with its chosen_*/rejected_* columns); tie, both_bad or no majority excludes the row.
    Unlabelled rows stay as they are. A swap clears the pair's side-bound method columns (a
    rationale for the other side, CHES) and flips its margin.

    keep_undecided keeps the tie and both_bad rows instead, flagged in boolean `tie` and
    `both_bad` columns (the export then leaves ties out unless --keep-ties)."""
    decisions = label_decisions(labels, policy).with_columns(pl.lit(True).alias("_labelled"))
    joined = frame.join(decisions.rename({"row_id": "id"}), on="id", how="left")
    labelled = pl.col("_labelled").fill_null(False)
    excluded_tie = pl.col("decision").is_in(["tie", "both_bad"]).fill_null(False)
    no_majority = labelled & pl.col("decision").is_null()
    swap = (pl.col("decision") == "rejected").fill_null(False)
    keep = ~no_majority if keep_undecided else ~excluded_tie & ~no_majority
    out = joined.filter(keep).with_columns(*_swapped(frame.columns, swap),
                                           *cleared_on_swap(frame.columns, swap))
    if "tie" in frame.columns:  # a person who picked a side has resolved a source tie
        out = out.with_columns((pl.col("tie") & ~pl.col("decision").is_in(["chosen", "rejected"])
                                .fill_null(False)).alias("tie"))
    if keep_undecided:
        for flag in ("tie", "both_bad"):
            mark = (pl.col("decision") == flag).fill_null(False)
            if flag in out.columns:
                mark = pl.col(flag).fill_null(False) | mark
            out = out.with_columns(mark.alias(flag))
    counted = joined.select(labelled.sum().alias("labelled"), swap.sum().alias("swapped"),
                            excluded_tie.sum().alias("excluded_tie_or_both_bad"),
                            no_majority.sum().alias("excluded_no_majority")).row(0, named=True)
    if keep_undecided:
        counted["kept_tie_or_both_bad"] = counted.pop("excluded_tie_or_both_bad")
    if policy != "majority":
        counted.pop("excluded_no_majority")
    return out.drop("decision", "_labelled"), {"policy": policy, **counted}


def _swapped(columns: list[str], swap: pl.Expr) -> list[pl.Expr]:
    """chosen <-> rejected, and every chosen_X <-> rejected_X pair (scores, models, flags)."""
    pairs = [(c, "rejected" + c.removeprefix("chosen")) for c in columns
             if c.startswith("chosen") and "rejected" + c.removeprefix("chosen") in columns]
    return [expr for a, b in pairs for expr in (
        pl.when(swap).then(pl.col(b)).otherwise(pl.col(a)).alias(a),
        pl.when(swap).then(pl.col(a)).otherwise(pl.col(b)).alias(b))]


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
