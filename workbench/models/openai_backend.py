"""The `openai` backend: any OpenAI-compatible HTTP server (vllm serve, TGI, llama.cpp, hosted APIs).

Every item of a batch is its own HTTP request, sent through a bounded thread pool and retried
on its own; an item that still fails after retries comes back as `CallFailed`, so one bad row
never loses the batch (the call cache quarantines it and the run goes on).

How each capability maps onto the API:

- `generate`: chat prompts go to `/chat/completions`, raw text prompts to `/completions`
  (with `endpoint: completions`, chat prompts are rendered with `chat_template` and go to
  `/completions` too). One request per sample, with `seed + k` for sample k: servers such as
  llama-cpp-python ignore `n`, `usage` is then exact per sample, and a resumed run can redo
  sample k alone. Stop strings are also cut client side, whatever the server does.
- `logprobs` (option `logprobs_method`), two ways, because llama.cpp servers cannot echo:
  * `grammar` (llama-cpp-python's and llama.cpp's own server): the server's tokenize route
    (`/extras/tokenize` or `/tokenize`) gives the continuation's token ids as the joined text
    tokenizes (tokenized apart when a token spans the edge), then `/completions` on the
    prompt with the token-level GBNF grammar `root ::= <[id1]> <[id2]> ...`,
    `temperature: 0, logprobs: 1` makes the server generate exactly those tokens and report
    each one's log-prob from the raw logits (the grammar only masks the sampler's copy). A
    character-level grammar is not enough: it lets the model spell an unlikely text with odd
    tokens (' ', 'a', ' ', 'pu', 'r', ...). The answer must spell the continuation with as
    many tokens as forced, or the item fails. The continuation is decoded one token at a time
    here, so on a quantized model the numbers differ slightly (up to ~0.1 nats per token)
    from one batched pass over the whole text.
  * `echo` (vLLM, legacy OpenAI, most others): `/completions` over `prompt + continuation`
    with `echo: true, logprobs: 1, max_tokens: 1` (llama-cpp-python reads `max_tokens: 0` as
    "unlimited"). Echoed entries at or past the end of the text (the generated token) are
    dropped; the continuation is the last `k` of the rest, where `k` is `usage.prompt_tokens`
    of the joined text minus that of the prompt alone (one cheap request per distinct prompt,
    cached), so no `/tokenize` endpoint is needed and BOS handling cancels out. The boundary
    token is the one tokenized from the joined text, as in the transformers backend.
  * `auto` (default) probes once per backend by scoring an improbable text the `grammar` way:
    a server with a tokenize route that returns it verbatim gets `grammar`; any server that
    answers otherwise (404 on tokenize, grammar ignored or rejected) gets `echo`.
  Why not echo everywhere: llama-cpp-python 0.3.x echoes each prompt token with the log-prob
  of the *following* position (abetlen/llama-cpp-python#1983, off by one), and llama.cpp's
  own server returns no prompt log-probs at all.
- `next_token_distribution`: `/completions` with `max_tokens: 1, logprobs: top_logprobs`
  (default 20; hosted OpenAI caps it at 5), read the first position's `top_logprobs`; a
  candidate string that is not exactly one of those tokens gets `-inf`. If the server returned
  no position at all (the model chose end-of-text at once, so nothing was generated), the
  request is repeated once with `min_tokens: 1`, which vLLM and llama-cpp-python honour
  without changing the reported log-probs.
- `hidden_states` is not offered.

`logprobs` and `next_token_distribution` need raw text: the OpenAI API has no way to score
text after a chat template. Chat prompts are therefore rendered here with the Jinja2
`chat_template` option (e.g. the model's `tokenizer.chat_template`); without it they raise a
clear `ValueError` before any request is sent.

The API key is read from the environment variable named by `api_key_env` at construction and
never stored in config or in the fingerprint.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

from workbench.models.backends import BACKENDS
from workbench.models.base import (
    CallFailed,
    CapabilityError,
    Generation,
    Prompt,
    SamplingParams,
    TokenLogprobs,
)
from workbench.models.fingerprint import text_digest
from workbench.models.openai_scoring import Scorer
from workbench.models.openai_transport import RequestFailed, Transport, first_choice

log = logging.getLogger(__name__)

class OpenAIBackend:
    """A model behind an OpenAI-compatible server, called over HTTP with retries.

    Options (the `options:` of a pipeline's model entry):
    base_url: default $OPENAI_BASE_URL, else https://api.openai.com/v1.
    api_key_env: name of the environment variable holding the key (default OPENAI_API_KEY);
        the key itself never goes into config.
    concurrency: requests in flight at once (default 8).
    max_retries, backoff, max_backoff: retries after the first attempt on 408/409/425/429,
        5xx, connection errors and timeouts; the wait is backoff * 2**attempt with jitter,
        at least Retry-After, at most max_backoff seconds. Other 4xx fail at once.
    timeout: seconds per request (connect, read, write each).
    endpoint: "chat" sends chat prompts to /chat/completions (the server renders them);
        "completions" renders them here with chat_template and uses /completions.
    chat_template, chat_template_kwargs: a Jinja2 chat template (e.g. the model's
        tokenizer.chat_template) and extra variables; bos_token and eos_token default to ""
        because the server adds BOS itself. Needed to score chat prompts.
    top_logprobs: top-k asked for in next_token_distribution (default 20).
    logprobs_method: "auto", "grammar" or "echo" (see the module docstring).
    schema_format: how JSON schemas are sent as `response_format`: "json_schema" (OpenAI,
        vLLM), "json_object" with a `schema` (llama-cpp-python), or "auto" (the first, then
        the second if the server refuses it).
    extra_body: fields merged into every request body (server-specific extensions).
    revision: free text added to the fingerprint, e.g. the served checkpoint's version.
    """

    backend: ClassVar[str] = "openai"
    capabilities: ClassVar[frozenset[str]] = BACKENDS["openai"].capabilities  # the table's

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        timeout: float = 120.0,
        endpoint: Literal["chat", "completions"] = "chat",
        chat_template: str | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
        top_logprobs: int = 20,
        logprobs_method: Literal["auto", "grammar", "echo"] = "auto",
        schema_format: Literal["auto", "json_schema", "json_object"] = "auto",
        extra_body: dict[str, Any] | None = None,
        revision: str | None = None,
    ) -> None:
        if endpoint not in ("chat", "completions"):
            raise ValueError(
                f"openai backend: endpoint must be 'chat' or 'completions', not {endpoint!r}"
            )
        if logprobs_method not in ("auto", "grammar", "echo"):
            raise ValueError(
                "openai backend: logprobs_method must be 'auto', 'grammar' or 'echo', "
                f"not {logprobs_method!r}"
            )
        if concurrency < 1:
            raise ValueError("openai backend: concurrency must be at least 1")
        if max_retries < 0:
            raise ValueError("openai backend: max_retries must be >= 0")
        if endpoint == "completions" and chat_template is None:
            log.info(
                "openai backend: endpoint=completions without chat_template; chat prompts will fail"
            )
        self.model = model
        self.transport = Transport(base_url, api_key_env, concurrency, max_retries, backoff,
                                   max_backoff, timeout, dict(extra_body or {}))
        self.scorer = Scorer(self.transport, model, logprobs_method, top_logprobs)
        self.base_url = self.transport.base_url
        self.endpoint = endpoint
        self.chat_template = chat_template
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.top_logprobs = top_logprobs
        self.logprobs_method = logprobs_method
        self._schema_format = schema_format
        self.extra_body = self.transport.extra_body
        self.revision = revision
        self._template: Any = None

    @property
    def _method(self) -> str | None:
        """The scoring way in use (`grammar` or `echo`; None until probed)."""
        return self.scorer.method

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Free the connection pool and worker threads."""
        self.transport.close()

    def __enter__(self) -> OpenAIBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fingerprint(self) -> dict[str, Any]:
        """Every option that can change an answer: the same model name on another server, with
        another template, template variables, top-k or extra request fields is another model.
        Only transport options (key variable, concurrency, retries, timeouts) are left out."""
        return {
            "backend": self.backend,
            "model": self.model,
            "base_url": self.base_url,
            "endpoint": self.endpoint,
            "logprobs_method": self.logprobs_method,
            "revision": self.revision,
            "chat_template": text_digest(self.chat_template),
            "chat_template_kwargs": self.chat_template_kwargs,
            "top_logprobs": self.top_logprobs,
            "extra_body": self.extra_body,
        }

    # -- capabilities ----------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        seeds: Sequence[int] | None = None,
    ) -> list[list[Generation] | CallFailed]:
        """`params.n` samples per prompt, one request each (seed + k for sample k; the
        prompt's own seed from `seeds` where given)."""
        jobs: list[Callable[[], Generation]] = []
        for i, prompt in enumerate(prompts):
            seed = params.seed if seeds is None else seeds[i]
            for k in range(params.n):
                jobs.append(self._generation_job(prompt, params, k, seed))
        flat = self.transport.run(jobs)
        out: list[list[Generation] | CallFailed] = []
        for i in range(len(prompts)):
            samples = flat[i * params.n : (i + 1) * params.n]
            failed = next((s for s in samples if isinstance(s, CallFailed)), None)
            out.append(failed if failed is not None else samples)  # type: ignore[arg-type]
        return out

    def logprobs(
        self, prompts: Sequence[Prompt], continuations: Sequence[str]
    ) -> list[TokenLogprobs | CallFailed]:
        """Summed log-prob of each continuation after its prompt (grammar-forced or echoed)."""
        if len(prompts) != len(continuations):
            raise ValueError("logprobs: prompts and continuations differ in length")
        texts = [self._raw_text(p, "logprobs") for p in prompts]
        return self.transport.run(
            [
                lambda t=t, c=c: self.scorer.score(t, c)
                for t, c in zip(texts, continuations, strict=True)
            ]
        )

    def next_token_distribution(
        self, prompts: Sequence[Prompt], candidates: Sequence[str]
    ) -> list[dict[str, float] | CallFailed]:
        """Log-prob of each candidate as the next token; -inf when not in the server's top-k."""
        texts = [self._raw_text(p, "next_token_distribution") for p in prompts]
        cands = list(candidates)
        return self.transport.run([lambda t=t: self.scorer.next_token(t, cands) for t in texts])

    def hidden_states(
        self, prompts: Sequence[Prompt], continuations: Sequence[str]
    ) -> list[Any | CallFailed]:
        """Not available over the OpenAI API."""
        raise CapabilityError(
            "backend 'openai' cannot do 'hidden_states' (the OpenAI API does not expose them)"
        )

    # -- per-item work ---------------------------------------------------------------------

    def _generation_job(
        self, prompt: Prompt, params: SamplingParams, k: int, seed: int
    ) -> Callable[[], Generation]:
        body: dict[str, Any] = {
            "model": self.model,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
            "seed": seed + k,
            "n": 1,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if params.shapes_first_token:
            raise CapabilityError("the openai backend cannot shape the first token's logits "
                                  "(Magpie's logits processors); use backend: transformers")
        if isinstance(prompt, str):
            path, body["prompt"] = "/completions", prompt
        elif self.endpoint == "chat":
            path, body["messages"] = "/chat/completions", [dict(m) for m in prompt]
            if _is_prefill(body["messages"]):  # vLLM's way to continue the last turn
                body.update(continue_final_message=True, add_generation_prompt=False)
        else:
            path, body["prompt"] = "/completions", self._raw_text(prompt, "generate")

        def job() -> Generation:
            if params.json_schema is None:
                data = self.transport.post(path, body)
            else:
                data = self._post_with_schema(path, body, params.json_schema)
            choice = first_choice(data)
            trace = None
            if path == "/chat/completions":
                message = choice.get("message") or {}
                text = message.get("content") or ""
                trace = _trace(message)
            else:
                text = choice.get("text") or ""
            text, cut = _cut_at_stop(text, params.stop)
            reason = choice.get("finish_reason")
            usage = data.get("usage") or {}
            return Generation(
                text=text,
                finish_reason="length" if reason == "length" and not cut else "stop",
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
                reasoning=trace,
            )

        return job

    def _post_with_schema(self, path: str, body: dict[str, Any],
                          schema: dict[str, Any]) -> dict[str, Any]:
        """Schema-constrained output. OpenAI and vLLM take `{"type": "json_schema", ...}`,
        llama-cpp-python only `{"type": "json_object", "schema": ...}`; with `schema_format:
        auto` the second form is used once a server refuses the first, for the backend's life."""
        forms = {"json_schema": {"type": "json_schema", "json_schema": {
                     "name": "answer", "schema": schema, "strict": True}},
                 "json_object": {"type": "json_object", "schema": schema}}
        chosen = self._schema_format if self._schema_format != "auto" else "json_schema"
        try:
            return self.transport.post(path, {**body, "response_format": forms[chosen]})
        except RequestFailed as exc:
            refused = exc.status in (400, 422, 500) and "json_object" in str(exc)
            if self._schema_format != "auto" or not refused:
                raise
            self._schema_format = "json_object"
            return self.transport.post(path, {**body, "response_format": forms["json_object"]})

    # -- prompts ---------------------------------------------------------------------------

    def render(self, prompt: Prompt, add_generation_prompt: bool = True) -> str:
        """The text a chat prompt becomes under the `chat_template` option."""
        return self._raw_text(prompt, "render", add_generation_prompt)

    def _raw_text(self, prompt: Prompt, what: str, add_generation_prompt: bool = True) -> str:
        if isinstance(prompt, str):
            return prompt
        if self.chat_template is None:
            raise ValueError(
                f"openai backend: {what} with a chat prompt needs raw text, and the OpenAI API "
                "cannot render a chat template for scoring; set options.chat_template to the "
                "model's Jinja2 chat template, or pass raw text prompts"
            )
        if self._template is None:
            import jinja2.sandbox

            env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

            def raise_exception(message: str) -> None:
                raise jinja2.exceptions.TemplateError(message)

            env.globals["raise_exception"] = raise_exception
            self._template = env.from_string(self.chat_template)
        kwargs = {"bos_token": "", "eos_token": "", **self.chat_template_kwargs}
        messages = [dict(m) for m in prompt]
        if _is_prefill(messages) and add_generation_prompt:
            # continue the final assistant turn: render it closed, then cut after its text
            text = self._template.render(messages=messages, add_generation_prompt=False, **kwargs)
            end = text.rfind(messages[-1]["content"])
            return text[: end + len(messages[-1]["content"])] if end >= 0 else text
        return self._template.render(
            messages=messages, add_generation_prompt=add_generation_prompt, **kwargs
        )


def _is_prefill(messages: list[dict[str, Any]]) -> bool:
    return bool(messages) and messages[-1].get("role") == "assistant"


def _trace(message: dict[str, Any]) -> str | None:
    """A reasoning server's trace beside the answer: `reasoning_content` (DeepSeek, vLLM,
    llama.cpp's server with --reasoning-format) or `reasoning` (OpenRouter, newer vLLM)."""
    for key in ("reasoning_content", "reasoning"):
        value = message.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


def _cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut at the earliest stop string, in case the server left it in."""
    hits = [i for s in stop if s and (i := text.find(s)) >= 0]
    return (text[: min(hits)], True) if hits else (text, False)
