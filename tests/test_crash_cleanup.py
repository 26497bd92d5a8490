"""Crash leftovers: kill -9 the real CLI at named points (and at a few moments) of import,
run and export, then `workbench gc`: nothing is left over, no version number is skipped, and
running the command again gives what an uninterrupted run gives (same ids and rows).

The trees compared leave out what is meant to persist and differs in content only: the
catalog file (`workbench.duckdb`, its `.wal` and `.gate`: run ids and times differ), the model
call cache (`cache/calls.sqlite*`) and zero-byte lock files (`*.lock`, `cache/locks/`), whose
flocks are how processes find each other. Kept on purpose after a kill (not leftovers): every
finished checkpoint and a `.partial` folder's finished `batch-*.parquet` (+ notes), which a
resumed run reuses; the re-run then leaves the same tree as an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml
from conftest import DATA, ROOT, cli

from workbench.store.atomic import file_lock
from workbench.workspace import Workspace

HH = str(DATA / "hh_rlhf_harmless_test_600.jsonl.gz")
PIPELINE = {"name": "crash", "input": "hh", "batch_size": 100,
            "steps": [{"filter": {"where": {"chosen": {"min_chars": 20}}}},
                      {"dedup_exact": {}}, {"split": {"test_size": 0.1}}],
            "output": "crashed"}
PERSISTENT = {"workbench.duckdb", "workbench.duckdb.wal", "workbench.duckdb.gate"}


def commands(ws: Path, pipeline: Path) -> dict[str, list[str]]:
    return {"import": ["import", HH, "--name", "hh"],
            "run": ["run", str(pipeline), "--no-progress"],
            "export": ["export", "crashed", "--format", "parquet", "--out",
                       str(ws / "exports" / "crashed"), "--overwrite"]}


def tree(ws: Path) -> set[str]:
    """Every file and folder under `ws`, less what persists by design (module docstring)."""
    found = set()
    for path in ws.rglob("*"):
        rel = path.relative_to(ws).as_posix()
        if (rel in PERSISTENT or rel.startswith(("cache/calls.sqlite", "cache/locks"))
                or path.name.endswith(".lock")):
            continue
        found.add(rel)
    return found


def versions(ws: Path) -> dict[str, list[int]]:
    listing: dict[str, list[int]] = {}
    for d in Workspace(ws, create=False).list_datasets(all_versions=True):
        listing.setdefault(d.name, []).append(d.version)
    return listing


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Uninterrupted import, run, export and export --overwrite, snapshotted before each
    command; built once for all test workers (they share WORKBENCH_TEST_SHARED)."""
    base = Path(os.environ.get("WORKBENCH_TEST_SHARED") or tmp_path_factory.mktemp("shared"))
    root = base / "crash-reference"
    with file_lock(base / "crash-reference.lock"):
        if not (root / "done").exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            pipeline = root / "pipeline.yaml"
            pipeline.write_text(yaml.safe_dump(PIPELINE, sort_keys=False))
            ws = root / "ws"
            steps = commands(ws, pipeline)
            for before, command in [("import", steps["import"]), ("run", steps["run"]),
                                    ("export", steps["export"][:-1]),
                                    ("overwrite", steps["export"])]:
                if ws.exists():
                    shutil.copytree(ws, root / f"before-{before}")
                done = cli(*command, workspace=ws)
                assert done.returncode == 0, done.stderr
            (root / "done").touch()
    return {"pipeline": root / "pipeline.yaml", "before-run": root / "before-run",
            "before-export": root / "before-export",
            "before-overwrite": root / "before-overwrite", "final": root / "ws"}


def crash(command: list[str], ws: Path, at: str | None = None,
          after: float | None = None) -> subprocess.CompletedProcess | int:
    """Run the CLI, killed with SIGKILL at crashpoint `at` or `after` seconds."""
    if at is not None:
        done = cli(*command, workspace=ws, env={"WORKBENCH_CRASH_AT": at})
        assert done.returncode == -signal.SIGKILL, (at, done.stdout, done.stderr)
        return done
    proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", "--workspace", str(ws),
                             *command], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(after or 0)
    proc.send_signal(signal.SIGKILL)
    return proc.wait()


def assert_no_leftovers(ws: Path) -> None:
    """Nothing a crash leaves: no staging or set-aside copy, an empty cache/tmp, version
    folders exactly the catalog's, `.partial` folders holding only finished batches."""
    paths = sorted(p.relative_to(ws).as_posix() for p in ws.rglob("*"))
    assert not [p for p in paths if ".tmp-" in p or ".old-export-" in p], paths
    assert not list((ws / "cache" / "tmp").glob("*")), paths
    listed = versions(ws)
    for folder in (ws / "datasets").iterdir():
        assert sorted(int(v.name[1:]) for v in folder.iterdir()) == listed.get(folder.name, [])
    for name, numbers in listed.items():
        assert numbers == list(range(1, len(numbers) + 1)), (name, numbers)  # none skipped
    for partial in (ws / "cache" / "checkpoints").glob("*/*.partial"):
        assert not (partial.with_suffix("") / "meta.json").exists(), partial
        assert all(p.name.startswith("batch-") for p in partial.iterdir()), partial


def assert_same_as_uninterrupted(ws: Path, ref: Path) -> None:
    """The same tree (but for extra versions of a command the kill let finish) and, for every
    version, the ids and rows of the uninterrupted run's latest version of that dataset."""
    got, expected = versions(ws), versions(ref)
    assert got.keys() == expected.keys()
    extra = set()
    for name, numbers in got.items():
        assert numbers == list(range(1, len(numbers) + 1)), (name, numbers)
        want = pl.read_parquet(ref / "datasets" / name / f"v{expected[name][-1]}" / "data.parquet")
        for n in numbers:
            assert pl.read_parquet(ws / "datasets" / name / f"v{n}" / "data.parquet").equals(want)
            if n > expected[name][-1]:
                extra |= {f"datasets/{name}/v{n}", f"datasets/{name}/v{n}/data.parquet"}
    assert tree(ws) == tree(ref) | extra
    for part in (ref / "exports" / "crashed").glob("*.parquet"):
        assert pl.read_parquet(ws / "exports" / "crashed" / part.name).equals(
            pl.read_parquet(part))


def gc(ws: Path) -> dict:
    done = cli("gc", "--json", workspace=ws)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# (command, crashpoint or seconds): 11 named points and two moments
KILLS = [
    ("import", "import.staged"),  # parts staged in cache/tmp
    ("import", "publish.written"),  # the version's file written, not yet numbered
    ("import", "publish.after_rename"),  # v1 in place, no catalog row: the orphan
    ("import", "publish.after_insert"),  # published; the scratch folder stays
    ("import", 1.5),
    ("run", "checkpoint.batch_written#2"),  # mid row-local step: resume needs those batches
    ("run", "atomic_dir.before_rename#1"),  # the first checkpoint staged, not renamed
    ("run", "atomic_dir.after_rename#1"),  # checkpoint in place, its .partial not removed
    ("run", "publish.written"),
    ("run", "publish.after_rename"),
    ("run", 2.5),
    ("export", "export.staged"),  # the new export staged
    ("export", "export.after_aside"),  # the earlier export moved aside, the new not in place
    ("export", "export.after_swap"),  # the new export in place, the earlier one still aside
]


# one point per command in the fast tier; the whole matrix in `make test`
FAST_KILLS = {("import", "publish.after_rename"), ("run", "checkpoint.batch_written#2"),
              ("export", "export.after_aside")}


@pytest.mark.parametrize(("command", "point"), [
    pytest.param(c, p, id=str(p), marks=() if (c, p) in FAST_KILLS else pytest.mark.slow)
    for c, p in KILLS])
def test_kill_then_gc_leaves_nothing_and_the_rerun_matches(reference: dict[str, Path],
                                                           tmp_path: Path, command: str,
                                                           point: str | float):
    ws = tmp_path / "ws"
    base, done = {"import": (None, "before-run"), "run": ("before-run", "before-export"),
                  "export": ("before-overwrite", "final")}[command]
    if base is not None:
        shutil.copytree(reference[base], ws)
    argv = commands(ws, reference["pipeline"])[command]
    if isinstance(point, str):
        crash(argv, ws, at=point)
    else:
        crash(argv, ws, after=point)
    if not ws.exists():  # killed before the workspace was made
        return
    report = gc(ws)
    assert_no_leftovers(ws)
    if command == "run":
        runs = Workspace(ws, create=False).runs()
        assert "running" not in {r["status"] for r in runs}
        if isinstance(point, str):
            assert [r["status"] for r in runs] == ["interrupted"]
            assert report["interrupted_runs"] == [runs[0]["run_id"]]
    if point == "export.after_aside":  # the earlier export is back where it was
        assert report["restored_exports"] == ["exports/crashed"]
        for part in (reference["before-overwrite"] / "exports" / "crashed").glob("*.parquet"):
            assert pl.read_parquet(ws / "exports" / "crashed" / part.name).equals(
                pl.read_parquet(part))
    if isinstance(point, str) and point not in ("export.after_aside",
                                                "checkpoint.batch_written#2"):
        assert report["bytes_freed"] > 0, report  # (those two leave nothing to free)

    again = cli(*argv, workspace=ws)
    assert again.returncode == 0, again.stderr
    assert_no_leftovers(ws)
    assert_same_as_uninterrupted(ws, reference[done])
    if point == "checkpoint.batch_written#2":  # resumed from the batches gc kept
        finished = Workspace(ws, create=False).runs()[0]
        first = Workspace(ws, create=False).step_logs(finished["run_id"])[0]
        assert first["status"] == "resumed" and first["detail"]["reused_batches"] >= 2


def test_killed_run_shows_interrupted_after_gc(reference: dict[str, Path], tmp_path: Path):
    ws = tmp_path / "ws"
    shutil.copytree(reference["before-run"], ws)
    crash(commands(ws, reference["pipeline"])["run"], ws, at="checkpoint.batch_written#1")
    listed = cli("runs", workspace=ws)
    assert listed.returncode == 0 and " running " in listed.stdout
    gc(ws)
    listed = cli("runs", workspace=ws)
    assert listed.returncode == 0, listed.stderr
    assert " interrupted " in listed.stdout and " running " not in listed.stdout


def test_racing_imports_after_an_orphan_take_consecutive_numbers(tmp_path: Path):
    """A kill left an orphan v1; three imports then race (each sweeps cheaply first)."""
    ws = tmp_path / "ws"
    crash(["import", HH, "--name", "hh"], ws, at="publish.after_rename")
    assert (ws / "datasets" / "hh" / "v1").is_dir() and versions(ws) == {}
    procs = [subprocess.Popen([sys.executable, "-m", "workbench.cli", "--workspace", str(ws),
                               "import", HH, "--name", "hh"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert versions(ws) == {"hh": [1, 2, 3]}
    assert sorted(int(p.name[1:]) for p in (ws / "datasets" / "hh").iterdir()) == [1, 2, 3]


HOLDER = """
import sys, time
from workbench.store.atomic import atomic_dir, file_lock
from workbench.workspace import Workspace
ws = Workspace(sys.argv[1])
with ws.scratch() as scratch, atomic_dir(ws.datasets_dir / "hh" / "v9"), \\
        file_lock(ws.cache_dir / "checkpoints" / "crash" / ".lock"):
    (scratch / "big").write_bytes(b"x" * 1000)
    print("ready", flush=True)
    time.sleep(600)
"""


def test_gc_spares_what_live_processes_own(tmp_path: Path):
    """Work in progress (a scratch folder, a version being written, a running pipeline's
    checkpoints and run) survives gc; once its process is killed, gc removes it."""
    ws = tmp_path / "ws"
    Workspace(ws).start_run("r1", "crash", "")
    partial = ws / "cache" / "checkpoints" / "crash" / "01-filter-0123456789abcdef.partial"
    partial.mkdir(parents=True)
    (partial / "tmp").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(ws)], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "ready"
        before = tree(ws)
        report = gc(ws)
        assert report["paths"] == [] and report["interrupted_runs"] == []
        assert len(report["busy"]) >= 3 and tree(ws) == before
        assert Workspace(ws, create=False).run("r1")["status"] == "running"
    finally:
        holder.kill()
        holder.wait()
    report = gc(ws)
    assert report["removed"] == {"staging_folders": 1, "unpublished_versions": 1,
                                 "partial_folders": 1, "partial_leftovers": 1}
    assert report["interrupted_runs"] == ["r1"] and report["bytes_freed"] >= 1000
    assert not list((ws / "cache" / "tmp").iterdir()) and not partial.exists()


def test_gc_needs_a_workspace(tmp_path: Path):
    missing = tmp_path / "nowhere"
    done = cli("gc", workspace=missing)
    assert done.returncode == 1 and "no workspace at" in done.stderr
    assert not missing.exists()
