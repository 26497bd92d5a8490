"""Stop token ids and Magpie's first-token processors, as plain functions and one plain
class, shared by the transformers and vLLM backends and tested on a CPU without vLLM.

vLLM matches stop strings against detokenized text, which leaves out special tokens by
default, so a template-token stop such as `<|eot_id|>` or `<|im_end|>` is never seen as a
string: such stops must be sent as `stop_token_ids`, as Magpie's scripts do.

The first-token processors (`SamplingParams.first_token_temperature`, `first_token_ban`)
run on vLLM as one engine logits processor (workbench.models.vllm_logits: `FirstTokenRows`
on vLLM's base class), loaded with `LLM(logits_processors=[...])` (the V1 engine's custom
logits processors) and switched on per request by `SamplingParams.extra_args[EXTRA_KEY]`.
The V1 engine dropped the per-request `SamplingParams.logits_processors` callables the
reference used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from workbench.models.base import SamplingParams

EXTRA_KEY = "workbench_first_token"  # SamplingParams.extra_args key the processor reads
BANNED = -9999.999  # the reference's value for a banned first token


def stop_token_ids(tokenizer: Any, stops: Sequence[str]) -> list[int]:
    """Ids of the stop strings that are one added (special) token of this tokenizer, plus its
    EOS. Plain-text stops ("\\n", "assistant") stay strings: vLLM sees them in the text."""
    added = tokenizer.get_added_vocab()
    ids = {added[s] for s in stops if s in added}
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return sorted(ids)


def first_token_args(params: SamplingParams, banned_ids: Sequence[int]) -> dict[str, Any]:
    """The per-request `extra_args` that switch the first-token processor on (empty when the
    request shapes nothing). `banned_ids` are the ids of `params.first_token_ban` in this
    vocabulary (strings that are not one token are skipped, as on transformers)."""
    if not params.shapes_first_token:
        return {}
    return {EXTRA_KEY: {"temperature": params.first_token_temperature,
                        "ban": sorted({int(i) for i in banned_ids})}}


def shape_first_token(scores: Any, temperature: float, banned: Sequence[int]) -> Any:
    """Magpie's first-position shaping of one row (or a batch of rows) of logits: divide by
    `temperature` ("flaming tokens") and set banned ids to -9999.999 ("de-markdown")."""
    if temperature != 1.0:
        scores = scores / temperature
    if banned:
        scores[..., list(banned)] = BANNED
    return scores


class FirstTokenRows:
    """vLLM V1 engine logits processor (less its base class): shapes each opted-in request's logits at its first
    generated position only, and leaves every other row alone.

    The engine tells it which requests sit at which batch row (`update_state`); an added
    request carries its SamplingParams and a live reference to its output token ids, so the
    row is shaped while that list is empty. Added-request tuples changed layout between vLLM
    releases, so their fields are found by type rather than by position.
    """

    def __init__(self, vllm_config: Any = None, device: Any = None,
                 is_pin_memory: bool = False) -> None:
        self.rows: dict[int, tuple[float, list[int], Sequence[int]]] = {}

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        args = (getattr(sampling_params, "extra_args", None) or {}).get(EXTRA_KEY)
        if args is None:
            return
        if not isinstance(args, dict) or set(args) != {"temperature", "ban"}:
            raise ValueError(f"extra_args[{EXTRA_KEY!r}] must be {{temperature, ban}}, "
                             f"got {args!r}")
        if not args["temperature"] > 0:
            raise ValueError(f"first-token temperature must be > 0, got {args['temperature']}")

    def is_argmax_invariant(self) -> bool:
        # A ban changes the argmax; returning False also runs it before the temperature,
        # where the reference's per-request processors ran.
        return False

    def update_state(self, batch_update: Any) -> None:
        if batch_update is None:
            return
        for index in batch_update.removed:
            self.rows.pop(index, None)
        for added in batch_update.added:
            index, params, output = _unpack_added(added)
            args = (getattr(params, "extra_args", None) or {}).get(EXTRA_KEY)
            if args is None:
                self.rows.pop(index, None)
            else:
                self.rows[index] = (float(args["temperature"]), list(args["ban"]), output)
        for first, second, direction in batch_update.moved:
            a, b = self.rows.pop(first, None), self.rows.pop(second, None)
            if a is not None:
                self.rows[second] = a
            if b is not None and getattr(direction, "name", str(direction)) == "SWAP":
                self.rows[first] = b

    def apply(self, logits: Any) -> Any:
        done = []
        for index, (temperature, banned, output) in self.rows.items():
            if len(output) > 0:  # past the first position: never again for this request
                done.append(index)
                continue
            logits[index] = shape_first_token(logits[index], temperature, banned)
        for index in done:
            del self.rows[index]
        return logits


def _unpack_added(added: Sequence[Any]) -> tuple[int, Any, Sequence[int]]:
    """(batch index, SamplingParams, output token ids) of an added request, whichever of
    vLLM's layouts it comes in: (index, params, output), (index, params, prompt, output) or
    (prompt, index, params, output)."""
    index = next(x for x in added if isinstance(x, int) and not isinstance(x, bool))
    params = next((x for x in added if hasattr(x, "extra_args")), None)
    return index, params, added[-1]
