"""Scoring text through an OpenAI-compatible server, which has no scoring route of its own:
a continuation's log-probs forced by a token grammar (llama.cpp servers) or echoed
(vLLM and most others), and the next token's distribution from the top log-probs (the
module docstring of `openai_backend` says why there are two ways)."""

from __future__ import annotations

import logging
import math
import threading
from typing import Any, Literal

from workbench.models.base import TokenLogprobs
from workbench.models.openai_transport import (
    RequestFailed,
    Transport,
    first_choice,
    first_top_logprobs,
)

log = logging.getLogger(__name__)

# Tokenize routes at the server root: path -> (text field, other fields). Both answer
# {"tokens": [ids]}: llama-cpp-python's /extras/tokenize and llama.cpp server's /tokenize.
_TOKENIZE_ROUTES: dict[str, tuple[str, dict[str, Any]]] = {
    "/extras/tokenize": ("input", {}),
    "/tokenize": ("content", {"add_special": False}),
}


class Scorer:
    """Scores for one model on one server; the scoring way is probed once (`auto`)."""

    def __init__(self, transport: Transport, model: str,
                 method: Literal["auto", "grammar", "echo"], top_logprobs: int) -> None:
        self.transport, self.model, self.top_logprobs = transport, model, top_logprobs
        self.method: str | None = None if method == "auto" else method
        self._prompt_tokens: dict[str, int] = {}
        self._prompt_ids: dict[str, list[int]] = {}
        self._tokenize_path: str | None = None
        self._lock = threading.Lock()
        self._probe_lock = threading.Lock()

    def score(self, prompt: str, continuation: str) -> TokenLogprobs:
        if not continuation:
            return TokenLogprobs(total=0.0)
        if self._scoring_method() == "grammar":
            return self._score_by_grammar(prompt, continuation)
        return self._score_by_echo(prompt, continuation)

    def _scoring_method(self) -> str:
        """`grammar` if the server tokenizes and honours token grammars (probed once), else `echo`."""
        if self.method is not None:
            return self.method
        with self._probe_lock:
            if self.method is None:
                probe = " zq7 vexil-9!"  # no model writes this unforced
                try:
                    honoured = self._score_by_grammar("Hi", probe).tokens != []
                except RequestFailed as exc:
                    if exc.status is None and not exc.unsupported:
                        raise  # the server is unreachable: decide later, not now
                    honoured = False  # no tokenize route, or grammars rejected or ignored
                self.method = "grammar" if honoured else "echo"
                log.info("openai backend: scoring continuations by %s", self.method)
            return self.method

    def _score_by_grammar(self, prompt: str, continuation: str) -> TokenLogprobs:
        ids = self._continuation_ids(prompt, continuation)
        data = self.transport.post(
            "/completions",
            {
                "model": self.model,
                "prompt": prompt,
                # token-level GBNF: exactly these tokens, then end of text
                "grammar": "root ::= " + " ".join(f"<[{i}]>" for i in ids),
                "max_tokens": len(ids) + 1,
                "temperature": 0.0,
                "logprobs": 1,
            },
        )
        choice = first_choice(data)
        lp = choice.get("logprobs") or {}
        values = lp.get("token_logprobs") or []
        if choice.get("text") != continuation or len(values) != len(ids):
            raise RequestFailed(
                "grammar-forced scoring: the server generated "
                f"{str(choice.get('text'))[:80]!r} ({len(values)} tokens) instead of the "
                f"continuation ({len(ids)} tokens); does it honour `grammar`? "
                "set logprobs_method: echo otherwise",
                unsupported=True,
            )
        if any(v is None for v in values):
            raise RequestFailed("grammar-forced scoring: the server returned no token_logprobs")
        floats = [float(v) for v in values]
        tokens = [str(t) for t in lp.get("tokens") or []]
        return TokenLogprobs(total=math.fsum(floats), tokens=tokens, logprobs=floats)

    def _continuation_ids(self, prompt: str, continuation: str) -> list[int]:
        """The continuation's token ids as the joined text tokenizes (apart if the edge merges)."""
        with self._lock:
            p_ids = self._prompt_ids.get(prompt)
        if p_ids is None:
            p_ids = self._tokenize(prompt)
            with self._lock:
                if len(self._prompt_ids) > 10_000:
                    self._prompt_ids.clear()
                self._prompt_ids[prompt] = p_ids
        joint = self._tokenize(prompt + continuation)
        if joint[: len(p_ids)] == p_ids and len(joint) > len(p_ids):
            return joint[len(p_ids) :]
        return self._tokenize(continuation)  # a token spans the edge: tokenize apart

    def _tokenize(self, text: str) -> list[int]:
        """Token ids from the server: llama-cpp-python's /extras/tokenize or llama.cpp's /tokenize."""
        paths = [self._tokenize_path] if self._tokenize_path else list(_TOKENIZE_ROUTES)
        for path in paths:
            key, extra = _TOKENIZE_ROUTES[path]
            body = {key: text, **extra}
            url = self.transport.root_url + path
            try:
                data = self.transport.post(url, body)
            except RequestFailed as exc:
                if exc.status in (400, 404, 405, 422) and self._tokenize_path is None:
                    continue  # not this server's route; try the next
                raise
            tokens = data.get("tokens")
            if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
                continue
            self._tokenize_path = path
            return tokens
        raise RequestFailed(
            "the server has no tokenize endpoint (/extras/tokenize or /tokenize)", unsupported=True
        )

    def _score_by_echo(self, prompt: str, continuation: str) -> TokenLogprobs:
        full = prompt + continuation
        data = self.transport.post(
            "/completions",
            {
                "model": self.model,
                "prompt": full,
                "echo": True,
                "logprobs": 1,
                "max_tokens": 1,
                "temperature": 0.0,
            },
        )
        choice = first_choice(data)
        lp = choice.get("logprobs") or {}
        tokens = list(lp.get("tokens") or [])
        values = list(lp.get("token_logprobs") or [])
        offsets = list(lp.get("text_offset") or [])
        usage = data.get("usage") or {}
        if not values or "prompt_tokens" not in usage:
            raise RequestFailed(
                "server returned no echoed token_logprobs/usage; it does not support "
                "echo with logprobs on /completions"
            )
        if len(offsets) == len(values):  # drop generated entries: they start at the text's end
            while offsets and offsets[-1] >= len(full):
                offsets.pop(), values.pop(), tokens.pop()
        else:
            generated = int(usage.get("completion_tokens") or 0)
            if generated:
                tokens, values = tokens[:-generated], values[:-generated]
        k = int(usage["prompt_tokens"]) - self._count_prompt_tokens(prompt)
        if k <= 0 or k > len(values):
            raise RequestFailed(
                f"cannot locate the continuation: {k} continuation tokens, {len(values)} echoed"
            )
        cont_values = values[-k:]
        if any(v is None for v in cont_values):
            raise RequestFailed("the continuation starts the text (no log-prob there)")
        floats = [float(v) for v in cont_values]
        return TokenLogprobs(
            total=math.fsum(floats), tokens=[str(t) for t in tokens[-k:]], logprobs=floats
        )

    def _count_prompt_tokens(self, prompt: str) -> int:
        """Tokens of the prompt alone as the server counts them (one cheap request, cached)."""
        with self._lock:
            if prompt in self._prompt_tokens:
                return self._prompt_tokens[prompt]
        data = self.transport.post(
            "/completions",
            {"model": self.model, "prompt": prompt, "max_tokens": 1, "temperature": 0.0},
        )
        usage = data.get("usage") or {}
        if "prompt_tokens" not in usage:
            raise RequestFailed(
                "server reports no usage.prompt_tokens; cannot split prompt and continuation"
            )
        n = int(usage["prompt_tokens"])
        with self._lock:
            if len(self._prompt_tokens) > 10_000:
                self._prompt_tokens.clear()
            self._prompt_tokens[prompt] = n
        return n

    def next_token(self, prompt: str, candidates: list[str]) -> dict[str, float]:
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": 1,
            "logprobs": self.top_logprobs,
            "temperature": 0.0,
        }
        top = first_top_logprobs(self.transport.post("/completions", body))
        if top is None:  # nothing generated: the model picked end-of-text first
            top = first_top_logprobs(self.transport.post("/completions", {**body, "min_tokens": 1}))
        if top is None:
            raise RequestFailed("server returned no top_logprobs for the next token")
        return {c: float(top[c]) if c in top else -math.inf for c in candidates}
