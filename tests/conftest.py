"""Shared fixtures: offline hub, a fresh workspace per test, the real data under ../shared."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
DATA = ROOT / "data"


def pytest_configure(config: pytest.Config) -> None:
    """A folder the xdist workers of this run share (they inherit the environment)."""
    if "WORKBENCH_TEST_SHARED" not in os.environ:
        os.environ["WORKBENCH_TEST_SHARED"] = tempfile.mkdtemp(prefix="workbench-tests-")
        config.stash[_OWN_SHARED] = os.environ["WORKBENCH_TEST_SHARED"]


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = config.stash.get(_OWN_SHARED, None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
        del os.environ["WORKBENCH_TEST_SHARED"]


_OWN_SHARED = pytest.StashKey[str]()


@pytest.fixture
def shared() -> Path:
    if not SHARED.exists():
        message = f"{SHARED} is absent: the shared real datasets sit beside the checkout"
        if os.environ.get("WORKBENCH_REQUIRE_SHARED"):  # CI: a missing folder is a failure
            pytest.fail(message + " (WORKBENCH_REQUIRE_SHARED is set)")
        pytest.skip(message)
    return SHARED


@pytest.fixture(scope="session")
def embedded():
    """The embedded SmolLM2-135M-Instruct on the transformers backend (loaded once per
    worker process; steps that name `model: embedded` share it)."""
    from workbench.models import load_backend
    from workbench.models.spec import ModelSpec

    return load_backend(ModelSpec(backend="transformers", model="embedded"))


def cache_entries(workspace: Path) -> int:
    """Model calls stored in a workspace's call cache; 0 before the cache or its table exists
    (a run may have created the file but not yet the table)."""
    import sqlite3

    db = workspace / "cache" / "calls.sqlite"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as con:
        created = con.execute("SELECT count(*) FROM sqlite_master WHERE name = 'calls'").fetchone()
        if not created[0]:
            return 0
        return con.execute("SELECT count(*) FROM calls").fetchone()[0]


@pytest.fixture
def ws(tmp_path: Path):
    from workbench.workspace import Workspace

    return Workspace(tmp_path / "ws")


def cli(*args: str, workspace: Path | None = None, cwd: Path = ROOT, timeout: float = 300,
        env: dict | None = None) -> subprocess.CompletedProcess:
    """The real console script in a subprocess."""
    command = [sys.executable, "-m", "workbench.cli"]
    if workspace is not None:
        command += ["--workspace", str(workspace)]
    return subprocess.run(command + list(args), capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env={**os.environ, **(env or {})})


@contextlib.contextmanager
def ui_server(workspace: Path, log_path: Path, *args: str) -> Iterator[tuple[int, int]]:
    """`workbench ui` on a free port in its own process group, once its health check says ok;
    yields (port, pid) and stops the server afterwards."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", "--workspace",
                                 str(workspace), "ui", "--port", str(port), *args], cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log_path.read_text()
            with contextlib.suppress(OSError), urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as answer:
                if answer.read() == b"ok":
                    break
            assert time.monotonic() < deadline, "workbench ui did not start in 60 s"
            time.sleep(0.3)
        yield port, proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
