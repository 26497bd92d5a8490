"""Backend over Hugging Face transformers: the embedded SmolLM2 or any local/hub causal LM.

Design choices that matter for correctness:

- Prompts are token ids built by us, never re-tokenized by `generate`: chat messages go through
  the tokenizer's chat template (add_generation_prompt=True), raw text is used as is. Both are
  tokenized with add_special_tokens=False, and a BOS is prepended only when the tokenizer
  normally adds one and the text does not already start with it (no double BOS for Magpie
  templates). SmolLM2's tokenizer adds nothing; its BOS `<|im_start|>` comes from the text.
- Sampling draws each row's tokens from its own generator, seeded from (seed, prompt, sample
  index). A row's sample therefore does not depend on which other rows share its batch, so a
  resumed run regenerates exactly what an uninterrupted one would have.
- Scoring forwards use left padding with explicit position ids (exactly equal to unpadded
  forwards) and `logits_to_keep`, so only the continuation's logits are materialized.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from workbench.models.backends import BACKENDS
from workbench.models.base import (
    CallFailed,
    Generation,
    Prompt,
    SamplingParams,
    TokenLogprobs,
)
from workbench.models.candidates import CandidateTokens
from workbench.models.fingerprint import tokenizer_digest

# Bump when a change here alters outputs for the same inputs (invalidates the call cache).
# 2: hidden_states tokenizes prompt and continuation once and starts at the last prompt token.
IMPL_VERSION = 2


class PromptEncoder:
    """Renders prompts and turns text into ids the same way for every capability (and vLLM)."""

    def __init__(self, tokenizer: Any, candidate_ids: Mapping[str, int] | None = None) -> None:
        self.tokenizer = tokenizer
        self.bos_id = _bos_to_add(tokenizer)
        self.candidates = CandidateTokens(tokenizer, candidate_ids)

    def render(self, prompt: Prompt, add_generation_prompt: bool = True) -> str:
        """Chat messages as the model's template writes them. A conversation that ends with an
        assistant turn is a prefill: that turn is left open for the model to continue (the
        Magpie tagger's `{`)."""
        if isinstance(prompt, str):
            return prompt
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("this model has no chat template: pass prompts as raw text")
        messages = [dict(m) for m in prompt]
        if messages and messages[-1].get("role") == "assistant" and add_generation_prompt:
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=False,
                continue_final_message=True)
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def encode(self, text: str) -> list[int]:
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if self.bos_id is not None and ids[:1] != [self.bos_id]:
            ids.insert(0, self.bos_id)
        return ids

    def encode_continuation(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def single_token_ids(self, texts: Sequence[str]) -> list[int]:
        """Ids of the strings that are one token in this vocabulary (others cannot be banned
        as a first token and are skipped, as a different vocabulary would split them)."""
        ids = [self.encode_continuation(t) for t in texts]
        return [t[0] for t in ids if len(t) == 1]

    def candidate_ids(self, candidates: Sequence[str], context: str) -> list[int]:
        """Id of each candidate's first token as the model emits it after `context`, the
        prompt's text (found in context, see workbench.models.candidates); the model's
        `candidate_ids:` option overrides it per candidate. Two candidates sharing an id are
        an error rather than a silent tie."""
        return self.candidates.ids(context, candidates)


def candidate_fingerprint(encoder: PromptEncoder) -> dict[str, Any]:
    """The `candidate_ids:` overrides, only when set (they change what scoring reads)."""
    overrides = encoder.candidates.overrides
    return {"candidate_ids": dict(sorted(overrides.items()))} if overrides else {}


def _bos_to_add(tokenizer: Any) -> int | None:
    bos = tokenizer.bos_token_id
    if bos is None:
        return None
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    without = tokenizer("a", add_special_tokens=False)["input_ids"]
    return bos if with_special[:1] == [bos] and without[:1] != [bos] else None


def row_seed(seed: int, text: str, sample_index: int) -> int:
    """Seed for one (prompt, sample) row, independent of batching."""
    digest = hashlib.sha256(f"{seed}\0{sample_index}\0{text}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def resolve_model_path(model: str) -> str:
    """`embedded` becomes the converted SmolLM2 checkpoint (converting it on first use)."""
    if model == "embedded":
        from workbench.models import embedded

        return str(embedded.ensure_converted())
    return model


def describe_weights(model: str, config: Any = None) -> dict[str, Any]:
    """Identify the weights by content: the embedded GGUF's digest, a local folder's files'
    digests (not names and sizes), or a hub model's commit."""
    from workbench.models.fingerprint import file_digest, folder_digest

    if model == "embedded":
        from workbench.models import embedded

        return {**embedded.weights_id(), "sha256": file_digest(embedded.gguf_path())[:16]}
    path = Path(model)
    if path.is_dir():
        return {"folder_sha256": folder_digest(path)}
    if path.is_file():
        return {"file_sha256": file_digest(path)[:16]}
    revision = getattr(config, "_commit_hash", None) if config is not None else None
    if revision:
        return {"revision": revision}
    text = json.dumps(config.to_dict(), sort_keys=True, default=str) if config else ""
    return {"config_sha256": hashlib.sha256(text.encode()).hexdigest()[:16]}


class TransformersBackend:
    """A causal LM loaded with transformers; every method is batched (`batch_size` rows)."""

    backend: ClassVar[str] = "transformers"
    capabilities: ClassVar[frozenset[str]] = BACKENDS["transformers"].capabilities  # the table's

    def __init__(
        self,
        model: str = "embedded",
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        candidate_ids: dict[str, int] | None = None,
    ) -> None:
        """`candidate_ids` maps candidate strings ("1", "A", ...) to the token id to read for
        them, in place of the id found in context (workbench.models.candidates)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a CLI run prints its own progress

        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.model_name = model
        self.batch_size = batch_size
        self.device = _pick_device(device)
        self.dtype = _pick_dtype(dtype, self.device)
        path = resolve_model_path(model)
        t0 = time.perf_counter()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype)
        self.model.to(self.device).eval()
        self.load_seconds = time.perf_counter() - t0
        self.encoder = PromptEncoder(self.tokenizer, candidate_ids)
        self._weights = describe_weights(model, self.model.config)
        self._tokenizer_digest = tokenizer_digest(self.tokenizer)
        self._eos_ids = _eos_ids(self.model, self.tokenizer)
        pad = self.tokenizer.pad_token_id
        self._pad_id = pad if pad is not None else min(self._eos_ids)
        # generate() fills every unset option from model.generation_config (a hub model may
        # ship repetition_penalty, top_k, ...). Outputs must depend on SamplingParams only, so
        # keep the shipped one aside and leave just the special token ids.
        self.shipped_generation_config = self.model.generation_config
        self.model.generation_config = GenerationConfig(
            bos_token_id=self.tokenizer.bos_token_id,
            eos_token_id=sorted(self._eos_ids),
            pad_token_id=self._pad_id,
        )
        self._specials = [t for t in self.tokenizer.all_special_tokens if t]

    def fingerprint(self) -> dict[str, Any]:
        """Weights by content, tokenizer and chat template, dtype and device type: what
        changes an output. Batch size does not (rows are seeded and padded exactly)."""
        return {
            "backend": self.backend,
            "model": self.model_name,
            "weights": self._weights,
            "tokenizer": self._tokenizer_digest,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device).split(":")[0],
            "impl": IMPL_VERSION,
            **candidate_fingerprint(self.encoder),
        }

    def render(self, prompt: Prompt, add_generation_prompt: bool = True) -> str:
        """The exact text a chat prompt becomes (Magpie detects template families with it)."""
        return self.encoder.render(prompt, add_generation_prompt)

    # -- generate -------------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        seeds: Sequence[int] | None = None,
    ) -> list[list[Generation] | CallFailed]:
        """`params.n` samples per prompt; greedy (temperature 0) computes one and repeats it.
        `seeds` gives each prompt its own seed in place of `params.seed`."""
        import torch

        texts = [self.encoder.render(p) for p in prompts]
        ids = [self.encoder.encode(t) for t in texts]
        sampling = params.temperature > 0
        per_prompt = params.n if sampling else 1
        rows = [(i, j) for i in range(len(prompts)) for j in range(per_prompt)]
        rows.sort(key=lambda r: len(ids[r[0]]))  # similar lengths together: less padding
        done: dict[tuple[int, int], Generation] = {}
        for chunk in _chunks(rows, self.batch_size):
            self._fit_threads()
            torch.manual_seed(params.seed)
            rows_seeds = [row_seed(params.seed if seeds is None else seeds[i], texts[i], j)
                          for i, j in chunk] if sampling else None
            outs = self._generate_batch([ids[i] for i, _ in chunk], params, rows_seeds)
            done.update(zip(chunk, outs, strict=True))
        return [
            [done[(i, j if sampling else 0)] for j in range(params.n)] for i in range(len(prompts))
        ]

    def _generate_batch(
        self, ids: list[list[int]], params: SamplingParams, seeds: list[int] | None
    ) -> list[Generation]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        row_sampler, stop_on_strings, first_token = _helper_classes()
        input_ids, mask = self._pad_left(ids)
        width = input_ids.shape[1]
        config = GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            do_sample=False,  # sampling, when asked, is done by the row sampler below
            num_beams=1,
            pad_token_id=self._pad_id,
            eos_token_id=sorted(self._eos_ids),
            use_cache=True,
        )
        shaping = ([first_token(width, params.first_token_temperature,
                                self.encoder.single_token_ids(params.first_token_ban))]
                   if params.shapes_first_token else [])
        processors = LogitsProcessorList(
            shaping + ([row_sampler(seeds, params.temperature, params.top_p)] if seeds else [])
        )
        stopping = StoppingCriteriaList(
            [stop_on_strings(self.tokenizer, params.stop, width)] if params.stop else []
        )
        from workbench.models import meter

        if meter.active():
            stopping.append(_token_meter(self._eos_ids))
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=mask,
                generation_config=config,
                logits_processor=processors,
                stopping_criteria=stopping,
            )
        new = out[:, width:].tolist()
        return [self._finish(row, len(p), params) for row, p in zip(new, ids, strict=True)]

    def _fit_threads(self) -> None:
        """On a CPU, as many torch threads as cores other processes leave free."""
        if self.device == "cpu":
            from workbench.models.cpu_threads import fit_threads

            fit_threads()

    def _finish(self, row: list[int], prompt_len: int, params: SamplingParams) -> Generation:
        cut, ended_eos = len(row), False
        for k, tok in enumerate(row):
            if tok in self._eos_ids:
                cut, ended_eos = k, True
                break
            if tok == self._pad_id:  # a row stopped by a stop string is padded afterwards
                cut = k
                break
        text = self.tokenizer.decode(row[:cut], skip_special_tokens=False)
        finish = "stop" if ended_eos else "length"
        hits = [i for i in (text.find(s) for s in params.stop) if i >= 0]
        if hits:
            text, finish = text[: min(hits)], "stop"
        for special in self._specials:
            text = text.replace(special, "")
        used = cut + (1 if ended_eos and not hits else 0)
        return Generation(text, finish, prompt_len, used)

    # -- scoring --------------------------------------------------------------------------

    def logprobs(
        self, prompts: Sequence[Prompt], continuations: Sequence[str]
    ) -> list[TokenLogprobs | CallFailed]:
        """Sum and per-token log-probs of each continuation given its prompt."""
        pairs = self._pairs(prompts, continuations)
        results: list[TokenLogprobs | CallFailed] = [None] * len(pairs)  # type: ignore[list-item]
        for batch in self._length_batches(pairs):
            keep = max(len(pairs[i][1]) for i in batch) + 1
            logits = self._forward([pairs[i][0] + pairs[i][1] for i in batch], keep).logits
            for row, i in enumerate(batch):
                cont = pairs[i][1]
                n = len(cont)
                if n == 0:
                    results[i] = TokenLogprobs(0.0, [], [])
                    continue
                lp = logits[row, keep - 1 - n : keep - 1].float().log_softmax(-1)
                picked = lp.gather(1, _tensor(cont, lp.device).unsqueeze(1)).squeeze(1).tolist()
                tokens = [self.tokenizer.decode([t]) for t in cont]
                results[i] = TokenLogprobs(float(sum(picked)), tokens, picked)
        return results

    def next_token_distribution(
        self, prompts: Sequence[Prompt], candidates: Sequence[str]
    ) -> list[dict[str, float] | CallFailed]:
        """log_softmax over the full vocabulary at the last prompt position, read at each
        candidate's first token id as found after that prompt (PromptEncoder.candidate_ids).
        Values are not renormalized over the candidates; callers that want that can softmax
        them. Every candidate gets a finite value: nothing here falls back."""
        import torch

        texts = [self.encoder.render(p) for p in prompts]
        cand_ids = [self.encoder.candidate_ids(candidates, t) for t in texts]
        ids = [self.encoder.encode(t) for t in texts]
        results: list[dict[str, float] | CallFailed] = [None] * len(ids)  # type: ignore[list-item]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for batch in _chunks(order, self.batch_size):
            logits = self._forward([ids[i] for i in batch], 1).logits[:, -1]
            lp = logits.float().log_softmax(-1)
            index = torch.tensor([cand_ids[i] for i in batch], dtype=torch.long,
                                 device=lp.device).reshape(len(batch), len(candidates))
            picked = lp.gather(1, index).tolist()
            for row, i in enumerate(batch):
                results[i] = dict(zip(candidates, picked[row], strict=True))
        return results

    def hidden_states(
        self, prompts: Sequence[Prompt], continuations: Sequence[str], pool: str = "none",
        eos: bool = False,
    ) -> list[Any | CallFailed]:
        """Last-layer hidden states (after the final norm, i.e. `hidden_states[-1]`) at the
        positions that predict the continuation's tokens, and at its last token: row 0 is the
        last prompt token, row k continuation token k; float32 (n + 1) x dim.

        Prompt text and continuation are tokenized together, once; the continuation starts at
        the first token that begins at or after the prompt's end (offsets), so a token merged
        across the boundary counts as prompt. `eos=True` appends the tokenizer's EOS id to
        each continuation (it is then one of the n tokens), as DPO inputs end. One left-padded
        forward per batch, explicit position ids: equal to unpadded forwards. `pool="sum"`
        returns `sum_states` instead, which is all CHES needs and keeps the transfer and the
        call cache small.
        """
        if pool not in ("none", "sum"):
            raise ValueError(f"pool must be 'none' or 'sum', not {pool!r}")
        if len(prompts) != len(continuations):
            raise ValueError("prompts and continuations differ in length")
        if eos and self.tokenizer.eos_token_id is None:
            raise ValueError("eos: this tokenizer has no EOS token to append")
        joint = [self._joint_ids(p, c) for p, c in zip(prompts, continuations, strict=True)]
        if eos:
            joint = [([*ids, self.tokenizer.eos_token_id], cut) for ids, cut in joint]
        results: list[Any] = [None] * len(joint)
        order = sorted(range(len(joint)), key=lambda i: len(joint[i][0]))
        for batch in _chunks(order, self.batch_size):
            seqs = [joint[i][0] for i in batch]
            last = self._last_hidden(seqs)  # (B, W, dim), left padded
            width = last.shape[1]
            firsts = [width - len(s) + joint[i][1] - 1 for s, i in zip(seqs, batch, strict=True)]
            if pool == "none":
                for row, (i, first) in enumerate(zip(batch, firsts, strict=True)):
                    results[i] = last[row, first:].float().cpu().numpy()
                continue
            for i, pooled in zip(batch, sum_states(last, firsts), strict=True):
                results[i] = pooled
        return results

    def _joint_ids(self, prompt: Prompt, continuation: str) -> tuple[list[int], int]:
        """(ids of prompt + continuation tokenized once, number of prompt tokens)."""
        import numpy as np

        text = self.encoder.render(prompt)
        try:
            enc = self.tokenizer(text + continuation, add_special_tokens=False,
                                 return_offsets_mapping=True)
        except NotImplementedError:  # a slow tokenizer has no offsets: tokenize apart
            head = self.encoder.encode(text)
            return head + self.encoder.encode_continuation(continuation), len(head)
        ids = list(enc["input_ids"])
        starts = np.array([s for s, _ in enc["offset_mapping"]], dtype=np.int64)
        boundary = int((starts < len(text)).sum())
        bos = self.encoder.bos_id
        if bos is not None and ids[:1] != [bos]:
            ids, boundary = [bos, *ids], boundary + 1
        if boundary == 0:
            raise ValueError("an empty prompt gives the continuation's first token no context")
        return ids, boundary

    def _last_hidden(self, seqs: list[list[int]]) -> Any:
        """The decoder's final (normed) hidden states, without the LM head."""
        import torch

        self._fit_threads()
        ids, mask = self._pad_left(seqs)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            out = self.model.base_model(input_ids=ids, attention_mask=mask,
                                        position_ids=positions, use_cache=False)
        return out.last_hidden_state

    # -- helpers --------------------------------------------------------------------------

    def _pairs(
        self, prompts: Sequence[Prompt], continuations: Sequence[str]
    ) -> list[tuple[list[int], list[int]]]:
        if len(prompts) != len(continuations):
            raise ValueError("prompts and continuations differ in length")
        pairs = []
        for p, c in zip(prompts, continuations, strict=True):
            prompt_ids = self.encoder.encode(self.encoder.render(p))
            if not prompt_ids:
                raise ValueError("an empty prompt gives the continuation's first token no context")
            pairs.append((prompt_ids, self.encoder.encode_continuation(c)))
        return pairs

    def _length_batches(self, pairs: list[tuple[list[int], list[int]]]) -> Iterator[list[int]]:
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        return _chunks(order, self.batch_size)

    def _pad_left(self, seqs: list[list[int]]) -> tuple[Any, Any]:
        import torch

        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            if s:
                ids[r, width - len(s) :] = torch.tensor(s, dtype=torch.long)
                mask[r, width - len(s) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _forward(self, seqs: list[list[int]], keep: int, hidden: bool = False) -> Any:
        """Left-padded forward; explicit position ids make padded rows equal unpadded ones."""
        import torch

        self._fit_threads()
        ids, mask = self._pad_left(seqs)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            return self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                logits_to_keep=keep,
                output_hidden_states=hidden,
                use_cache=False,
            )


def sum_states(last: Any, firsts: Sequence[int]) -> list[dict[str, Any]]:
    """CHES's pooling of left-padded final states `last` (B x W x dim), row b's continuation
    predicted from column firsts[b] on: {"sum": float64 Σ of columns first..W-2 (the n
    positions that predict the n continuation tokens), "last": float32 column W-1 (the last
    token's own state, which predicts nothing), "tokens": n}. Summed on the device."""
    import torch

    width = last.shape[1]
    columns = torch.arange(width, device=last.device)
    start = torch.tensor(list(firsts), device=last.device).unsqueeze(1)
    mask = (columns >= start) & (columns < width - 1)  # predicting positions only
    sums = torch.einsum("bw,bwd->bd", mask.double(), last.double()).cpu().numpy()
    finals = last[:, -1].float().cpu().numpy()
    return [{"sum": sums[row], "last": finals[row], "tokens": width - 1 - first}
            for row, first in enumerate(firsts)]


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _tensor(values: list[int], device: Any) -> Any:
    import torch

    return torch.tensor(values, dtype=torch.long, device=device)


def _pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _pick_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    value = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r} (use auto, float32, bfloat16 or float16)")
    return value


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    found = model.generation_config.eos_token_id
    ids = set(found if isinstance(found, list) else [found] if found is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    if not ids:
        raise ValueError("the model defines no end-of-sequence token")
    return ids


def _token_meter(eos_ids: set[int]) -> Any:
    """A stopping criterion that never stops: it ticks `models.meter` with the rows that
    generated a token at this step (rows past their EOS do not count)."""
    import torch
    from transformers import StoppingCriteria

    from workbench.models import meter

    class TokenMeter(StoppingCriteria):
        def __init__(self) -> None:
            self.eos = torch.tensor(sorted(eos_ids))
            self.ended: Any = None

        def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
            ended_now = torch.isin(input_ids[:, -1].cpu(), self.eos)
            if self.ended is None:
                self.ended = torch.zeros_like(ended_now)
            meter.tick(int((~self.ended).sum()))
            self.ended |= ended_now
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    return TokenMeter()


@functools.cache
def _helper_classes() -> tuple[type, type, type]:
    """transformers hook classes, defined on first use so importing this module stays cheap."""
    import torch
    from transformers import LogitsProcessor, StoppingCriteria

    from workbench.models.first_token import shape_first_token

    class RowSampler(LogitsProcessor):
        """Temperature + top-p sampling with one generator per row.

        Returns scores that are 0 at the drawn token and -inf elsewhere, so generate's greedy
        step picks exactly the drawn token.
        """

        def __init__(self, seeds: list[int], temperature: float, top_p: float) -> None:
            self.generators = [torch.Generator().manual_seed(s) for s in seeds]
            self.temperature = temperature
            self.top_p = top_p

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            logits = scores.float() / self.temperature
            if self.top_p < 1.0:  # same rule as transformers' TopPLogitsWarper
                sorted_logits, order = torch.sort(logits, descending=False)
                cumulative = sorted_logits.softmax(-1).cumsum(-1)
                drop = cumulative <= (1 - self.top_p)
                drop[..., -1:] = False
                logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
            probs = logits.softmax(-1).cpu()
            picks = torch.stack(
                [torch.multinomial(probs[r], 1, generator=g) for r, g in enumerate(self.generators)]
            ).to(scores.device)
            out = torch.full_like(scores, float("-inf"))
            return out.scatter_(1, picks, 0.0)

    class StopOnStrings(StoppingCriteria):
        """Stops a row once a stop string appears in its generated text (never the prompt's)."""

        def __init__(self, tokenizer: Any, stops: Sequence[str], prompt_width: int) -> None:
            self.tokenizer = tokenizer
            self.stops = list(stops)
            self.prompt_width = prompt_width
            self.window = 2 * max(len(s) for s in self.stops) + 8  # tokens, generously

        def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
            tails = input_ids[:, self.prompt_width :][:, -self.window :].tolist()
            texts = self.tokenizer.batch_decode(tails, skip_special_tokens=False)
            hit = [any(s in t for s in self.stops) for t in texts]
            return torch.tensor(hit, dtype=torch.bool, device=input_ids.device)

    class FirstTokenShaper(LogitsProcessor):
        """Magpie's first-token processors: only at the first generated position, divide the
        logits by a temperature and push banned ids to the reference's -9999.999."""

        def __init__(self, prompt_width: int, temperature: float, banned: list[int]) -> None:
            self.prompt_width = prompt_width
            self.temperature = temperature
            self.banned = banned

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            if input_ids.shape[1] != self.prompt_width:
                return scores
            return shape_first_token(scores.clone(), self.temperature, self.banned)

    return RowSampler, StopOnStrings, FirstTokenShaper
