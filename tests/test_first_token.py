"""Stop token ids and Magpie's first-token processors as the vLLM backend sends them
(workbench.models.first_token), on real tokenizers: Llama 3's gives back the reference's
hard-coded ids; the engine-processor bookkeeping is run on torch logits without vLLM."""

from __future__ import annotations

import enum
from types import SimpleNamespace

import pytest
import torch
from real_tokenizers import llama3_tokenizer

from transforms._support.magpie_templates import load_registry
from transforms.magpie import FIRST_TOKEN
from workbench.models.base import SamplingParams
from workbench.models.first_token import (
    BANNED,
    EXTRA_KEY,
    FirstTokenRows,
    first_token_args,
    shape_first_token,
    stop_token_ids,
)
from workbench.models.transformers_backend import PromptEncoder, resolve_model_path


@pytest.fixture(scope="module")
def smollm2():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model_path("embedded"))


def test_llama3_stop_ids_are_the_references():
    """magpie-align configs/model_configs.json: stop_token_ids [128009, 128001, 128006,
    128007] for the Llama-3 family; "assistant" and "\\n" stay string stops."""
    family = load_registry()["llama3"]
    stops = [*family.stop_tokens, *family.assistant_stops, "\n"]
    assert stop_token_ids(llama3_tokenizer(), stops) == [128001, 128006, 128007, 128009]


def test_smollm2_stop_ids_are_its_template_tokens(smollm2):
    stops = [*load_registry()["smollm2"].stop_tokens, "assistant", "\n"]
    want = sorted(smollm2.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>",
                                                             "<|endoftext|>"))
    assert stop_token_ids(smollm2, stops) == want
    assert stop_token_ids(smollm2, ["\n"]) == [smollm2.eos_token_id]  # EOS always


def test_de_markdown_bans_the_references_llama3_ids():
    """str_utils.de_md_logits_processor_for_llama3_1 hard-codes # 2, ## 567, ### 14711,
    #### 827; the ids come from the tokenizer here, so they must agree."""
    params = SamplingParams(temperature=0.8, **FIRST_TOKEN["de_markdown"])
    encoder = PromptEncoder(llama3_tokenizer())
    args = first_token_args(params, encoder.single_token_ids(params.first_token_ban))
    assert args == {EXTRA_KEY: {"temperature": 1.0, "ban": [2, 567, 827, 14711]}}
    flaming = SamplingParams(temperature=1.0, **FIRST_TOKEN["flaming"])
    assert first_token_args(flaming, []) == {EXTRA_KEY: {"temperature": 1.2, "ban": []}}
    assert first_token_args(SamplingParams(), []) == {}  # nothing to shape: no extra_args


def test_shaping_divides_then_bans():
    logits = torch.tensor([[2.4, 1.2, -0.6, 0.0]])
    out = shape_first_token(logits.clone(), 1.2, [2])
    assert out[0].tolist() == pytest.approx([2.0, 1.0, BANNED, 0.0])
    probs = out.softmax(-1)[0]
    assert probs[2] == 0 and probs.sum() == pytest.approx(1.0)


class Direction(enum.Enum):  # vLLM's MoveDirectionality names
    UNIDIRECTIONAL = 0
    SWAP = 1


def update(added=(), removed=(), moved=()):
    return SimpleNamespace(added=list(added), removed=list(removed), moved=list(moved),
                           batch_size=0)


def params(args=None):
    return SimpleNamespace(extra_args={EXTRA_KEY: args} if args else None)


def test_engine_processor_shapes_opted_in_rows_at_their_first_position_only(smollm2):
    ban = PromptEncoder(smollm2).single_token_ids(["#", "##"])
    rows = FirstTokenRows(None, None, False)
    assert rows.is_argmax_invariant() is False  # runs before temperature, like the reference
    out0, out1, out2 = [], [], []
    # the three layouts vLLM releases used for an added request
    rows.update_state(update(added=[
        (0, params({"temperature": 1.2, "ban": ban}), out0),
        (1, params(), [5], out1),                                   # not opted in
        ([5, 6], 2, params({"temperature": 1.0, "ban": ban}), out2),
    ]))
    vocab = len(smollm2)
    logits = torch.linspace(-3, 3, 3 * vocab).reshape(3, vocab)
    before = logits.clone()
    shaped = rows.apply(logits)
    assert torch.allclose(shaped[0, 100:200], before[0, 100:200] / 1.2)
    assert (shaped[0, ban] == BANNED).all() and (shaped[2, ban] == BANNED).all()
    assert torch.equal(shaped[1], before[1])
    keep = [i for i in range(vocab) if i not in ban]
    assert torch.equal(shaped[2, keep], before[2, keep])
    # once a token is out, the request is left alone
    out0.append(42)
    out2.append(7)
    again = rows.apply(before.clone())
    assert torch.equal(again, before) and rows.rows == {}


def test_engine_processor_follows_moves_swaps_and_removals():
    rows = FirstTokenRows()
    rows.update_state(update(added=[(0, params({"temperature": 2.0, "ban": [1]}), []),
                                    (3, params({"temperature": 1.0, "ban": [2]}), [])]))
    rows.update_state(update(moved=[(0, 3, Direction.SWAP)]))
    assert rows.rows[3][0] == 2.0 and rows.rows[0][1] == [2]
    rows.update_state(update(moved=[(3, 1, Direction.UNIDIRECTIONAL)]))
    assert sorted(rows.rows) == [0, 1] and rows.rows[1][0] == 2.0
    rows.update_state(update(removed=[0]))
    rows.update_state(None)  # no change to the batch
    assert list(rows.rows) == [1]
    rows.update_state(update(added=[(1, params(), [])]))  # a new request takes the row
    assert rows.rows == {}


def test_engine_processor_refuses_malformed_arguments():
    FirstTokenRows.validate_params(params({"temperature": 1.2, "ban": []}))
    FirstTokenRows.validate_params(params())
    with pytest.raises(ValueError, match="temperature must be > 0"):
        FirstTokenRows.validate_params(params({"temperature": 0.0, "ban": []}))
    with pytest.raises(ValueError, match="must be"):
        FirstTokenRows.validate_params(params({"temp": 1.2}))
