"""`workbench ui` starts a real Streamlit server on localhost over the workspace."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import DATA, ROOT, cli


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_serves_on_localhost(tmp_path: Path):
    ws = tmp_path / "ws"
    assert cli("import", str(DATA / "hh_rlhf_harmless_test_600.jsonl.gz"), "--name", "hh",
               workspace=ws).returncode == 0
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", "--workspace", str(ws), "ui",
                             "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, body = time.monotonic() + 60, b""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    body = r.read()
                    break
            except OSError:
                time.sleep(0.5)
        assert body == b"ok"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            assert b"<div id=\"root\">" in r.read()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_app_script_renders_a_preference_pair(tmp_path: Path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    ws = tmp_path / "ws"
    assert cli("import", str(DATA / "hh_rlhf_harmless_test_600.jsonl.gz"), "--name", "hh",
               workspace=ws).returncode == 0
    monkeypatch.setenv("WORKBENCH_HOME", str(ws))
    app = AppTest.from_file(str(ROOT / "ui" / "app.py"), default_timeout=60).run()
    assert not app.exception
    assert [s.value for s in app.subheader] == ["chosen", "rejected"]
    assert "600 of 600 rows" in " ".join(m.value for m in app.markdown)
