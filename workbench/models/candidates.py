"""Which token a model emits first for each candidate answer ("1".."6", "A"/"B", "Yes"/"No").

A scorer reads the next-token distribution after its prompt at one id per candidate. That id
is found in context: the prompt's text and prompt + candidate are tokenized, and the first
token after the prompt's own tokens is the candidate's. Tokenized on its own, a candidate can
come out differently: SentencePiece (LLaMA, Mistral) writes "1" as ['▁', '1'] with a prefix
space, so all six digits would share '▁'; in context, after deita's "##Complexity: " (whose
space is already the prompt's last token '▁'), "1" is the bare '1', the id deita reads.

Three tokenizer behaviours are handled:
- SentencePiece's prefix space: comes with the prompt in context, never with the candidate.
- Byte fallback: a character outside the vocabulary is several byte tokens; its first byte
  is its id (two candidates starting with the same byte are indistinguishable: an error).
- Merges across the boundary (tiktoken/BPE pre-tokenizers join " " and "A" into " A"): the
  model is given the prompt's tokens as they are, ending with " ", so what it can emit next
  is the candidate tokenized after a token boundary ("A"); that reading is checked by
  decoding the prompt's last tokens plus it back to prompt + candidate.

Only the prompt's tail is tokenized (tokenizers join nothing across a whitespace far from
the end), so a batch of prompts ending in one template costs one lookup. A model's
`candidate_ids:` option overrides any of this per candidate string; two candidates that still
share an id are an error naming them, never a silent tie.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

WINDOW = 256  # characters of prompt tail tokenized with each candidate
_ANCHOR = "\n"  # a hard token boundary in every tokenizer we know, with no prefix space after


class CandidateError(ValueError):
    """Two candidates map to one token id, or a candidate has no token in context."""


class CandidateTokens:
    """First token id of each candidate after a given prompt text, with per-model overrides."""

    def __init__(self, tokenizer: Any, overrides: Mapping[str, int] | None = None) -> None:
        self.tokenizer = tokenizer
        self.overrides = check_overrides(overrides or {}, len(tokenizer))
        self._memo: dict[tuple[str, str], int] = {}

    def ids(self, context: str, candidates: Sequence[str]) -> list[int]:
        """One id per candidate, as the model would emit it right after `context`."""
        window = tail_window(context)
        head: list[int] = []  # the window's tokens, encoded once when a candidate needs them
        ids = [self.overrides[c] if c in self.overrides else self._first(window, c, head)
               for c in candidates]
        seen: dict[int, str] = {}
        for cand, tid in zip(candidates, ids, strict=True):
            if tid in seen:
                token = self.tokenizer.convert_ids_to_tokens([tid])[0]
                raise CandidateError(
                    f"candidates {seen[tid]!r} and {cand!r} both start with token {tid} "
                    f"({token!r}) after the prompt, so their scores could not be told apart; "
                    "give each its own token id with the model's `candidate_ids:` option "
                    f"(e.g. candidate_ids: {{{seen[tid]!r}: ID, {cand!r}: ID}})")
            seen[tid] = cand
        return ids

    def _first(self, window: str, cand: str, head: list[int]) -> int:
        key = (window, cand)
        if key not in self._memo:
            if len(self._memo) > 4096:
                self._memo.clear()
            if not head:
                head.extend(self._encode(window))
            self._memo[key] = self._in_context(window, head, cand)[0]
        return self._memo[key]

    def _in_context(self, window: str, head: list[int], cand: str) -> list[int]:
        if not cand:
            raise CandidateError("an empty candidate has no token to score")
        joint = self._encode(window + cand)
        if joint[: len(head)] == head and len(joint) > len(head):
            return joint[len(head):]
        # The boundary merged (the prompt's last token and the candidate's start are one token
        # in `joint`). The model is given `head` as is: it continues after a token boundary.
        apart = self._after_boundary(cand)
        if apart and self._spells(head, apart, cand):
            return apart
        raise CandidateError(
            f"cannot tell which token the model emits for candidate {cand!r} after the prompt "
            f"(…{window[-40:]!r}): its tokens merge with the prompt's end; set the model's "
            f"`candidate_ids:` option, e.g. candidate_ids: {{{cand!r}: ID}}")

    def _after_boundary(self, cand: str) -> list[int]:
        """`cand` tokenized right after a token boundary, without a SentencePiece prefix space."""
        anchor = self._encode(_ANCHOR)
        joint = self._encode(_ANCHOR + cand)
        if joint[: len(anchor)] == anchor and len(joint) > len(anchor):
            return joint[len(anchor):]
        return self._encode(cand)

    def _spells(self, head: list[int], tail: list[int], cand: str) -> bool:
        context = head[-8:]
        before = self._decode(context)
        return self._decode(context + tail) == before + cand

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False,
                                     clean_up_tokenization_spaces=False)


def tail_window(text: str) -> str:
    """The prompt's last WINDOW characters, starting at a whitespace so no word is cut (the
    whole text when it is short or has no whitespace there)."""
    if len(text) <= WINDOW:
        return text
    tail = text[-WINDOW:]
    cut = next((i for i, ch in enumerate(tail) if ch.isspace()), None)
    return text if cut is None else tail[cut:]


def check_overrides(overrides: Mapping[str, int], vocab_size: int) -> dict[str, int]:
    """`candidate_ids:` as {candidate string: token id}, each id inside the vocabulary."""
    out: dict[str, int] = {}
    for cand, tid in overrides.items():
        if not isinstance(cand, str) or not cand:
            raise ValueError(f"candidate_ids: key {cand!r} is not a candidate string")
        if isinstance(tid, bool) or not isinstance(tid, int) or not 0 <= tid < vocab_size:
            raise ValueError(f"candidate_ids: {cand!r} -> {tid!r} is not a token id of this "
                             f"model (0..{vocab_size - 1})")
        out[cand] = tid
    return out
