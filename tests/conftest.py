"""Shared fixtures: offline hub, a fresh workspace per test, the real data under ../shared."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
DATA = ROOT / "data"


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
