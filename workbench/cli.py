"""`workbench`: a thin command line over the library. Heavy imports happen inside commands."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="Build, filter, inspect, label and export SFT and preference datasets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
_state: dict[str, Any] = {"workspace": None}

WorkspaceOpt = Annotated[
    Path | None,
    typer.Option("--workspace", "-w", help="workspace folder (default: $WORKBENCH_HOME or ./workspace)"),
]


@app.callback()
def _main(workspace: WorkspaceOpt = None) -> None:
    _state["workspace"] = workspace


def _ws(override: Path | None = None, create: bool = False) -> Any:
    """The workspace of -w / $WORKBENCH_HOME: read commands open an existing one (and change
    nothing in it); write commands pass create=True to make it when it is missing."""
    from workbench.workspace import Workspace

    return Workspace(override or _state["workspace"], create=create)


def _write_ws(override: Path | None = None) -> Any:
    """The workspace of a write command (made when missing), after the cheap crash-leftover
    sweep (`workbench gc` without its full walks); what it freed goes to stderr."""
    from workbench.store.gc import collect

    ws = _ws(override, create=True)
    try:
        report = collect(ws, full=False)
    except OSError as exc:  # e.g. a read-only workspace: the command itself says so
        typer.echo(f"gc: skipped the clean-up of crash leftovers ({exc})", err=True)
        return ws
    if report.bytes_freed or report.restored or report.interrupted_runs:
        typer.echo(f"gc: {report.summary()}", err=True)
    return ws


def _echo_json(value: Any) -> None:
    from workbench.formats.jsontext import dumps

    typer.echo(dumps(value))  # valid JSON: NaN and Infinity are written as null


@app.command()
def run(
    pipeline: Annotated[Path, typer.Argument(help="pipeline YAML file")],
    workspace: WorkspaceOpt = None,
    limit: Annotated[int | None, typer.Option(help="use only the first N input rows")] = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="retry quarantined model calls")] = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="ignore step checkpoints and recompute every step (model calls still come from the call cache)")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="no progress (bars on a terminal, else a line every few seconds)")] = False,
    executor: Annotated[str, typer.Option(help="where row-local steps run: local, or ray (a Ray cluster; needs the [ray] extra)")] = "local",
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster to join (default: start a local one); checkpoints must be on storage its nodes share")] = None,
    allow_empty: Annotated[bool, typer.Option("--allow-empty", help="publish the output even when no row is left (by default an empty result fails the run)")] = False,
) -> None:
    """Run a pipeline, or resume it from its last finished step."""
    from workbench.executors import EXECUTORS, get_executor
    from workbench.pipeline import load_pipeline
    from workbench.runner import run_pipeline

    if executor not in EXECUTORS:
        raise typer.BadParameter(f"unknown executor {executor!r} (executors: "
                                 f"{', '.join(EXECUTORS)})", param_hint="--executor")
    if ray_address and executor != "ray":
        raise typer.BadParameter("--ray-address needs --executor ray", param_hint="--ray-address")
    spec = load_pipeline(pipeline)
    ws = _write_ws(workspace)
    chosen = get_executor(executor, address=ray_address) if executor == "ray" else executor
    progress = "off" if no_progress else "bar" if sys.stderr.isatty() else "plain"
    result = run_pipeline(spec, ws, limit=limit, progress=progress,
                          retry_failed=retry_failed, fresh=fresh, executor=chosen,
                          allow_empty=allow_empty)
    for step in result.steps:
        dropped = ", ".join(f"{k}: {v}" for k, v in step.dropped.items()) or "none dropped"
        typer.echo(f"  step {step.index} {step.step:<16} {step.status:<8} {step.rows_in:>7} → "
                   f"{step.rows_out:<7} ({dropped}) {step.seconds:.2f}s")
        for line in _error_lines(step.detail.get("errors")) + _nulled_lines(step.detail):
            typer.echo(f"      {line}")
    if result.output is None:
        typer.echo(f"run {result.run_id} finished; no `output:` in the pipeline, last checkpoint: "
                   f"{result.final_checkpoint}")
        return
    out = result.output
    state = "up to date" if result.up_to_date else "written"
    typer.echo(f"run {result.run_id} finished: dataset {out.name} version {out.version} {state} "
               f"({out.rows} {out.kind} rows) in {ws.root}")
    typer.echo(f"  look:   workbench -w {ws.root} show {out.name} --limit 5")
    typer.echo(f"  browse: workbench -w {ws.root} ui")
    typer.echo(f"  export: workbench -w {ws.root} export {out.name} --format hf --out exports/{out.name}")


@app.command()
def loop(
    loop_file: Annotated[Path, typer.Argument(help="loop YAML file (see data/loops/)")],
    workspace: WorkspaceOpt = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="no progress of the round pipelines")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the loop's state as JSON at the end")] = False,
) -> None:
    """Run rounds of on-policy data (generate with the policy, pair, train), or resume them."""
    from workbench.loops.loop import run_loop
    from workbench.loops.loop_config import load_loop

    spec = load_loop(loop_file)
    ws = _write_ws(workspace)
    progress = "off" if no_progress else "bar" if sys.stderr.isatty() else "plain"
    result = run_loop(spec, ws, progress=progress,
                      echo=lambda line: typer.echo(line, err=as_json))
    if as_json:
        _echo_json(result.state)
        return
    typer.echo(f"loop {result.name}: {len(result.rounds)} rounds in {ws.root}")
    for entry in result.rounds:
        seconds = entry["seconds"]
        typer.echo(f"  round {entry['round']}: {entry['dataset']:<24} policy {entry['trained']['model']}"
                   f"  ({', '.join(f'{k} {v:.1f}s' for k, v in seconds.items())})")
    typer.echo(f"  look:   workbench -w {ws.root} ui   (Datasets: the rounds side by side)")


@app.command("import")
def import_(
    path: Annotated[str, typer.Argument(help="JSONL/JSON/Parquet/CSV file, HF save_to_disk folder or hub id")],
    name: Annotated[str, typer.Option("--name", "-n", help="dataset name in the workspace")],
    map_: Annotated[list[str] | None, typer.Option("--map", help="canonical=column, e.g. prompt=question")] = None,
    layout: Annotated[str | None, typer.Option(help="force a layout instead of detecting it, e.g. alpaca, sharegpt-preference, kto, chatbot-arena, pku-saferlhf-safer (README lists all)")] = None,
    columns: Annotated[str | None, typer.Option(help="column names of a headerless CSV, comma-separated")] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Import a file or HF dataset as a new dataset version."""
    from workbench.errors import InputError
    from workbench.io.importer import import_path

    mapping = {}
    for item in map_ or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise InputError(f"--map {item!r}: use canonical=column, e.g. --map prompt=question")
        mapping[key] = value
    csv_columns = [c.strip() for c in columns.split(",")] if columns else None
    version = import_path(_write_ws(workspace), path, name, mapping, layout, csv_columns)
    layout_name = version.lineage.get("import", {}).get("layout")
    typer.echo(f"imported {version.rows} {version.kind} rows as {version.name} version "
               f"{version.version} (layout: {layout_name})")


@app.command()
def init(
    path: Annotated[Path | None, typer.Argument(
        help="folder to make a workspace of (default: -w, $WORKBENCH_HOME or ./workspace)")] = None,
) -> None:
    """Create an empty workspace (import and run also create one; reading never does)."""
    from workbench.workspace import default_root, is_workspace

    root = path or _state["workspace"] or default_root()
    existed = is_workspace(root)
    ws = _ws(root, create=True)
    typer.echo(f"{'workspace already at' if existed else 'created workspace'} {ws.root}")


@app.command()
def gc(
    as_json: Annotated[bool, typer.Option("--json", help="print what was freed as JSON")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Remove what killed imports, runs and exports left behind (staging folders, unfinished
    versions and checkpoints, orphan version folders, export copies) and mark runs whose
    process is gone as interrupted. What a live process owns, and what a killed run needs to
    resume, is kept."""
    from workbench.store.gc import collect

    report = collect(_ws(workspace))  # a path that is not a workspace is an error, not made
    if as_json:
        _echo_json(report.as_json())
    else:
        typer.echo(report.summary())


@app.command()
def datasets(
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON array")] = False,
    all_versions: Annotated[bool, typer.Option("--all", help="every version, not just the latest")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """List datasets with their latest version, kind and row count."""
    items = [d.as_json() for d in _ws(workspace).list_datasets(all_versions)]
    if as_json:
        _echo_json(items)
        return
    if not items:
        typer.echo("no datasets yet: `workbench import FILE --name NAME` or `workbench run PIPELINE`")
    for d in items:
        typer.echo(f"{d['name']:<32} v{d['version']:<4} {d['kind']:<12} {d['rows']:>9} rows  {d['created_at']}")


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="NAME or NAME@VERSION")],
    limit: Annotated[int, typer.Option(help="rows to print")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON Lines")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Print rows of a dataset."""
    import polars as pl

    frame = _ws(workspace).scan(name).head(limit).collect()
    if as_json:
        for row in frame.iter_rows(named=True):
            _echo_json(row)
        return
    with pl.Config(fmt_str_lengths=80, tbl_rows=limit, tbl_cols=12):
        typer.echo(str(frame))


@app.command()
def sql(
    query: Annotated[str, typer.Argument(
        help="one read-only SELECT; each dataset is a view by name (latest) and name@N")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON Lines")] = False,
    timeout: Annotated[float, typer.Option(help="stop the query after this many seconds")] = 60.0,
    memory_limit: Annotated[str | None, typer.Option(help="the most memory the query may use, e.g. 512MB or 4GB (default: a quarter of RAM, at most 4 GB)")] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Run one read-only SELECT over the workspace's datasets (no files, extensions or writes),
    within a time and a memory limit; Ctrl-C stops it."""
    from workbench.query.query import json_lines, run_query
    from workbench.query.query_limits import Limits, QueryCancelled, parse_memory

    if not timeout > 0:
        raise typer.BadParameter("--timeout must be more than 0 seconds")
    limits = Limits(timeout=timeout, memory=parse_memory(memory_limit) if memory_limit else 0)
    try:
        frame = run_query(_ws(workspace), query, limits=limits)
    except QueryCancelled as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(130)
    if as_json:
        for line in json_lines(frame):
            typer.echo(line)
    else:
        typer.echo(str(frame))


@app.command()
def transforms(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """List every registered transform with its kinds and config fields."""
    from workbench.registry import describe

    items = describe()
    if as_json:
        _echo_json(items)
        return
    for t in items:
        typer.echo(f"{t['name']}  ({t['consumes']} → {t['produces']}, {t['scope']})  {t['summary']}")
        for f in t["fields"]:
            default = "required" if f["required"] else f"default {f['default']!r}"
            typer.echo(f"    {f['name']}: {f['type']} ({default}) {f['description']}")


@app.command()
def runs(
    run_id: Annotated[str | None, typer.Argument(help="a run id to show its step log")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """List recent runs, or the step log of one run."""
    ws = _ws(workspace)
    if not run_id:
        items = ws.runs()
        if as_json:
            _echo_json(items)
            return
        for item in items:
            error = f"  error: {item['error']}" if item.get("error") else ""
            output = f"{item['output']}@{item['output_version']}" if item.get("output") else "-"
            typer.echo(f"{item['run_id']}  {item['pipeline']:<20} {item['status']:<11} "
                       f"{item['started_at']:%Y-%m-%d %H:%M:%S}  → {output}{error}")
        return
    run = ws.run(run_id)
    steps = ws.step_logs(run_id)
    if as_json:
        _echo_json({**run, "steps": steps})
        return
    typer.echo(f"run {run_id}: pipeline {run['pipeline']}, {run['status']}, started "
               f"{run['started_at']:%Y-%m-%d %H:%M:%S}")
    if run.get("error"):
        typer.echo(f"  error: {run['error']}")
    for item in steps:
        dropped = ", ".join(f"{k}: {v}" for k, v in (item["dropped"] or {}).items()) or "none dropped"
        rows = (f"{item['rows_in']} → {item['rows_out']} ({dropped})"
                if item.get("rows_in") is not None else "")
        seconds = f" {item['seconds']:.2f}s" if item.get("seconds") is not None else ""
        typer.echo(f"  step {item['step_index']} {item['step']:<16} {item['status']:<8} {rows}{seconds}")
        calls = item["detail"].get("model_calls")
        if calls:
            typer.echo("      model calls: " + ", ".join(f"{k} {v}" for k, v in calls.items()))
        for line in _error_lines(item["detail"].get("errors")) + _nulled_lines(item["detail"]):
            typer.echo(f"      {line}")


def _nulled_lines(detail: dict[str, Any]) -> list[str]:
    """Fields a step nulled, or samples it removed, and scores that fell back to a default,
    counted by reason."""
    return ([f"{reason}: {count}" for reason, count in (detail.get("nulled") or {}).items()]
            + [f"fell back: {reason}: {count}"
               for reason, count in (detail.get("fallbacks") or {}).items()])


def _error_lines(errors: dict[str, Any] | None) -> list[str]:
    """The first error of each kind, with how often that kind occurred."""
    return [f"{kind} ×{entry['count']}, first: {entry['first']}"
            for kind, entry in (errors or {}).items()]


@app.command()
def export(
    name: Annotated[str, typer.Argument(help="NAME or NAME@VERSION")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder")],
    format_: Annotated[str, typer.Option("--format", "-f", help="hf, parquet or jsonl")] = "hf",
    trl: Annotated[str, typer.Option(help="standard, conversational, kto (unpaired: prompt, completion, label), rdpo (+ rationale, rationale_prompt), longpo (one LongPO record per long context), grpo (prompts + checker and truth columns for workbench.algorithms.rewards.verified_reward) or step-dpo (Step-DPO's records of step_pairs rows)")] = "conversational",
    columns: Annotated[str, typer.Option("--columns", help="method (default: preference rows keep the method columns: scores, margin, pair_rank/curriculum_iteration, rationale, CHES) or minimal (prompt/chosen/rejected only)")] = "method",
    reasoning: Annotated[str, typer.Option("--reasoning", help="reasoning traces: keep (default: the replies hold the answers, traces in reasoning / chosen_reasoning / rejected_reasoning), strip (answers only) or inline (<think>TRACE</think> before each answer, to train on the thinking)")] = "keep",
    split_test: Annotated[float | None, typer.Option("--split-test", help="share of rows for a test split")] = None,
    labels: Annotated[bool, typer.Option("--labels", help="apply human labels")] = False,
    label_policy: Annotated[str | None, typer.Option("--label-policy", help="with --labels: majority (default; each annotator's latest label votes), latest, or annotator:NAME")] = None,
    keep_ties: Annotated[bool, typer.Option("--keep-ties", help="keep pairs marked tie (excluded by default)")] = False,
    seed: Annotated[int, typer.Option(help="seed of --split-test")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an earlier export of this tool in --out (a folder holding its workbench_export.json and nothing else)")] = False,
    push_to_hub: Annotated[str | None, typer.Option("--push-to-hub", help="also push to this hub repo")] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Export for training: TRL's preference, SFT or KTO layout, with a dataset card."""
    from workbench.engine.diskfull import writing
    from workbench.errors import WorkbenchError
    from workbench.io.export import export_dataset

    if label_policy is not None and not labels:
        raise WorkbenchError("--label-policy applies with --labels")
    with writing(out, "the export"):  # a full disk: one clear error, the temporary copy gone
        result = export_dataset(_ws(workspace), name, out, fmt=format_, trl=trl,
                                split_test=split_test, labels=labels, seed=seed,
                                overwrite=overwrite, push_to_hub=push_to_hub,
                                keep_ties=keep_ties, label_policy=label_policy or "majority",
                                columns=columns, reasoning=reasoning)
    splits = ", ".join(f"{k}: {v}" for k, v in result["splits"].items())
    typer.echo(f"exported {name} to {result['out']} ({result['format']}, TRL {result['trl']} "
               f"{result['task']} layout; {splits})")
    if result["labels"] is not None:
        typer.echo("  labels: " + ", ".join(f"{k.replace('_', ' ')} {v}"
                                            for k, v in result["labels"].items()))
    if result["ties_excluded"]:
        typer.echo(f"  {result['ties_excluded']} tied pairs excluded (--keep-ties keeps them)")
    if result["method_columns"]:
        hint = "" if result["trl"] == "rdpo" else " (--columns minimal leaves them out)"
        typer.echo(f"  method columns: {', '.join(result['method_columns'])}{hint}")
    for reason, n in result["left_out"].items():
        typer.echo(f"  left out: {reason}: {n}")
    if result["reasoning_rows"]:
        typer.echo(f"  reasoning traces: {result['reasoning_rows']} rows, {result['reasoning']}")


report_app = typer.Typer(help="Reports computed from a dataset.", no_args_is_help=True)
app.add_typer(report_app, name="report")


@report_app.command("length-bias")
def report_length_bias(
    name: Annotated[str, typer.Argument(help="a preference dataset: NAME or NAME@VERSION")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    unit: Annotated[str, typer.Option(help="chars or words")] = "chars",
    bootstrap: Annotated[int, typer.Option(help="bootstrap resamples of the prompts")] = 1000,
    seed: Annotated[int, typer.Option(help="bootstrap seed")] = 0,
    include_reasoning: Annotated[bool, typer.Option("--include-reasoning", help="fit on answer plus reasoning trace length (default: the answer; traces are reported apart)")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Length bias of a preference dataset: the length-controlled GLM coefficient."""
    from workbench.algorithms.length_bias import report
    from workbench.errors import WorkbenchError

    if unit not in ("chars", "words"):
        raise WorkbenchError(f"--unit must be chars or words, not {unit!r}")
    try:
        result = report(_ws(workspace).read(name), unit, bootstrap, seed,  # type: ignore[arg-type]
                        include_reasoning)
    except ValueError as exc:
        raise WorkbenchError(f"{name}: {exc}") from exc
    if as_json:
        _echo_json(result)
        return
    typer.echo(f"{name}: {result['n']} pairs, lengths of the {result['measured']} in {unit}")
    typer.echo(f"  length coefficient  {result['coef']:.3f}  (95% bootstrap interval "
               f"{result['ci_low']:.3f} to {result['ci_high']:.3f}, {bootstrap} resamples)")
    typer.echo(f"  P(preferred) at +1 SD length  {result['p_at_plus_1sd']:.3f}")
    typer.echo(f"  chosen is longer in  {100 * result['share_chosen_longer']:.1f}% of pairs")
    trace = result.get("reasoning_length")
    if trace:
        typer.echo(f"  reasoning traces ({trace['pairs_with_trace']} pairs): mean length "
                   f"{trace['chosen_mean']:.0f} chosen vs {trace['rejected_mean']:.0f} rejected, "
                   f"coefficient {trace['coef']:.3f}")


@report_app.command("judge")
def report_judge(
    name: Annotated[str, typer.Argument(help="a judged preference dataset: NAME or NAME@VERSION")],
    against: Annotated[str, typer.Option("--against", help="the reference: labels (people's, under --label-policy), gold (gold pairs), or chosen (the dataset's own chosen, when it is known to be right)")],
    label_policy: Annotated[str, typer.Option("--label-policy", help="with --against labels: majority (default), latest, or annotator:NAME")] = "majority",
    judge: Annotated[str | None, typer.Option("--judge", help="pairwise (llm_pairwise's columns), scores (chosen_score - rejected_score), or a numeric margin column; default: pairwise if there, else scores")] = None,
    bins: Annotated[str, typer.Option("--bins", help="by_margin bins: a number of quantile bins of |margin| (5), or cut points (0.05,0.1,0.2)")] = "5",
    subset: Annotated[str | None, typer.Option("--subset", help="column for by_subset (default: source or subset when present)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Judge vs a reference: accuracy, Cohen's kappa, position flips, length preference, and
    accuracy per margin bin and per subset."""
    from workbench.errors import WorkbenchError
    from workbench.labeling.judge_report import AGAINST, parse_bins, workspace_report

    if against not in AGAINST:
        raise WorkbenchError(f"--against must be one of {', '.join(AGAINST)}, not {against!r}")
    if label_policy != "majority" and against != "labels":
        raise WorkbenchError("--label-policy applies with --against labels")
    result = workspace_report(_ws(workspace), name, against, label_policy, judge,
                              parse_bins(bins), subset)
    if as_json:
        _echo_json(result)
        return
    for line in _judge_lines(name, against, result):
        typer.echo(line)


def _judge_lines(name: str, against: str, result: dict[str, Any], indent: str = "") -> list[str]:
    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.1f}%"

    kappa = "n/a" if result["kappa"] is None else f"{result['kappa']:.3f}"
    if against == "chosen":
        kappa += " (one reference category: read accuracy)"
    flips = "n/a (one order asked)" if result["flip_rate"] is None else pct(result["flip_rate"])
    length = result["length_preference"]
    decided = sum(b["decided"] for b in result["by_margin"])
    lines = [f"{indent}{name} against {against}: {result['n']} pairs compared, {decided} "
             f"decided by both",
             f"{indent}  accuracy {pct(result['accuracy'])}   kappa {kappa}   flip rate {flips}",
             f"{indent}  prefers the longer reply: judge {pct(length['judge'])}, reference "
             f"{pct(length['reference'])}"]
    if not indent:
        lines.append("  accuracy by |margin|:")
        for b in result["by_margin"]:
            high = "inf" if b["high"] is None else f"{b['high']:.4g}"
            span = f"[{b['low']:.4g}, {high})"
            lines.append(f"    {span:<22} {b['n']:>6} pairs {b['decided']:>6} decided  "
                         f"accuracy {pct(b['accuracy'])}")
        for key, part in (result.get("by_subset") or {}).items():
            lines += _judge_lines(key, against, part, indent="  ")
    return lines


@app.command()
def ui(
    port: Annotated[int, typer.Option(help="port to listen on")] = 8501,
    host: Annotated[str, typer.Option(help="address to bind: 127.0.0.1 (default) serves this "
                                      "machine only; put a reverse proxy with authentication "
                                      "in front rather than binding 0.0.0.0 (see README)")]
    = "127.0.0.1",
    allow_host: Annotated[list[str] | None, typer.Option(
        "--allow-host", help="also answer requests for this host name (NAME or NAME:PORT), as "
        "a reverse proxy sends them; repeatable. Other names get 403 (DNS rebinding guard)")]
    = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Start the Streamlit app (browse, label, agreement, export); 127.0.0.1 unless --host."""
    import subprocess

    from ui.hosts import ENV, to_env
    from workbench.workspace import default_root, is_workspace, no_workspace

    root = workspace or _state["workspace"] or default_root()
    if not is_workspace(root):  # the app browses and labels; it has nothing to import with
        raise no_workspace(root)
    try:
        hosts = to_env(host, port, allow_host or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--allow-host") from None
    app_path = Path(__file__).resolve().parent.parent / "ui" / "server.py"
    env = {**os.environ, "WORKBENCH_HOME": str(Path(root).resolve()), ENV: hosts}
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"workbench UI on http://{shown}:{port} (workspace {root}); Ctrl-C stops it")
    raise typer.Exit(subprocess.call(
        [sys.executable, "-m", "streamlit", "run", str(app_path), "--server.address", host,
         "--server.port", str(port), "--server.headless", "true",
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
         "--client.toolbarMode", "minimal"], env=env))


def main() -> None:
    """Console entry point: any workbench error is one line on stderr and exit status 1."""
    from workbench.errors import WorkbenchError

    try:
        app()
    except WorkbenchError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted; run the same command again to resume", err=True)
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("WORKBENCH_DEBUG"):
            raise
        from workbench.engine.diskfull import is_no_space, no_space

        if is_no_space(exc):  # a write point that `diskfull.writing` does not wrap
            where = getattr(exc, "filename", None) or _state["workspace"] or "the workspace"
            typer.echo(f"error: {no_space(where)}", err=True)
            sys.exit(1)
        typer.echo(f"error: {type(exc).__name__}: {exc} (set WORKBENCH_DEBUG=1 for a traceback)",
                   err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
