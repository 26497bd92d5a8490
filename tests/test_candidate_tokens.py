"""Candidate token ids found in context, on real tokenizers: Mistral's SentencePiece v1/v3 and
tekken, Llama 3's tiktoken, and the embedded SmolLM2's byte-level BPE. No model is loaded."""

from __future__ import annotations

import pytest
from real_tokenizers import (
    MISTRAL_V1_DIGITS,
    llama3_reference,
    llama3_tokenizer,
    mistral_tokenizer,
    tekken_tokenizer,
)

from transforms.deita import COMPLEXITY_TEMPLATE, QUALITY_TEMPLATE
from workbench.algorithms.scores import DIGITS_1_6
from workbench.models.candidates import WINDOW, CandidateError, CandidateTokens
from workbench.models.transformers_backend import PromptEncoder

DEITA = [COMPLEXITY_TEMPLATE.format(instruction="Name a prime number."),
         QUALITY_TEMPLATE.format(instruction="Name a prime number.", output="7")]
JUDGE = "Which answer is better, A or B? Answer: "


def smollm2():
    from transformers import AutoTokenizer

    from workbench.models import embedded

    return AutoTokenizer.from_pretrained(embedded.ensure_converted())


TOKENIZERS = {"mistral-v1": lambda: mistral_tokenizer("v1"),
              "mistral-v3": lambda: mistral_tokenizer("v3"),
              "tekken": tekken_tokenizer, "llama3": llama3_tokenizer, "smollm2": smollm2}


def _tokens(tok, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


def _decode(tok, ids: list[int]) -> str:
    return tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def test_mistral_v1_digits_after_the_deita_prompts_are_the_reference_ids():
    tok = mistral_tokenizer("v1")
    assert len(tok) == 32000
    encoder = PromptEncoder(tok)
    for prompt in DEITA:
        assert encoder.candidate_ids(DIGITS_1_6, prompt) == MISTRAL_V1_DIGITS
    # the defect this replaces: each digit tokenized on its own starts with the prefix space
    alone = [_tokens(tok, d) for d in DIGITS_1_6]
    assert {ids[0] for ids in alone} == {tok.convert_tokens_to_ids("▁")}


@pytest.mark.parametrize("name", list(TOKENIZERS))
@pytest.mark.parametrize("candidates", [DIGITS_1_6, ("A", "B"), ("Yes", "No")])
def test_each_candidate_is_the_token_that_spells_it_after_the_prompt(name, candidates):
    tok = TOKENIZERS[name]()
    ids_of = CandidateTokens(tok)
    for prompt in [*DEITA, JUDGE]:
        ids = ids_of.ids(prompt, candidates)
        assert len(set(ids)) == len(ids)
        context = _tokens(tok, prompt)[-8:]  # the prompt's last tokens, as the model gets them
        before = _decode(tok, context)
        for cand, tid in zip(candidates, ids, strict=True):
            after = _decode(tok, context + [tid])
            # with the candidate's token appended, the text reads prompt + candidate
            assert after.startswith(before) and after[len(before):] == cand, (name, cand, after)


def test_a_tiktoken_merge_across_the_prompt_end_is_read_after_the_boundary():
    tok = llama3_tokenizer()
    head, joint = _tokens(tok, JUDGE), _tokens(tok, JUDGE + "A")
    # tokenized together, the prompt's trailing space and "A" merge into " A"
    assert joint[: len(head) - 1] == head[:-1] and joint[-1] == tok.convert_tokens_to_ids("ĠA")
    assert head[-1] == tok.convert_tokens_to_ids("Ġ")
    # the model is given the prompt's tokens (ending with " "): what it emits next is "A"
    assert CandidateTokens(tok).ids(JUDGE, ["A", "B"]) == [
        tok.convert_tokens_to_ids("A"), tok.convert_tokens_to_ids("B")]


def test_the_converted_llama3_tokenizer_is_tiktoken():
    tok, ref = llama3_tokenizer(), llama3_reference()
    assert len(tok) == 128256
    for text in [*DEITA, JUDGE, "naïve café 12345 😀\n\n  x", "def f():\n    return 1"]:
        assert _tokens(tok, text) == ref.encode(text, bos=False, eos=False)
    assert tok("a")["input_ids"][0] == ref.bos_id
    digits = [ref.encode(d, bos=False, eos=False) for d in DIGITS_1_6]
    assert CandidateTokens(tok).ids(DEITA[0], DIGITS_1_6) == [d[0] for d in digits]


def test_byte_fallback_candidates_are_their_first_byte_and_shared_bytes_are_an_error():
    tok = mistral_tokenizer("v1")
    prompt = "Pick a rune: "
    # ᚠ (E1 9A A0) is not in the vocabulary: three byte tokens, the first one is its id
    [rune, one] = CandidateTokens(tok).ids(prompt, ["ᚠ", "1"])
    assert tok.convert_ids_to_tokens([rune, one]) == ["<0xE1>", "1"]
    # ᚢ (E1 9A A2) starts with the same byte: no id tells the two apart
    with pytest.raises(CandidateError, match=r"'ᚠ' and 'ᚢ' both start with token \d+ \('<0xE1>'\)"):
        CandidateTokens(tok).ids(prompt, ["ᚠ", "ᚢ"])


def test_indistinguishable_candidates_are_an_error_until_overridden():
    tok = smollm2()
    with pytest.raises(CandidateError, match=r"'1' and '10' both start with token .*"
                                             r"candidate_ids"):
        CandidateTokens(tok).ids(DEITA[0], ["1", "10"])
    ten = tok.convert_tokens_to_ids("0")
    ids = CandidateTokens(tok, {"10": ten}).ids(DEITA[0], ["1", "10"])
    assert ids == [tok.convert_tokens_to_ids("1"), ten]


def test_overrides_must_be_token_ids_of_the_model():
    tok = smollm2()
    with pytest.raises(ValueError, match=r"candidate_ids: '1' -> 99999999 is not a token id"):
        CandidateTokens(tok, {"1": 99999999})
    with pytest.raises(ValueError, match="is not a token id"):
        CandidateTokens(tok, {"1": "one"})  # type: ignore[dict-item]


def test_a_long_prompt_reads_its_tail_like_the_whole_text():
    tok = mistral_tokenizer("v1")
    long = COMPLEXITY_TEMPLATE.format(instruction="word " * 400 + "end")
    assert len(long) > 4 * WINDOW
    ids = CandidateTokens(tok).ids(long, DIGITS_1_6)
    head = _tokens(tok, long)
    whole = [_tokens(tok, long + d)[len(head)] for d in DIGITS_1_6]
    assert ids == whole == MISTRAL_V1_DIGITS
