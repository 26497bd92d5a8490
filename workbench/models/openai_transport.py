"""HTTP to an OpenAI-compatible server: one client and a bounded thread pool per backend,
every request retried on its own (408/409/425/429, 5xx, connection errors, timeouts; with
jittered exponential backoff, at least Retry-After); a job that still fails comes back as
`CallFailed`, in input order, so one bad row never loses a batch. Nothing here knows what
the requests mean (see `openai_backend` and `openai_scoring`)."""

from __future__ import annotations

import email.utils
import logging
import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from workbench.models.base import CallFailed

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_RETRY_STATUS = frozenset({408, 409, 425, 429})  # plus every 5xx


class RequestFailed(Exception):
    """One request failed for good (after retries, or with a status that retrying won't fix)."""

    def __init__(self, message: str, status: int | None = None, unsupported: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.unsupported = unsupported


class Transport:
    """POSTs with retries and a pool to run many at once; `extra_body` is merged into each."""

    def __init__(self, base_url: str | None, api_key_env: str, concurrency: int,
                 max_retries: int, backoff: float, max_backoff: float, timeout: float,
                 extra_body: dict[str, Any]) -> None:
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL")
                         or DEFAULT_BASE_URL).rstrip("/")
        self.root_url = self.base_url.removesuffix("/v1")  # tokenize routes live at the root
        self.max_retries, self.backoff, self.max_backoff = max_retries, backoff, max_backoff
        self.extra_body = extra_body
        self._rng = random.Random()  # jitter only; never affects results
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            # an HTTP(S)_PROXY from the environment must not reroute a server on this machine
            trust_env=httpx.URL(self.base_url).host not in ("127.0.0.1", "localhost", "::1"),
        )
        self._pool = ThreadPoolExecutor(max_workers=concurrency,
                                        thread_name_prefix="openai-backend")

    def close(self) -> None:
        """Free the connection pool and worker threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    def run(self, jobs: list[Callable[[], Any]]) -> list[Any]:
        """Run jobs on the pool; a job that raises becomes CallFailed, in input order."""

        def guarded(job: Callable[[], Any]) -> Any:
            try:
                return job()
            except RequestFailed as exc:
                return CallFailed(error=str(exc))
            except Exception as exc:  # a malformed answer must not sink the batch either
                return CallFailed(error=f"{type(exc).__name__}: {exc}")

        if len(jobs) == 1:
            return [guarded(jobs[0])]
        return list(self._pool.map(guarded, jobs))

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST with retries on 429, 5xx, connection errors and timeouts (honours Retry-After)."""
        payload = {**self.extra_body, **body}
        last, status = "", None
        for attempt in range(self.max_retries + 1):
            retry_after: float | None = None
            status = None
            try:
                resp = self._client.post(path, json=payload)
            except httpx.TransportError as exc:  # connect errors, timeouts, dropped connections
                last = f"{type(exc).__name__}: {exc or 'no detail'}"
            else:
                if resp.status_code == 200:
                    try:
                        data = resp.json()
                    except ValueError as exc:
                        raise RequestFailed(f"POST {path}: invalid JSON in answer: {exc}") from exc
                    if not isinstance(data, dict):
                        raise RequestFailed(f"POST {path}: unexpected answer {str(data)[:200]}")
                    return data
                status = resp.status_code
                last = f"HTTP {status}: {resp.text[:300]}"
                if resp.status_code not in _RETRY_STATUS and resp.status_code < 500:
                    raise RequestFailed(f"POST {path}: {last}", status=resp.status_code)
                retry_after = retry_after_seconds(resp.headers.get("retry-after"))
            if attempt == self.max_retries:
                break
            delay = min(self.max_backoff, self.backoff * 2**attempt) * (
                0.5 + 0.5 * self._rng.random()
            )
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.max_backoff))
            log.debug("POST %s failed (%s); retry %d in %.2fs", path, last, attempt + 1, delay)
            time.sleep(delay)
        url = path if "://" in path else self.base_url + path
        raise RequestFailed(
            f"POST {url} failed after {self.max_retries + 1} attempts: {last}", status=status
        )



def first_choice(data: dict[str, Any]) -> dict[str, Any]:
    choices = data.get("choices")
    if not choices or not isinstance(choices[0], dict):
        raise RequestFailed(f"answer has no choices: {str(data)[:200]}")
    return choices[0]


def first_top_logprobs(data: dict[str, Any]) -> dict[str, float] | None:
    """The first position's top log-probs, from the legacy dict or the newer list shape."""
    lp = first_choice(data).get("logprobs") or {}
    tops = lp.get("top_logprobs") or []
    if not tops or tops[0] is None:
        return None
    first = tops[0]
    if isinstance(first, dict):
        return {str(k): float(v) for k, v in first.items()}
    out: dict[str, float] = {}
    for entry in first:  # [{"token": ..., "logprob": ...}, ...]
        out.setdefault(str(entry["token"]), float(entry["logprob"]))
    return out



def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: either a number or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
