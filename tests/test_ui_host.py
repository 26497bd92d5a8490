"""DNS rebinding: the app answers HTTP and websocket requests only for the Host names it was
started on (the bound address, or `--allow-host NAME`); any other Host gets 403, never 101.

A real `workbench ui` server, spoken to with raw HTTP requests and raw websocket handshakes
(as a rebinding page's browser would send them), and the `websockets` client for a full
connection."""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DATA, cli, ui_server

from ui.hosts import HostRule

pytestmark = pytest.mark.server

PROXY = "wb.example.test"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("ui-host")
    ws = root / "ws"
    assert cli("import", str(DATA / "hh_rlhf_harmless_test_600.jsonl.gz"), "--name", "hh",
               workspace=ws).returncode == 0
    log_path = root / "server.log"
    with ui_server(ws, log_path, "--allow-host", PROXY) as (port, _):
        yield {"port": port, "log": log_path}


def raw(port: int, lines: list[str]) -> tuple[int, str]:
    """Send a request as written (Host and all) and return the status and the head."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    head = data.decode("latin-1")
    return int(head.split(" ", 2)[1]), head


def get(port: int, host: str, path: str = "/") -> tuple[int, str]:
    return raw(port, [f"GET {path} HTTP/1.1", f"Host: {host}", "Connection: close"])


def handshake(port: int, host: str, origin: str | None) -> int:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = ["GET /_stcore/stream HTTP/1.1", f"Host: {host}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
             "Sec-WebSocket-Protocol: streamlit"]
    if origin:
        lines.append(f"Origin: {origin}")
    return raw(port, lines)[0]


def test_foreign_host_is_refused_on_http_and_websocket(server):
    port = server["port"]
    for host in (f"rebind.evil.example:{port}", "rebind.evil.example", f"localhost.evil:{port}",
                 f"127.0.0.1.evil.example:{port}", f"localhost:{port + 1}", "a b", ""):
        for path in ("/", "/_stcore/health", "/Browse", "/media/x"):
            status, head = get(port, host, path)
            assert status == 403, (host, path, head)
        for origin in (f"http://{host}", None):
            assert handshake(port, host, origin) == 403, (host, origin)


def test_own_and_allowed_hosts_are_served(server):
    port = server["port"]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", PROXY,
                 f"{PROXY}:443", f"LocalHost:{port}"):
        status, head = get(port, host, "/_stcore/health")
        assert status == 200, (host, head)
        assert handshake(port, host, f"http://{host}") == 101, host


def test_a_real_websocket_client_connects(server):
    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{server['port']}/_stcore/stream",
                 subprotocols=["streamlit"], open_timeout=10) as conn:
        assert conn.subprotocol == "streamlit"


def test_bad_allow_host_is_refused(tmp_path: Path):
    ws = tmp_path / "ws"
    assert cli("init", str(ws)).returncode == 0
    result = cli("ui", "--allow-host", "user@evil.example/x", workspace=ws, timeout=60)
    assert result.returncode == 2 and "--allow-host" in result.stderr


@pytest.mark.parametrize(("bind", "host", "allowed"), [
    ("127.0.0.1", "127.0.0.1:8501", True),
    ("127.0.0.1", "localhost:8501", True),
    ("127.0.0.1", "[::1]:8501", True),
    ("127.0.0.1", "localhost", True),  # no port: a local proxy that rewrites Host
    ("127.0.0.1", "localhost:8502", False),
    ("127.0.0.1", "rebind.evil.example:8501", False),
    ("127.0.0.1", "192.0.2.7:8501", False),
    ("127.0.0.1", "user@localhost:8501", False),
    ("127.0.0.1", "localhost:8501/x", False),
    ("127.0.0.1", "localhost:99999", False),
    ("127.0.0.1", None, False),
    ("192.0.2.7", "192.0.2.7:8501", True),
    ("192.0.2.7", "localhost:8501", False),  # bound elsewhere: loopback does not reach it
    ("0.0.0.0", "192.0.2.7:8501", True),  # an address cannot be rebound
    ("0.0.0.0", "[2001:db8::1]:8501", True),
    ("0.0.0.0", "localhost:8501", True),
    ("0.0.0.0", "rebind.evil.example:8501", False),
    ("::", "rebind.evil.example", False),
])
def test_host_rule(bind, host, allowed):
    assert HostRule(bind, 8501).allows(host) is allowed


def test_host_rule_extra_names():
    rule = HostRule("127.0.0.1", 8501, ["wb.example.test", "other.example.test:8443"])
    assert rule.allows("wb.example.test") and rule.allows("WB.example.test:443")
    assert rule.allows("other.example.test:8443")
    assert not rule.allows("other.example.test") and not rule.allows("other.example.test:443")
    assert not rule.allows("evil.wb.example.test")
    with pytest.raises(ValueError, match="--allow-host"):
        HostRule("127.0.0.1", 8501, ["user@evil"])
