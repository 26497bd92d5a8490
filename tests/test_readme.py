"""The README's commands run as written from a fresh clone: a stranger's first minutes."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import ROOT


def readme_commands() -> list[list[str]]:
    """Every command line of the README's bash blocks, in order, comments stripped."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [line for block in blocks
            for line in (shlex.split(raw, comments=True) for raw in block.splitlines()) if line]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ui(args: list[str], cwd: Path, env: dict[str, str]) -> None:
    """`workbench ui` serves until stopped: start it, wait for Streamlit's health check, stop."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", *args, "--port", str(port)],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            with contextlib.suppress(httpx.HTTPError):
                health = httpx.get(f"http://localhost:{port}/_stcore/health", timeout=2,
                                   trust_env=False)
                if health.status_code == 200 and health.text == "ok":
                    return
            time.sleep(0.5)
        raise AssertionError("workbench ui did not answer its health check in 120 s")
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


@pytest.mark.slow  # subprocesses end to end: `make test` only
def test_readme_commands_run_from_a_fresh_clone(tmp_path: Path):
    clone = tmp_path / "clone"
    shutil.copytree(ROOT / "data", clone / "data")  # what a fresh clone has besides code
    env = {k: v for k, v in os.environ.items() if k != "WORKBENCH_HOME"}
    commands = readme_commands()
    assert sum(cmd[0] == "workbench" for cmd in commands) >= 12
    seen = set()
    for cmd in commands:
        if cmd[0] == "source":  # activating the venv: this test runs its python directly
            assert cmd[1] == ".venv/bin/activate"
            continue
        assert cmd[0] == "workbench", f"README command is not a workbench command: {cmd}"
        seen.add(cmd[1])
        if cmd[1] == "ui":
            run_ui(cmd[1:], clone, env)
            continue
        done = subprocess.run([sys.executable, "-m", "workbench.cli", *cmd[1:]], cwd=clone,
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{shlex.join(cmd)} failed:\n{done.stderr}"
    assert {"import", "datasets", "show", "sql", "run", "runs", "transforms", "export",
            "ui"} <= seen
    assert (clone / "workspace" / "workbench.duckdb").is_file()
    assert (clone / "exports" / "hh_clean" / "README.md").is_file()
