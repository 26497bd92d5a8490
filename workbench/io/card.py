"""The README.md dataset card of an export: what is in it and where every row came from."""

from __future__ import annotations

import json
from typing import Any

import polars as pl

from workbench.io.export_columns import card_lines
from workbench.io.layouts_verified import STEP_DPO_CARD, grpo_card_lines
from workbench.workspace import DatasetVersion, Workspace


def dataset_card(
    workspace: Workspace,
    version: DatasetVersion,
    splits: dict[str, pl.DataFrame],
    trl: str,
    fmt: str,
    label_stats: dict[str, Any] | None,
    ties_excluded: int = 0,
    left_out: dict[str, int] | None = None,
    reasoning: tuple[str, int] = ("keep", 0),
    pass_rates: pl.DataFrame | None = None,
) -> str:
    """The card's YAML `configs` name the files actually written, so `load_dataset(DIR)` finds
    them (for hf exports: the Arrow shards save_to_disk writes under each split's folder).
    `pass_rates` (workbench.algorithms.stats.pass_rates of the exported rows) adds the pass@k histogram."""
    columns = next(iter(splits.values())).columns
    sizes = "\n".join(f"- `{name}`: {part.height} rows" for name, part in splits.items())
    lines = [
        "---",
        "tags: [preference-workbench, trl]",
        "configs:",
        "- config_name: default",
        "  data_files:",
        *[f"  - split: {name}\n    path: {data_files(fmt, name)}" for name in splits],
        "---",
        f"# {version.name} (version {version.version})",
        "",
        f"Exported by preference-workbench as {fmt}, in TRL's {trl} layout "
        f"({version.kind} rows); columns: {', '.join(f'`{c}`' for c in columns)}.",
        "",
        "## Splits",
        sizes,
        "",
        *(grpo_card_lines(columns) if trl == "grpo" else
          STEP_DPO_CARD if trl == "step-dpo" else card_lines(columns)),
    ]
    if left_out:
        lines += [f"## Left out by the {trl} layout", "",
                  *[f"- {reason}: {n}" for reason, n in left_out.items()], ""]
    lines += _reasoning_lines(*reasoning, columns)
    if label_stats is not None:
        lines += ["## Human labels applied", "",
                  *[f"- {k.replace('_', ' ')}: {v}" for k, v in label_stats.items()], ""]
    if ties_excluded:
        lines += ["## Ties", "", f"- {ties_excluded} tied pairs excluded (export with "
                  "--keep-ties to keep them)", ""]
    if pass_rates is not None and pass_rates.height:
        lines += pass_rate_lines(pass_rates)
    bias = _length_bias(version.lineage)
    if bias is not None:
        lines += _length_bias_lines(bias)
    lines += ["## Lineage", ""]
    lines += _lineage(version.ref, version.lineage, depth=0)
    models = _models(version.lineage)
    lines += ["", "## Models used", ""]
    lines += [f"- `{name}`: {json.dumps(spec)}" for name, spec in models.items()] or ["- none"]
    return "\n".join(lines) + "\n"


def pass_rate_lines(bins: pl.DataFrame) -> list[str]:
    """The card's pass-rate section: prompts per pass rate, as a table and a bar of #s."""
    total = int(bins["prompts"].sum())
    most = max(1, int(bins["prompts"].max()))
    lines = ["## Pass rate (verify)", "",
             f"Prompts by the share of their sampled responses that passed the checker "
             f"({total} prompts with a pass rate).", "", "| pass rate | prompts | |",
             "|---|---|---|"]
    for low, high, prompts in bins.iter_rows():
        label = f"{low:.2f}" if low == high else f"{low:.2f}–{high:.2f}"
        lines.append(f"| {label} | {prompts} | {'#' * max(1, round(20 * prompts / most))} |")
    return [*lines, ""]


def data_files(fmt: str, split: str) -> str:
    """Where a split's rows are in an export folder of this format."""
    return {"hf": f"{split}/data-*.arrow", "parquet": f"{split}.parquet",
            "jsonl": f"{split}.jsonl"}[fmt]


def _lineage(ref: str, lineage: dict[str, Any], depth: int) -> list[str]:
    indent = "  " * depth
    if "import" in lineage:
        src = lineage["import"]
        return [f"{indent}- `{ref}`: imported from `{src.get('source')}` "
                f"({src.get('format')}, layout {src.get('layout')}, {src.get('rows')} rows, "
                f"sha256 `{(src.get('sha256') or 'n/a')[:16]}`)"]
    if "pipeline" in lineage:
        pipe = lineage["pipeline"]
        out = [f"{indent}- `{ref}`: pipeline `{pipe['name']}` (seed {pipe.get('seed')}, "
               f"run {lineage.get('run_id')}), from:"]
        source = lineage.get("input", {})
        if "dataset" in source:
            out += _lineage(source["dataset"], source.get("lineage", {}), depth + 1)
        elif "import" in source:
            out += _lineage(source.get("file", "file"), {"import": source["import"]}, depth + 1)
        else:
            out.append(f"{indent}  - no input: the pipeline created the rows")
        out += ["", f"{indent}  | step | transform | rows in | rows out | dropped |",
                f"{indent}  |---|---|---|---|---|"]
        for step in lineage.get("steps", []):
            dropped = "; ".join(f"{k}: {v}" for k, v in step["dropped"].items()) or "-"
            out.append(f"{indent}  | {step['index']} | {step['step']} | {step['rows_in']} | "
                       f"{step['rows_out']} | {dropped} |")
        out += ["", f"{indent}  Pipeline YAML:", "", f"{indent}  ```yaml",
                *[f"{indent}  {line}" for line in pipe.get("yaml", "").rstrip().splitlines()],
                f"{indent}  ```", ""]
        return out
    return [f"{indent}- `{ref}`: no lineage recorded"]


def _reasoning_lines(mode: str, rows: int, columns: list[str]) -> list[str]:
    """Which `--reasoning` the export used, when the rows have traces."""
    held = [c for c in ("reasoning", "chosen_reasoning", "rejected_reasoning") if c in columns]
    if not rows and not held:
        return []
    text = {
        "keep": "kept apart: the replies hold the answers, the traces are in "
                f"{', '.join(f'`{c}`' for c in held)} (TRL's trainers ignore these columns; "
                "`--reasoning inline` trains on the traces)",
        "strip": "stripped: the replies hold the answers only",
        "inline": "inline: each reply with a trace is `<think>\\nTRACE\\n</think>\\n\\n` "
                  "followed by its answer",
    }[mode]
    return ["## Reasoning traces", "",
            f"{rows} rows have a reasoning trace; exported with `--reasoning {mode}`, {text}.",
            ""]


def _length_bias_lines(bias: dict[str, Any]) -> list[str]:
    """The card's length-bias section: the fit, and reasoning traces apart where there are."""
    both = bias.get("measured") == "answer and reasoning"
    lines = ["## Length bias", "",
             f"Length-controlled GLM over {bias['n']} pairs ({bias.get('unit', 'chars')}"
             f"{' of answer plus reasoning' if both else ''}): "
             f"coefficient {bias['coef']:.3f} (95% bootstrap interval {bias['ci_low']:.3f} "
             f"to {bias['ci_high']:.3f}); P(preferred) at +1 SD of length "
             f"{bias['p_at_plus_1sd']:.3f}; chosen is longer in "
             f"{100 * bias['share_chosen_longer']:.1f}% of pairs.", ""]
    trace = bias.get("reasoning_length")
    if trace:
        lines += [f"Reasoning traces, apart ({trace['pairs_with_trace']} pairs have one): mean "
                  f"length {trace['chosen_mean']:.0f} chosen vs {trace['rejected_mean']:.0f} "
                  f"rejected; coefficient on trace length {trace['coef']:.3f} (95% interval "
                  f"{trace['ci_low']:.3f} to {trace['ci_high']:.3f}).", ""]
    return lines


def _length_bias(lineage: dict[str, Any]) -> dict[str, Any] | None:
    """The report of the last `length_bias` step in this version's lineage, if any. Only
    this pipeline's steps count: earlier datasets' rows may since have been filtered."""
    found = [s["report"] for s in lineage.get("steps", [])
             if s.get("step") == "length_bias" and s.get("report")]
    return found[-1] if found else None


def _models(lineage: dict[str, Any]) -> dict[str, Any]:
    found = dict(lineage.get("models", {}))
    inner = lineage.get("input", {}).get("lineage")
    if inner:
        found.update({k: v for k, v in _models(inner).items() if k not in found})
    return found
