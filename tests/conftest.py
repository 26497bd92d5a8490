"""Shared fixtures: offline hub, a fresh workspace per test, the real data under ../shared."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
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
        pytest.skip(f"{SHARED} is absent: the shared real datasets sit beside the checkout")
    return SHARED


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
