"""Crash-safe, content-keyed cache of model calls in one SQLite file.

Every result is stored under sha256(canonical JSON of backend fingerprint, capability, params,
input, sample index), so a run killed at any point and started again finds every finished item
and calls the model only for the rest. Each finished batch is committed at once (WAL mode): a
SIGKILL loses at most the batch in flight. `synchronous=NORMAL` survives process crashes; only
an OS crash or power loss can drop the last commits, which are then simply recomputed.

Items that keep failing are quarantined (with step, row id and error) instead of failing the
run, so one bad row never costs the rest of the batch.

This module imports nothing from workbench except `workbench.models.base`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from workbench.models.base import (
    Backend,
    CallFailed,
    Generation,
    SamplingParams,
    TokenLogprobs,
    require,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    capability TEXT NOT NULL,
    format TEXT NOT NULL,
    value BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS failed (
    key TEXT NOT NULL,
    step TEXT NOT NULL,
    row_id TEXT NOT NULL,
    error TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (key, step, row_id)
);
"""
_CHUNK = 500  # keys per SELECT (SQLite limits bound variables)


def canonical_json(obj: Any) -> str:
    """Stable JSON: sorted keys, no spaces, tuples as lists, so equal content hashes equal."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_plain
    )


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"cannot key on {type(obj).__name__}")


def make_key(
    fingerprint: dict[str, Any],
    capability: str,
    params: dict[str, Any] | None,
    item: Any,
    index: int | None = None,
    sample_id: str | None = None,
) -> str:
    """Content key of one call item; `index` is the sample index for generation and
    `sample_id` tells apart identical inputs that are sampled independently."""
    payload = {
        "fingerprint": fingerprint,
        "capability": capability,
        "params": params or {},
        "input": item,
        "index": index,
    }
    if sample_id is not None:
        payload["sample_id"] = sample_id
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def sample_seed(seed: int, sample_id: str) -> int:
    """The seed of one independently sampled item: fixed by (run seed, sample id)."""
    digest = hashlib.sha256(f"{seed}\0{sample_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def error_kind(message: str) -> str:
    """A short class for an error message: 'HTTP 401', 'ConnectError', 'ReadTimeout', ..."""
    status = re.search(r"\bHTTP (\d{3})\b", message)
    if status:
        return f"HTTP {status.group(1)}"
    name = re.search(r"\b([A-Z]\w*(?:Error|Exception|Timeout|Failed))\b", message)
    return name.group(1) if name else message.split(":")[0][:60]


# -- value encoding -----------------------------------------------------------------------


def encode_value(capability: str, value: Any) -> tuple[str, bytes]:
    if capability == "hidden_states":
        import numpy as np

        buf = io.BytesIO()
        if isinstance(value, dict):  # pooled states: named arrays and counts
            np.savez(buf, **{k: np.asarray(v) for k, v in value.items()})
            return "npz", buf.getvalue()
        np.save(buf, np.asarray(value, dtype=np.float32), allow_pickle=False)
        return "npy", buf.getvalue()
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
        if isinstance(value, dict) and "reasoning" in value and value["reasoning"] is None:
            del value["reasoning"]  # a generation without a trace is stored as before traces
    return "json", json.dumps(value, ensure_ascii=False).encode()


def decode_value(capability: str, fmt: str, blob: bytes) -> Any:
    if fmt in ("npy", "npz"):
        import numpy as np

        loaded = np.load(io.BytesIO(blob), allow_pickle=False)
        if fmt == "npy":
            return loaded
        return {k: loaded[k].item() if loaded[k].ndim == 0 else loaded[k] for k in loaded.files}
    data = json.loads(blob)
    if capability == "generate":
        return Generation(**data)
    if capability == "logprobs":
        return TokenLogprobs(**data)
    return data


# -- the store ----------------------------------------------------------------------------


class CallCache:
    """One SQLite file (WAL); safe to share between threads and between processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        with self._conn:
            self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> CallCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT count(*) FROM calls").fetchone()[0]

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Decoded values of the keys that are present; absent keys are left out."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, Any] = {}
        with self._lock:
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT key, capability, format, value FROM calls WHERE key IN ({marks})",
                    chunk,
                ).fetchall()
                for key, capability, fmt, blob in rows:
                    found[key] = decode_value(capability, fmt, blob)
        return found

    def put_many(self, items: Iterable[tuple[str, str, Any]]) -> None:
        """Store (key, capability, value) rows in one transaction; the first write of a key
        wins, so a value once returned never changes. Clears their quarantine entries."""
        now = time.time()
        rows = [(key, cap, *encode_value(cap, value), now) for key, cap, value in items]
        if not rows:
            return
        with self._lock, self._conn:
            self._conn.executemany(
                "INSERT OR IGNORE INTO calls (key, capability, format, value, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            self._conn.executemany("DELETE FROM failed WHERE key = ?", [(r[0],) for r in rows])

    def quarantine(self, key: str, step: str, row_id: str, error: str) -> None:
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO failed (key, step, row_id, error, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (key, step, row_id, error, time.time()),
            )

    def failed(self, step: str | None = None) -> list[dict[str, Any]]:
        """Quarantined items, oldest first (optionally of one step)."""
        sql = "SELECT key, step, row_id, error, created_at FROM failed"
        args: tuple[str, ...] = ()
        if step is not None:
            sql, args = sql + " WHERE step = ?", (step,)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY created_at", args).fetchall()
        names = ("key", "step", "row_id", "error", "created_at")
        return [dict(zip(names, row, strict=True)) for row in rows]

    def clear_failed(self, step: str | None = None) -> int:
        """Forget quarantined items (they are retried anyway on the next run); returns count."""
        with self._lock, self._conn:
            if step is None:
                return self._conn.execute("DELETE FROM failed").rowcount
            return self._conn.execute("DELETE FROM failed WHERE step = ?", (step,)).rowcount


# -- cached calls -------------------------------------------------------------------------


@dataclasses.dataclass
class CallStats:
    hits: int = 0  # items answered from the cache
    calls: int = 0  # backend method invocations
    computed: int = 0  # items answered by the backend
    failures: int = 0  # items quarantined (their result is None)
    tokens: int = 0  # tokens generated by the backend (generate only)
    errors: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # by kind

    def counts(self) -> dict[str, int]:
        return {"hits": self.hits, "calls": self.calls, "computed": self.computed,
                "failures": self.failures}

    def failed(self, error: str, items: int = 1) -> None:
        entry = self.errors.setdefault(error_kind(error), {"count": 0, "first": error})
        entry["count"] += items
        self.failures += items


def cached_call(
    cache: CallCache,
    backend: Backend,
    capability: str,
    inputs: Sequence[Any],
    params: SamplingParams | dict[str, Any] | None = None,
    batch_size: int = 16,
    on_batch: Callable[[int, int], None] | None = None,
    step: str = "",
    row_ids: Sequence[str] | None = None,
    sample_ids: Sequence[str] | None = None,
    breaker: Any = None,
    stats: CallStats | None = None,
) -> tuple[list[Any], CallStats]:
    """Results of `backend.<capability>` for every input, computing only what is missing.

    Inputs per capability: `generate` and `next_token_distribution` take prompts;
    `logprobs` and `hidden_states` take (prompt, continuation) pairs. `params` is a
    SamplingParams for `generate` (each of its n samples is cached on its own, keyed by sample
    index, so raising n reuses the samples already made) and {"candidates": [...]} for
    `next_token_distribution`; for `hidden_states` its items are passed to the backend as
    options (e.g. {"pool": "sum"}). Identical inputs are computed once, except sampled generations
    with `sample_ids`: each distinct sample id is its own draw (own key, own seed). Missing
    items go to the backend in batches of `batch_size`, and each batch is committed before the
    next starts. A failing batch is retried item by item; an item that still fails is
    quarantined under (step, row id) and its result is None. After each batch, `breaker`
    (anything with `record(ok, errors)`) may raise to stop a run whose calls keep failing.
    `on_batch(done, total)` reports progress in items. `stats`, if given, is filled as the
    call goes, so a caller still sees the counts when the breaker raises.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    for name, values in (("row_ids", row_ids), ("sample_ids", sample_ids)):
        if values is not None and len(values) != len(inputs):
            raise ValueError(f"{name} and inputs differ in length")
    plan = _Plan(backend, capability, params)
    if not plan.sampled:
        sample_ids = None  # greedy and scoring calls are deterministic: share identical inputs
    stats = stats if stats is not None else CallStats()
    total = len(inputs)
    samples = [None] * total if sample_ids is None else [str(s) for s in sample_ids]
    keys = [plan.keys(item, sid) for item, sid in zip(inputs, samples, strict=True)]
    found = cache.get_many(k for ks in keys for k in ks)
    results: list[Any] = [None] * total
    todo: dict[tuple[str, ...], list[int]] = {}  # identical items are computed once
    for i, ks in enumerate(keys):
        if all(k in found for k in ks):
            results[i] = plan.assemble([found[k] for k in ks])
            stats.hits += 1
        else:
            todo.setdefault(ks, []).append(i)
    done = stats.hits
    if on_batch:
        on_batch(done, total)
    pending = list(todo.items())
    for start in range(0, len(pending), batch_size):
        batch = pending[start : start + batch_size]
        first = [idx[0] for _, idx in batch]
        seeds = None if sample_ids is None else [plan.seed_of(samples[i]) for i in first]
        outs = _run_batch(plan, [inputs[i] for i in first], stats, seeds)
        rows, ok, errors = [], 0, []
        for (ks, idx), out in zip(batch, outs, strict=True):
            if isinstance(out, CallFailed):
                stats.failed(out.error, len(idx))
                errors.append(out.error)
                for i in idx:
                    row = str(row_ids[i]) if row_ids is not None else str(i)
                    cache.quarantine(ks[0], step, row, out.error)
                continue
            ok += 1
            if capability == "generate":
                stats.tokens += sum(g.completion_tokens or 0 for g in out)
            parts = plan.split(out)
            # keep samples already cached (first write wins), use fresh ones for the rest
            parts = [found.get(k, part) for k, part in zip(ks, parts, strict=True)]
            rows.extend(
                (k, capability, part) for k, part in zip(ks, parts, strict=True) if k not in found
            )
            value = plan.assemble(parts)
            for i in idx:
                results[i] = value
            stats.computed += len(idx)
        cache.put_many(rows)
        done += sum(len(idx) for _, idx in batch)
        if on_batch:
            on_batch(done, total)
        if breaker is not None:
            breaker.record(ok, errors)
    return results, stats


def _run_batch(
    plan: _Plan, items: list[Any], stats: CallStats, seeds: list[int] | None = None
) -> list[Any]:
    """One backend call for the batch; if it raises, one call per item, failures as CallFailed."""
    try:
        stats.calls += 1
        return plan.call(items, seeds)
    except Exception as batch_error:
        if len(items) == 1:
            return [CallFailed(_describe(batch_error))]
    outs: list[Any] = []
    for k, item in enumerate(items):
        try:
            stats.calls += 1
            outs.extend(plan.call([item], None if seeds is None else [seeds[k]]))
        except Exception as error:
            outs.append(CallFailed(_describe(error)))
    return outs


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


class _Plan:
    """How one capability maps inputs to backend calls, cache keys and results."""

    def __init__(self, backend: Backend, capability: str, params: Any) -> None:
        require(backend, capability)
        self.backend = backend
        self.capability = capability
        self.fingerprint = backend.fingerprint()
        self.n = 1
        self.sampled = False
        if capability == "generate":
            if params is None:
                params = SamplingParams()
            elif isinstance(params, dict):
                params = SamplingParams(**{**params, "stop": tuple(params.get("stop", ())),
                                           "first_token_ban": tuple(params.get("first_token_ban", ()))})
            self.sampling: SamplingParams = params
            self.n = params.n
            self.sampled = params.temperature > 0
            self.key_params = {k: v for k, v in params.as_dict().items() if k != "n"}
        elif capability == "next_token_distribution":
            if not params or "candidates" not in params:
                raise ValueError("next_token_distribution needs params={'candidates': [...]}")
            self.candidates = list(params["candidates"])
            # "ids": candidates are read at their in-context token ids (models.candidates);
            # results from before that rule are not reused
            self.key_params = {"candidates": self.candidates, "ids": "in-context"}
        else:
            self.key_params = dict(params or {})

    def keys(self, item: Any, sample_id: str | None = None) -> tuple[str, ...]:
        if self.capability == "generate":
            return tuple(
                make_key(self.fingerprint, self.capability, self.key_params, item, j, sample_id)
                for j in range(self.n)
            )
        return (make_key(self.fingerprint, self.capability, self.key_params, item),)

    def seed_of(self, sample_id: str) -> int:
        return sample_seed(self.sampling.seed, sample_id)

    def call(self, items: list[Any], seeds: list[int] | None = None) -> list[Any]:
        b = self.backend
        if self.capability == "generate":
            if seeds is None:
                out = b.generate(items, self.sampling)
            else:
                out = b.generate(items, self.sampling, seeds=seeds)
        elif self.capability == "next_token_distribution":
            out = b.next_token_distribution(items, self.candidates)
        elif self.capability == "reward":
            out = b.reward(items)
        elif self.capability in ("logprobs", "hidden_states"):
            prompts = [p for p, _ in items]
            conts = [c for _, c in items]
            options = self.key_params if self.capability == "hidden_states" else {}
            out = getattr(b, self.capability)(prompts, conts, **options)
        else:
            raise ValueError(f"unknown capability {self.capability!r}")
        if len(out) != len(items):
            raise RuntimeError(f"backend returned {len(out)} results for {len(items)} inputs")
        if self.capability == "generate":
            for result in out:
                if not isinstance(result, CallFailed) and len(result) != self.n:
                    raise RuntimeError(f"backend returned {len(result)} samples, not {self.n}")
        return list(out)

    def split(self, result: Any) -> list[Any]:
        """One result into its cache entries (the n samples of a generation)."""
        return list(result) if self.capability == "generate" else [result]

    def assemble(self, parts: list[Any]) -> Any:
        return list(parts) if self.capability == "generate" else parts[0]
