"""`workbench ui` starts a real Streamlit server on localhost over the workspace."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import DATA, ROOT, cli

pytestmark = pytest.mark.server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> set[str] | None:
    """The local addresses a socket listens on at `port`, from Linux's /proc/net (each 32-bit
    word of an address in host byte order, little-endian here); None elsewhere."""
    if not Path("/proc/net/tcp").exists() or sys.byteorder != "little":
        return None
    found = set()
    for table in ("tcp", "tcp6"):
        path = Path("/proc/net") / table
        for line in path.read_text().splitlines()[1:] if path.exists() else []:
            fields = line.split()
            address, _, hex_port = fields[1].partition(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                found.add(str(ipaddress.ip_address(words)))
    return found


def test_ui_serves_on_localhost_only(tmp_path: Path):
    """`workbench ui` binds 127.0.0.1 unless --host says otherwise."""
    ws = tmp_path / "ws"
    assert cli("import", str(DATA / "hh_rlhf_harmless_test_600.jsonl.gz"), "--name", "hh",
               workspace=ws).returncode == 0
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", "--workspace", str(ws),
                                 "ui", "--port", str(port)], cwd=ROOT, stdout=out,
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
        assert listening(port) in ({"127.0.0.1"}, None), (listening(port), log.read_text())
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
