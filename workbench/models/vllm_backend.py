"""Backend over vLLM's offline engine, for batch generation at scale on a GPU.

vLLM is an optional extra and is imported only when this backend is constructed. Prompts are
rendered and tokenized exactly as in the transformers backend (same chat template, same BOS
rule) and passed as token ids, so both backends see identical inputs for a given row.
Stops that are special tokens also go as `stop_token_ids`, and Magpie's first-token
processors run as an engine logits processor (workbench.models.vllm_logits).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from workbench.errors import WorkbenchError
from workbench.models.backends import BACKENDS
from workbench.models.base import (
    CallFailed,
    CapabilityError,
    Generation,
    Prompt,
    SamplingParams,
    TokenLogprobs,
)
from workbench.models.fingerprint import tokenizer_digest
from workbench.models.first_token import first_token_args, stop_token_ids
from workbench.models.transformers_backend import (
    IMPL_VERSION,
    PromptEncoder,
    candidate_fingerprint,
    describe_weights,
    resolve_model_path,
)

TOP_LOGPROBS = 20  # vLLM's default max_logprobs: top-k read per scored position


class MissingExtraError(WorkbenchError, ImportError):
    """An optional dependency is not installed; the message says which extra to install."""


def import_vllm() -> Any:
    try:
        import vllm
    except ImportError as error:
        raise MissingExtraError(
            "the vllm backend needs vLLM and a CUDA GPU: pip install 'preference-workbench[gpu]'"
        ) from error
    return vllm


def _v1_runner_processors() -> bool:
    """Whether the engine takes V1-interface custom logits processors: a vLLM with Model
    Runner V2 refuses them unless that runner is turned off (VLLM_USE_V2_MODEL_RUNNER=0)."""
    import importlib.util
    import os

    try:
        has_v2 = importlib.util.find_spec("vllm.v1.worker.gpu.sample.logits_processor")
    except ImportError:
        has_v2 = None
    return has_v2 is None or os.environ.get("VLLM_USE_V2_MODEL_RUNNER") == "0"


class VLLMBackend:
    """vLLM `LLM` engine; generation, prompt log-probs and top-k next-token log-probs."""

    backend: ClassVar[str] = "vllm"
    capabilities: ClassVar[frozenset[str]] = BACKENDS["vllm"].capabilities  # the table's

    def __init__(
        self,
        model: str = "embedded",
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        dtype: str = "auto",
        max_model_len: int | None = None,
        batch_size: int | None = None,  # accepted for symmetry; vLLM schedules batches itself
        max_logprobs: int = TOP_LOGPROBS,
        candidate_ids: dict[str, int] | None = None,
        first_token_processor: bool = True,
    ) -> None:
        """`first_token_processor`: load the first-token logits processor (Magpie's de-markdown and
        flaming tokens) into the engine; it needs vLLM's V1 custom logits processors
        (0.10.1 on, V1 model runner); false on a vLLM that refuses them.
        `max_logprobs`: the engine's cap and the top-k that scoring asks for first (deita's
        reference reads 1,000); candidates outside it are read exactly by a second pass.
        `candidate_ids`: token ids to read per candidate string, in place of the in-context
        ones (workbench.models.candidates)."""
        if max_logprobs < 1:
            raise ValueError("max_logprobs must be at least 1")
        vllm = import_vllm()
        from transformers import AutoConfig, AutoTokenizer

        self._vllm = vllm
        self.model_name = model
        self.dtype = dtype
        path = resolve_model_path(model)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.encoder = PromptEncoder(self.tokenizer, candidate_ids)
        self.max_logprobs = max_logprobs
        self._weights = describe_weights(model, AutoConfig.from_pretrained(path))
        self._tokenizer_digest = tokenizer_digest(self.tokenizer)
        self._engine_options = {"tensor_parallel_size": tensor_parallel_size,
                                "max_model_len": max_model_len}
        engine_args: dict[str, Any] = {
            "model": path,
            "tokenizer": path,
            "tensor_parallel_size": tensor_parallel_size,
            "gpu_memory_utilization": gpu_memory_utilization,
            "dtype": dtype,
            "max_logprobs": max_logprobs,
        }
        if max_model_len is not None:
            engine_args["max_model_len"] = max_model_len
        self.shapes_first_token = False
        if first_token_processor and _v1_runner_processors():
            try:
                from workbench.models.vllm_logits import FirstTokenProcessor
            except ImportError:  # a vLLM before the V1 custom logits processors
                pass
            else:
                engine_args["logits_processors"] = [FirstTokenProcessor]
                self.shapes_first_token = True
        self.llm = vllm.LLM(**engine_args)

    def fingerprint(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model": self.model_name,
            "weights": self._weights,
            "tokenizer": self._tokenizer_digest,
            "dtype": self.dtype,
            "engine": self._engine_options,
            "impl": IMPL_VERSION,
            "stops": "strings+special-token ids",  # since stop_token_ids are sent
            **candidate_fingerprint(self.encoder),
        }

    def _token_prompts(self, seqs: list[list[int]]) -> list[dict[str, list[int]]]:
        return [{"prompt_token_ids": ids} for ids in seqs]

    def _run(self, seqs: list[list[int]], params: Any) -> list[Any]:
        return self.llm.generate(self._token_prompts(seqs), params, use_tqdm=False)

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        seeds: Sequence[int] | None = None,
    ) -> list[list[Generation] | CallFailed]:
        """`params.n` samples per prompt; greedy computes one and repeats it. `seeds` gives
        each prompt its own seed (one vLLM SamplingParams per prompt)."""
        greedy = params.temperature <= 0
        if params.shapes_first_token and not self.shapes_first_token:
            raise CapabilityError(
                "this vllm backend cannot shape the first token's logits (Magpie's first-token "
                "processors need vLLM >= 0.10.1 with its V1 custom logits processors, the V1 "
                "model runner (VLLM_USE_V2_MODEL_RUNNER=0 where vLLM has the V2 one) and the "
                "backend option first_token_processor: true); use backend: transformers or the "
                "step's first_token: none")
        structured = self._structured(params.json_schema)
        shaping = first_token_args(
            params, self.encoder.single_token_ids(params.first_token_ban))
        stop_ids = stop_token_ids(self.tokenizer, params.stop)

        def sampling_for(seed: int) -> Any:
            return self._vllm.SamplingParams(
                n=1 if greedy else params.n,
                temperature=0.0 if greedy else params.temperature,
                top_p=1.0 if greedy else params.top_p,
                max_tokens=params.max_new_tokens,
                stop=list(params.stop) or None,
                stop_token_ids=stop_ids,
                seed=seed,
                **({"extra_args": shaping} if shaping else {}),
                **structured,
            )

        sampling: Any = (sampling_for(params.seed) if seeds is None or greedy
                         else [sampling_for(s) for s in seeds])
        seqs = [self.encoder.encode(self.encoder.render(p)) for p in prompts]
        results: list[list[Generation] | CallFailed] = []
        for out in self._run(seqs, sampling):
            odd = [
                c.finish_reason for c in out.outputs if c.finish_reason not in ("stop", "length")
            ]
            if odd:  # e.g. "abort": report the row instead of caching a truncated text
                results.append(CallFailed(f"vLLM finished a request with {odd[0]!r}"))
                continue
            samples = [
                Generation(c.text, c.finish_reason, len(out.prompt_token_ids), len(c.token_ids))
                for c in out.outputs
            ]
            results.append(samples * params.n if greedy else samples)
        return results

    def render(self, prompt: Prompt, add_generation_prompt: bool = True) -> str:
        return self.encoder.render(prompt, add_generation_prompt)

    def _structured(self, schema: dict[str, Any] | None) -> dict[str, Any]:
        """Schema-constrained decoding, in whichever form this vLLM version offers."""
        if schema is None:
            return {}
        params = self._vllm.sampling_params
        if hasattr(params, "StructuredOutputsParams"):
            return {"structured_outputs": params.StructuredOutputsParams(json=schema)}
        return {"guided_decoding": params.GuidedDecodingParams(json=schema)}

    def logprobs(
        self, prompts: Sequence[Prompt], continuations: Sequence[str]
    ) -> list[TokenLogprobs | CallFailed]:
        """Read from vLLM's prompt_logprobs over prompt + continuation (the log-prob of each
        actual prompt token is always included, whatever its rank)."""
        if len(prompts) != len(continuations):
            raise ValueError("prompts and continuations differ in length")
        pairs = [
            (self.encoder.encode(self.encoder.render(p)), self.encoder.encode_continuation(c))
            for p, c in zip(prompts, continuations, strict=True)
        ]
        sampling = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1)
        outs = self._run([p + c for p, c in pairs], sampling)
        results: list[TokenLogprobs | CallFailed] = []
        for (prompt_ids, cont_ids), out in zip(pairs, outs, strict=True):
            values, tokens = [], []
            for pos, tok in enumerate(cont_ids, start=len(prompt_ids)):
                entry = out.prompt_logprobs[pos][tok]
                values.append(float(entry.logprob))
                tokens.append(entry.decoded_token or self.tokenizer.decode([tok]))
            results.append(TokenLogprobs(float(sum(values)), tokens, values))
        return results

    def next_token_distribution(
        self, prompts: Sequence[Prompt], candidates: Sequence[str]
    ) -> list[dict[str, float] | CallFailed]:
        """Raw log-probs of the first generated position at each candidate's in-context id.

        The top `max_logprobs` come with one generated token; a candidate outside them is read
        exactly in a second pass, as the prompt log-prob of prompt + that candidate's token
        (vLLM always returns the actual prompt token's log-prob, whatever its rank). So every
        candidate gets its value from the full vocabulary's log-softmax and nothing falls back.
        """
        texts = [self.encoder.render(p) for p in prompts]
        cand_ids = [self.encoder.candidate_ids(candidates, t) for t in texts]
        seqs = [self.encoder.encode(t) for t in texts]
        sampling = self._vllm.SamplingParams(max_tokens=1, temperature=0.0,
                                             logprobs=self.max_logprobs)
        found: list[dict[int, float]] = []
        for out, ids in zip(self._run(seqs, sampling), cand_ids, strict=True):
            top = out.outputs[0].logprobs[0]
            found.append({tid: float(top[tid].logprob) for tid in ids if tid in top})
        missing = [(row, tid) for row, ids in enumerate(cand_ids) for tid in ids
                   if tid not in found[row]]
        if missing:
            exact = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1)
            outs = self._run([seqs[row] + [tid] for row, tid in missing], exact)
            for (row, tid), out in zip(missing, outs, strict=True):
                found[row][tid] = float(out.prompt_logprobs[len(seqs[row])][tid].logprob)
        return [dict(zip(candidates, (values[t] for t in ids), strict=True))
                for values, ids in zip(found, cand_ids, strict=True)]

    def hidden_states(
        self, prompts: Sequence[Prompt], continuations: Sequence[str]
    ) -> list[Any | CallFailed]:
        raise CapabilityError(
            "the vllm backend cannot return hidden states; use backend: transformers for CHES"
        )
