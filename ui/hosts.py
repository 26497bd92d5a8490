"""Which Host headers the app answers: a guard against DNS rebinding.

A web page the annotator visits can point its own host name at 127.0.0.1 and then talk to
the app from the browser as "same origin". Its requests still carry the page's host name in
`Host`, so the app answers only the names it was started on: the bound address (and
localhost, 127.0.0.1, [::1] when that is a loopback address) with its port, any IP address
when it is bound to every interface (an address cannot be rebound), and the names given
with `workbench ui --allow-host NAME` (a reverse proxy's). Everything else gets 403, on
plain HTTP and on the websocket handshake alike.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

ENV = "WORKBENCH_UI_HOSTS"  # how `workbench ui` hands the rule to the server process
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("", "0.0.0.0", "::")


def split_host(value: str) -> tuple[str, int | None] | None:
    """`name[:port]` or `[v6]:port` as (lower-case name, port); None when malformed."""
    try:
        parts = urlsplit(f"//{value.strip()}")
        port = parts.port
    except ValueError:
        return None
    name = parts.hostname
    if not name or parts.username is not None or parts.password is not None or parts.path:
        return None
    return name.rstrip("."), port


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostRule:
    """The Host names the app answers, from the address it binds, its port and the extra
    names; `allows(host_header)` says whether a request may be served."""

    def __init__(self, bind: str, port: int, extra: Iterable[str] = ()) -> None:
        self.bind, self.port = bind.strip("[]").lower(), port
        self.wildcard = self.bind in WILDCARDS
        names = {self.bind} if not self.wildcard else set()
        if self.wildcard or self.bind == "localhost" or (
                _is_ip(self.bind) and ipaddress.ip_address(self.bind).is_loopback):
            names |= set(LOOPBACK_NAMES)
        if self.wildcard:  # the machine's own names reach it too
            names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        self.local = names
        self.extra: set[tuple[str, int | None]] = set()
        for item in extra:
            parsed = split_host(item)
            if parsed is None:
                raise ValueError(f"--allow-host {item!r}: use a host name, NAME:PORT or "
                                 "[IPv6]:PORT")
            self.extra.add(parsed)

    def allows(self, header: str | None) -> bool:
        parsed = split_host(header) if header else None
        if parsed is None:
            return False
        name, port = parsed
        if (name, port) in self.extra or (name, None) in self.extra:
            return True
        if port not in (None, self.port):
            return False
        return name in self.local or (self.wildcard and _is_ip(name))

    @classmethod
    def from_env(cls) -> HostRule:
        """The rule `workbench ui` passed in $WORKBENCH_UI_HOSTS; without it (ui/server.py
        started by hand with `streamlit run`), Streamlit's own address and port."""
        raw = os.environ.get(ENV)
        if raw:
            spec = json.loads(raw)
            return cls(spec["bind"], int(spec["port"]), spec.get("extra", ()))
        from streamlit import config

        return cls(config.get_option("server.address") or "127.0.0.1",
                   int(config.get_option("server.port")))


def to_env(bind: str, port: int, extra: Iterable[str]) -> str:
    """The value of $WORKBENCH_UI_HOSTS; checks the extra names first (ValueError)."""
    extra = list(extra)
    HostRule(bind, port, extra)
    return json.dumps({"bind": bind, "port": port, "extra": extra})


Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class HostCheck:
    """ASGI middleware: requests (HTTP and websocket) whose Host the rule refuses get 403."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]],
                 rule: HostRule | None = None) -> None:
        self.app = app
        self.rule = rule or HostRule.from_env()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = next((v.decode("latin-1") for k, v in scope.get("headers", [])
                     if k == b"host"), None)
        if self.rule.allows(host):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":  # closing before accepting: the server answers 403
            await send({"type": "websocket.close", "code": 1008})
            return
        body = (f"refused: Host {host!r} is not an address this app was started on; "
                "behind a reverse proxy, start it with `workbench ui --allow-host NAME`\n"
                ).encode()
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
