"""The SQLite call cache: hits, quarantine, and resuming after a SIGKILL, over the real model."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest

from workbench.models import load_backend
from workbench.models.base import CallFailed, CapabilityError, Generation, SamplingParams
from workbench.models.cache import CallCache, cached_call, make_key
from workbench.models.spec import ModelSpec

PROMPTS = [[{"role": "user", "content": f"Say a word about the number {i}."}] for i in range(5)]


class Counting:
    """Wraps the real backend and counts what reaches it (the model itself is untouched)."""

    def __init__(self, real, poison: str | None = None, fail_as_result: bool = False):
        self.real = real
        self.backend = real.backend
        self.capabilities = real.capabilities
        self.calls: Counter[str] = Counter()
        self.items: Counter[str] = Counter()
        self.poison = poison
        self.fail_as_result = fail_as_result

    def fingerprint(self):
        return self.real.fingerprint()

    def _count(self, name: str, prompts) -> None:
        self.calls[name] += 1
        self.items[name] += len(prompts)

    def _poisoned(self, prompt) -> bool:
        return self.poison is not None and self.poison in json.dumps(prompt)

    def generate(self, prompts, params):
        self._count("generate", prompts)
        if any(self._poisoned(p) for p in prompts):
            if self.fail_as_result:  # what an HTTP backend does after its own retries
                good = [p for p in prompts if not self._poisoned(p)]
                outs = iter(self.real.generate(good, params))
                return [
                    CallFailed("HTTP 500") if self._poisoned(p) else next(outs) for p in prompts
                ]
            raise RuntimeError("poisoned prompt")
        return self.real.generate(prompts, params)

    def logprobs(self, prompts, continuations):
        self._count("logprobs", prompts)
        return self.real.logprobs(prompts, continuations)

    def next_token_distribution(self, prompts, candidates):
        self._count("next_token_distribution", prompts)
        return self.real.next_token_distribution(prompts, candidates)

    def hidden_states(self, prompts, continuations):
        self._count("hidden_states", prompts)
        return self.real.hidden_states(prompts, continuations)


@pytest.fixture(scope="session")
def real():
    return load_backend(ModelSpec(backend="transformers", model="embedded"))


@pytest.fixture
def cache(tmp_path):
    with CallCache(tmp_path / "cache" / "calls.sqlite") as c:
        yield c


def test_key_is_canonical():
    fp = {"backend": "x", "model": "m"}
    a = make_key(
        fp, "generate", {"temperature": 0.5, "top_p": 1.0}, [{"role": "user", "content": "hi"}], 0
    )
    b = make_key(
        {"model": "m", "backend": "x"},
        "generate",
        {"top_p": 1.0, "temperature": 0.5},
        ({"content": "hi", "role": "user"},),
        0,
    )
    assert a == b
    assert a != make_key(
        fp, "generate", {"temperature": 0.6, "top_p": 1.0}, [{"role": "user", "content": "hi"}], 0
    )
    assert a != make_key(
        fp, "generate", {"temperature": 0.5, "top_p": 1.0}, [{"role": "user", "content": "hi"}], 1
    )


def test_store_roundtrip_and_quarantine(tmp_path):
    path = tmp_path / "calls.sqlite"
    with CallCache(path) as c:
        c.put_many([("k1", "generate", Generation("hi", "stop", 3, 1))])
        c.put_many([("k2", "next_token_distribution", {"1": float("-inf"), "2": -0.5})])
        c.put_many([("k3", "hidden_states", np.ones((2, 3), dtype=np.float32))])
        c.put_many([("k1", "generate", Generation("other", "stop", 3, 1))])  # first write wins
        c.quarantine("k4", "judge", "row-9", "boom")
    with CallCache(path) as c:  # reopened: everything persisted
        got = c.get_many(["k1", "k2", "k3", "k4"])
        assert got["k1"] == Generation("hi", "stop", 3, 1)
        assert got["k2"] == {"1": float("-inf"), "2": -0.5}
        np.testing.assert_array_equal(got["k3"], np.ones((2, 3)))
        assert "k4" not in got and len(c) == 3
        assert [(f["step"], f["row_id"], f["error"]) for f in c.failed()] == [
            ("judge", "row-9", "boom")
        ]
        assert c.clear_failed() == 1 and c.failed() == []
        mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"


@pytest.mark.slow
def test_second_call_makes_no_backend_call(real, cache):
    backend = Counting(real)
    params = SamplingParams(max_new_tokens=6)
    first, stats = cached_call(cache, backend, "generate", PROMPTS, params, batch_size=2)
    assert (stats.hits, stats.computed, stats.calls, stats.failures) == (0, 5, 3, 0)
    assert backend.items["generate"] == 5
    progress = []
    again, stats = cached_call(
        cache,
        backend,
        "generate",
        PROMPTS,
        params,
        batch_size=2,
        on_batch=lambda d, t: progress.append((d, t)),
    )
    assert (stats.hits, stats.calls) == (5, 0)
    assert backend.calls["generate"] == 3 and again == first
    assert progress == [(5, 5)]
    # other sampling parameters are other keys
    _, stats = cached_call(
        cache, backend, "generate", PROMPTS[:1], SamplingParams(max_new_tokens=7)
    )
    assert stats.calls == 1


@pytest.mark.slow
def test_samples_are_cached_one_by_one(real, cache):
    backend = Counting(real)
    two, _ = cached_call(
        cache,
        backend,
        "generate",
        PROMPTS[:2],
        SamplingParams(n=2, temperature=1.0, max_new_tokens=6),
    )
    three, stats = cached_call(
        cache,
        backend,
        "generate",
        PROMPTS[:2],
        SamplingParams(n=3, temperature=1.0, max_new_tokens=6),
    )
    assert stats.computed == 2 and [r[:2] for r in three] == two and all(len(r) == 3 for r in three)
    _, stats = cached_call(
        cache,
        backend,
        "generate",
        PROMPTS[:2],
        SamplingParams(n=1, temperature=1.0, max_new_tokens=6),
    )
    assert stats.hits == 2 and stats.calls == 0


@pytest.mark.slow
def test_repeated_identical_prompt_gets_independent_samples(real, cache):
    """Magpie sends one pre-query template many times: each row is its own draw, and a second
    run answers every row from the cache with the same texts."""
    template = "<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n<|im_start|>user\n"
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=8, stop=("\n",), seed=3)
    rows = [f"magpie-{i}" for i in range(4)]
    first, stats = cached_call(cache, real, "generate", [template] * 4, params,
                               batch_size=4, sample_ids=rows)
    texts = [g.text for gens in first for g in gens]
    assert stats.computed == 4 and stats.calls == 1  # one batch, four independent rows
    assert len(set(texts)) == 8, texts  # 4 rows x n=2 samples, all distinct
    again, stats = cached_call(cache, real, "generate", [template] * 4, params,
                               sample_ids=rows)
    assert stats.hits == 4 and stats.calls == 0
    assert [g.text for gens in again for g in gens] == texts
    # the same rows in another order or batch size get the same samples (keyed by row)
    shuffled, _ = cached_call(cache, real, "generate", [template] * 2, params,
                              sample_ids=[rows[3], rows[0]])
    assert [g.text for g in shuffled[0]] == texts[6:8]
    # without sample ids, identical inputs are one call with one shared answer
    shared, stats = cached_call(cache, real, "generate", [template] * 3,
                                SamplingParams(temperature=1.0, max_new_tokens=8, seed=9))
    assert stats.computed == 3 and len({g[0].text for g in shared}) == 1


@pytest.mark.slow
def test_scoring_capabilities_roundtrip(real, cache):
    backend = Counting(real)
    pairs = [(PROMPTS[0], "Zero is a number."), (PROMPTS[1], "One.")]
    for capability, inputs, params in [
        ("logprobs", pairs, None),
        ("hidden_states", pairs, None),
        ("next_token_distribution", PROMPTS[:2], {"candidates": ["1", "2", "3"]}),
    ]:
        first, stats = cached_call(cache, backend, capability, inputs, params)
        assert stats.computed == 2
        second, stats = cached_call(cache, backend, capability, inputs, params)
        assert stats.hits == 2 and stats.calls == 0
        if capability == "hidden_states":
            for a, b in zip(first, second, strict=True):
                np.testing.assert_array_equal(a, b)
                assert b.dtype == np.float32
        else:
            assert first == second
    # duplicates inside one call are computed once
    _, stats = cached_call(
        cache, backend, "logprobs", [pairs[0], pairs[0], (PROMPTS[2], "x")], None
    )
    assert stats.hits == 2 and stats.computed == 1 and backend.items["logprobs"] == 3


@pytest.mark.slow
def test_failing_item_is_isolated_and_quarantined(real, cache):
    backend = Counting(real, poison="POISON")
    prompts = [PROMPTS[0], [{"role": "user", "content": "POISON"}], PROMPTS[1]]
    params = SamplingParams(max_new_tokens=5)
    results, stats = cached_call(
        cache,
        backend,
        "generate",
        prompts,
        params,
        batch_size=3,
        step="sample",
        row_ids=["a", "b", "c"],
    )
    assert results[1] is None and results[0] and results[2]
    assert (stats.computed, stats.failures) == (2, 1)
    assert stats.calls == 4  # the failing batch, then one call per item
    [entry] = cache.failed()
    assert (entry["step"], entry["row_id"]) == ("sample", "b") and "poisoned" in entry["error"]
    # a rerun keeps the good rows and retries only the failed one
    _, stats = cached_call(cache, backend, "generate", prompts, params, batch_size=3, step="sample")
    assert (stats.hits, stats.calls, stats.failures) == (2, 1, 1)


@pytest.mark.slow
def test_callfailed_result_is_quarantined_without_retry(real, cache):
    backend = Counting(real, poison="POISON", fail_as_result=True)
    prompts = [PROMPTS[0], [{"role": "user", "content": "POISON"}]]
    results, stats = cached_call(
        cache, backend, "generate", prompts, SamplingParams(max_new_tokens=5), step="s"
    )
    assert results[1] is None and isinstance(results[0][0], Generation)
    assert (stats.calls, stats.failures) == (1, 1)
    assert cache.failed()[0]["error"] == "HTTP 500"


def test_missing_capability_is_refused(cache):
    class NoHidden:
        backend = "fake"
        capabilities = frozenset({"generate"})

        def fingerprint(self):
            return {}

    with pytest.raises(CapabilityError):
        cached_call(cache, NoHidden(), "hidden_states", [("p", "c")])


WORKER = textwrap.dedent(
    """
    import json, sys, time
    from workbench.models import load_backend
    from workbench.models.base import SamplingParams
    from workbench.models.cache import CallCache, cached_call
    from workbench.models.spec import ModelSpec

    cache_path, log_path, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
    real = load_backend(ModelSpec(backend="transformers", model="embedded"))

    class Logged:  # logs each batch that reaches the real model
        backend, capabilities = real.backend, real.capabilities

        def fingerprint(self):
            return real.fingerprint()

        def generate(self, prompts, params):
            names = [p[-1]["content"] for p in prompts]
            with open(log_path, "a") as log:
                log.write(json.dumps({"event": "start", "items": names}) + "\\n")
            time.sleep(delay)  # a slow model: lets the test kill us mid-batch
            out = real.generate(prompts, params)
            with open(log_path, "a") as log:
                log.write(json.dumps({"event": "end", "items": names}) + "\\n")
            return out

    prompts = [[{"role": "user", "content": f"Name a fruit, number {i}."}] for i in range(8)]
    results, stats = cached_call(
        CallCache(cache_path), Logged(), "generate", prompts, SamplingParams(max_new_tokens=8), batch_size=2
    )
    print(json.dumps({"texts": [[g.text for g in r] for r in results], "hits": stats.hits}))
    """
)


def _events(log_path):
    if not log_path.exists():
        return []
    return [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_sigkill_mid_run_resumes_without_recomputing(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cache_path, log_path = tmp_path / "calls.sqlite", tmp_path / "calls.log"
    # one thread: the workers stay quick even when other processes load the CPU
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

    proc = subprocess.Popen(
        [sys.executable, str(script), str(cache_path), str(log_path), "0.5"], env=env
    )
    deadline = time.monotonic() + 120
    while sum(e["event"] == "start" for e in _events(log_path)) < 3:  # third batch in flight
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _events(log_path)
    finished = {i for e in before if e["event"] == "end" for i in e["items"]}
    assert len(finished) == 4  # two batches done, the third lost in flight
    stored = sqlite3.connect(cache_path).execute("SELECT count(*) FROM calls").fetchone()[0]
    assert stored == 4

    out = subprocess.run(
        [sys.executable, str(script), str(cache_path), str(log_path), "0"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    resumed = json.loads(out.stdout.strip().splitlines()[-1])
    after = _events(log_path)[len(before) :]
    recalled = {i for e in after if e["event"] == "start" for i in e["items"]}
    assert recalled.isdisjoint(finished)
    assert len(recalled) == 4 and resumed["hits"] == 4

    # the same work uninterrupted (same batches, same thread count) in a fresh cache
    out = subprocess.run(
        [
            sys.executable,
            str(script),
            str(tmp_path / "fresh.sqlite"),
            str(tmp_path / "ref.log"),
            "0",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    reference = json.loads(out.stdout.strip().splitlines()[-1])
    assert reference["hits"] == 0
    assert resumed["texts"] == reference["texts"]
