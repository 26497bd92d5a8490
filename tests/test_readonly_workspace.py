"""Reading never needs write access: a workspace its reader may not write to (owned by another
user and `chmod -R a-w`, or on a read-only bind mount) is listed, shown, queried, exported
elsewhere and browsed in the app, and nothing in it changes. A `-w` path that is not a
workspace is an error for read commands, and nothing is created there.

The other-user and mount tests need root (setuid, capabilities, mount); they skip with the
reason where those are missing.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DATA, ROOT, cli, ui_server
from test_ui_smoke import free_port

from workbench.errors import NotFoundError
from workbench.labeling import labels, queues
from workbench.workspace import Workspace

NOBODY = 65534
# capabilities that let root write what it does not own: CHOWN, DAC_OVERRIDE, DAC_READ_SEARCH,
# FOWNER, FSETID, LINUX_IMMUTABLE, SYS_ADMIN (remount)
WRITE_CAPS = (0, 1, 2, 3, 4, 9, 21)
PR_CAPBSET_DROP = 24


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file and folder under `root` (itself included) with its size, mtime and mode."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in [".", *dirs, *files]:
            path = Path(folder) / name
            info = path.lstat()
            found[str(path.relative_to(root))] = (info.st_size, info.st_mtime_ns, info.st_mode)
    return found


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    """A folder every user may traverse (pytest's own tmp folders are root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="wb-readonly-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def built(base: Path) -> dict[str, Any]:
    """A workspace with an imported dataset, a pipeline run's output, a queue and labels."""
    root = base / "built"
    assert cli("import", str(DATA / "hh_rlhf_harmless_test_600.jsonl.gz"), "--name", "hh",
               workspace=root).returncode == 0
    ran = cli("run", str(ROOT / "data" / "pipelines" / "hh_clean.yaml"), "--no-progress",
              workspace=root)
    assert ran.returncode == 0, ran.stderr
    ws = Workspace(root)
    queue = queues.create_queue(ws, "round1", "hh", None, min_labels=2)
    rows = ws.read("hh").head(2)["id"].to_list()
    for who, choices in (("alice", ("a", "b")), ("bob", ("a", "a"))):
        for row_id, choice in zip(rows, choices, strict=True):
            labels.label(ws, "hh", row_id, who, choice, True, queue=queue.name)
    run_id = ws.runs()[0]["run_id"]
    return {"root": root, "run_id": run_id}


def copy_of(built: dict[str, Any], base: Path, name: str) -> Path:
    target = base / name
    shutil.copytree(built["root"], target, symlinks=True)
    return target


def read_commands(run_id: str, out: Path) -> list[tuple[str, ...]]:
    return [
        ("datasets",),
        ("datasets", "--json", "--all"),
        ("show", "hh_clean", "--limit", "2", "--json"),
        ("sql", "SELECT split, count(*) AS n FROM hh_clean GROUP BY split ORDER BY split",
         "--json"),
        ("runs",),
        ("runs", run_id, "--json"),
        ("export", "hh_clean", "--format", "jsonl", "--out", str(out / "jsonl")),
        ("export", "hh", "--format", "hf", "--labels", "--out", str(out / "hf")),
        ("report", "length-bias", "hh", "--bootstrap", "20", "--json"),
    ]


def check_read_commands(run: Callable[..., subprocess.CompletedProcess], ws: Path,
                        run_id: str, out: Path) -> None:
    """Every read command succeeds on `ws` (run as `run` runs it) and changes nothing."""
    before = snapshot(ws)
    results = {args: run(*args) for args in read_commands(run_id, out)}
    for args, result in results.items():
        assert result.returncode == 0, (args, result.stderr)
    listed = json.loads(results[("datasets", "--json", "--all")].stdout)
    assert {(d["name"], d["rows"]) for d in listed} == {("hh", 600), ("hh_clean", 564)}
    counts = [json.loads(line) for line in results[read_commands(run_id, out)[3]].stdout.splitlines()]
    assert sum(c["n"] for c in counts) == 564 and {c["split"] for c in counts} == {"train", "test"}
    assert json.loads(results[("runs", run_id, "--json")].stdout)["status"] == "finished"
    assert len((out / "jsonl" / "train.jsonl").read_text().splitlines()) > 400
    assert (out / "hf" / "workbench_export.json").is_file()
    assert snapshot(ws) == before


# another user ------------------------------------------------------------------------------
def _as_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def _as_root_without_write_caps() -> None:
    """uid 0 that cannot override file permissions: not the files' owner (nobody is), so
    it gets their read-only "other" bits, as any other user would."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in WRITE_CAPS:
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"prctl(PR_CAPBSET_DROP, {cap})")


IDENTITIES = {"nobody": (_as_nobody, NOBODY), "root-without-write-caps":
              (_as_root_without_write_caps, 0)}


def _runner(identity: str, home: Path) -> Callable[..., subprocess.CompletedProcess]:
    become, _ = IDENTITIES[identity]
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
           "HF_HOME": str(home / "hf"), "PYTHONPATH": str(ROOT)}

    def run(*args: str, workspace: Path | None = None) -> subprocess.CompletedProcess:
        command = [sys.executable, *args] if args[0] == "-c" else [
            sys.executable, "-m", "workbench.cli", *(["-w", str(workspace)] if workspace else []),
            *args]
        return subprocess.run(command, capture_output=True, text=True, cwd=home, env=env,
                              preexec_fn=become, timeout=300)
    return run


@pytest.mark.parametrize("identity", list(IDENTITIES))
def test_read_commands_as_a_user_who_does_not_own_the_workspace(built, base, identity):
    if os.geteuid() != 0:
        pytest.skip("needs root to hand the workspace to another user and run as one")
    _, uid = IDENTITIES[identity]
    ws = copy_of(built, base, f"owned-{identity}")
    (ws / "workbench.duckdb.gate").unlink()  # and one the reader cannot create
    owner_uid = 1 if identity == "nobody" else NOBODY  # someone other than the reader
    for path in [ws, *ws.rglob("*")]:
        os.chown(path, owner_uid, owner_uid, follow_symlinks=False)
    subprocess.run(["chmod", "-R", "a-w", str(ws)], check=True)
    home = base / f"home-{identity}"
    home.mkdir()
    os.chown(home, uid, uid)
    run = _runner(identity, home)
    try:
        probe = run("-c", "import sys, workbench.cli, polars, duckdb\n"
                          "try:\n    open(sys.argv[1], 'w')\nexcept PermissionError:\n"
                          "    print('denied')\nelse:\n    print('wrote')", str(ws / "probe"))
        why = (probe.stderr.strip().splitlines() or ["?"])[-1] if probe.returncode else None
    except OSError as exc:  # the interpreter itself is out of reach (e.g. under /root)
        why = str(exc)
    if why is not None:
        pytest.skip(f"{identity} cannot run {sys.executable} with the project on PYTHONPATH "
                    f"({why}); the other identity covers this test")
    if probe.stdout.strip() != "denied":
        pytest.skip(f"{identity} could still write the workspace ({probe.stdout.strip()})")

    check_read_commands(lambda *args: run(*args, workspace=ws), ws, built["run_id"],
                        home / "out")
    assert not (ws / "workbench.duckdb.gate").exists()


# a read-only mount -------------------------------------------------------------------------
@contextlib.contextmanager
def read_only_mount(source: Path, target: Path) -> Iterator[Path]:
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root and mount(8) for a read-only bind mount")
    target.mkdir()
    bound = subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True,
                           text=True)
    if bound.returncode != 0:
        pytest.skip(f"mount --bind is not permitted here: {bound.stderr.strip()}")
    try:
        remounted = subprocess.run(["mount", "-o", "remount,bind,ro", str(target)],
                                   capture_output=True, text=True)
        if remounted.returncode != 0:
            pytest.skip(f"remount read-only is not permitted here: {remounted.stderr.strip()}")
        with pytest.raises(OSError):  # really read-only, even for root
            (target / "probe").write_text("x")
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=False)


@pytest.fixture(scope="module")
def mounted(built: dict[str, Any], base: Path) -> Iterator[Path]:
    """A copy of the built workspace on a read-only bind mount (its turnstile file there)."""
    with read_only_mount(copy_of(built, base, "source"), base / "mnt") as target:
        yield target


def test_read_commands_on_a_read_only_mount(built, base, mounted):
    def run(*args: str) -> subprocess.CompletedProcess:
        return cli(*args, workspace=mounted, cwd=base)

    check_read_commands(run, mounted, built["run_id"], base / "mount-out")
    refused = cli("import", str(DATA / "hh_rlhf_harmless_test_600.jsonl.gz"), "--name", "more",
                  workspace=mounted)
    assert refused.returncode == 1 and "Read-only file system" in refused.stderr


# the app -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def app_on_mount(mounted: Path, base: Path) -> Iterator[dict[str, Any]]:
    from test_ui_browser import _browser_paths

    paths = _browser_paths()
    log_path = base / "server.log"
    with ui_server(mounted, log_path) as (port, _):
        yield {"url": f"http://127.0.0.1:{port}", "paths": paths, "root": base,
               "shots": base / "screenshots", "log": log_path}


@pytest.mark.server
def test_app_browses_a_read_only_workspace(app_on_mount, mounted):
    from selenium.webdriver.common.by import By
    from test_ui_browser import browser, idle, press, screenshot, shown_row, wait_for

    before = snapshot(mounted)
    with browser(app_on_mount, "reader") as chrome:
        for page, shows in (("", "2 datasets"), ("Datasets", "2 annotators"),
                            ("Browse", "600 matching rows"), ("Queues", "Add gold pairs"),
                            ("Agreement", "Fleiss"), ("Adjudicate", "disagreements"),
                            ("Export", "Export")):
            screenshot(chrome, app_on_mount, page, "?annotator=reader")
            text = chrome.find_element(By.CSS_SELECTOR, '[data-testid="stMain"]').text
            assert not chrome.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]'), text
            assert shows in text, (page, text[:2000])

        # a label cannot be saved: the page says why and keeps the row
        chrome.get(f"{app_on_mount['url']}/Label?queue=round1&annotator=reader")
        row = wait_for(lambda: shown_row(chrome), "a row to label")
        idle(chrome)
        press(chrome, "1")
        wait_for(lambda: "read-only" in chrome.find_element(
            By.CSS_SELECTOR, '[data-testid="stMain"]').text, "the read-only message")
        assert shown_row(chrome) == row
        assert not chrome.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    assert snapshot(mounted) == before


# a path that is not a workspace ------------------------------------------------------------
def test_a_mistyped_workspace_is_an_error_and_creates_nothing(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for root in (tmp_path / "typo", empty):
        for args in (("datasets",), ("show", "hh"), ("sql", "SELECT 1"), ("runs",),
                     ("export", "hh", "--out", str(tmp_path / "out")),
                     ("report", "length-bias", "hh"), ("ui", "--port", str(free_port()))):
            result = cli(*args, workspace=root, timeout=60)
            assert result.returncode == 1, (args, result.stdout, result.stderr)
            assert result.stderr.strip() == (
                f"error: no workspace at {root}; `workbench init {root}` or any write "
                "command creates one"), (args, result.stderr)
        assert not (tmp_path / "typo").exists() and not any(empty.iterdir())
    assert not (tmp_path / "out").exists()

    made = cli("init", str(tmp_path / "typo"))
    assert made.returncode == 0 and "created workspace" in made.stdout
    assert "already" in cli("init", str(tmp_path / "typo")).stdout
    assert "no datasets yet" in cli("datasets", workspace=tmp_path / "typo").stdout
    imported = cli("import", str(DATA / "hh_rlhf_harmless_test_600.jsonl.gz"), "--name", "hh",
                   workspace=tmp_path / "new")  # a write command still creates one
    assert imported.returncode == 0, imported.stderr


def test_workspace_open_creates_nothing(tmp_path: Path):
    with pytest.raises(NotFoundError, match="no workspace at"):
        Workspace(tmp_path / "absent", create=False)
    assert not (tmp_path / "absent").exists()
    made = Workspace(tmp_path / "ws")  # the default still creates (notebooks, scripts)
    made.write_dataset("one", _tiny(), "sft")
    (made.root / "workbench.duckdb.gate").unlink()
    before = snapshot(made.root)
    opened = Workspace.open(made.root)
    assert [v.name for v in opened.list_datasets()] == ["one"]
    assert opened.read("one").height == 1
    assert snapshot(made.root) == before  # not even the turnstile's file


def _tiny() -> Any:
    import polars as pl

    from workbench.schema import user

    return pl.DataFrame({"q": ["hi"]}).select(user("q").alias("prompt"),
                                              pl.lit("hello").alias("response"))
