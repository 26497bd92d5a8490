"""The trainer glue: RDPO's and LongPO's losses at their known values (docs/methods.md §5.5,
§6.5), and one real optimisation step of each trainer, and of TRL's plain DPOTrainer, on what
`workbench export` writes, with a 2-layer Llama of the embedded model's architecture."""

from __future__ import annotations

import math
from pathlib import Path

import datasets
import pytest
import torch
from conftest import cli
from method_datasets import explain, long_pairs_in

from workbench.trainers.losses import dpo_loss, longpo_loss, rdpo_loss


def test_rdpo_loss_known_value():
    t = torch.tensor
    loss = rdpo_loss(t([-10.0]), t([-12.0]), t([-11.0]), t([-11.0]), t([-50.0]),
                     beta=0.1, gamma=0.1)
    assert round(loss.item(), 6) == 5.604854
    dpo = dpo_loss(t([-10.0]), t([-12.0]), t([-11.0]), t([-11.0]), beta=0.1)
    assert round(dpo.item(), 6) == 0.598139  # -log σ(0.2); the rationale part is -log σ(-5)


def test_longpo_loss_known_value():
    t = torch.tensor
    dpo = dpo_loss(t([-100.0]), t([-120.0]), t([-90.0]), t([-95.0]), beta=0.01)
    assert round(dpo.item(), 6) == 0.620957
    total = longpo_loss(t(2.0), t([-100.0]), t([-120.0]), t([-90.0]), t([-95.0]),
                        beta=0.01, dpo_lambda=0.01)
    assert math.isclose(total.item(), 2.0 + 0.01 * 0.620957, rel_tol=1e-6)


# one real step on the exports ------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded model's tokenizer and chat template on a 2-layer Llama of its architecture
    (as test_export.py's TRL test: the format handling is the same, the step takes seconds)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from workbench.models.embedded import ensure_converted

    embedded = ensure_converted()
    config = AutoConfig.from_pretrained(embedded, num_hidden_layers=2, hidden_size=64,
                                        intermediate_size=128, num_attention_heads=4,
                                        num_key_value_heads=2, head_dim=16)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("small-llama")  # trainers load their reference from a path
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(embedded).save_pretrained(path)
    return path


def _args(cls, out: Path, **extra):
    return cls(output_dir=str(out), per_device_train_batch_size=2, max_steps=1, report_to=[],
               use_cpu=True, save_strategy="no", logging_steps=1, max_length=256, **extra)


def _logps(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Summed log-probs of the marked tokens from the model's plain logits (not the fused head
    the trainers use), to check the trainers' losses independently."""
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, :-1]
    picked = torch.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
    return (picked * mask[:, 1:]).sum(1)


def _changed(before: dict[str, torch.Tensor], model) -> bool:
    return any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.slow
def test_dpo_trainer_takes_the_default_export_with_method_columns(ws, tmp_path: Path,
                                                                  monkeypatch, small_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    explain(ws, tmp_path, monkeypatch)
    out = tmp_path / "default"
    assert cli("export", "explained", "--out", str(out), workspace=ws.root).returncode == 0
    data = datasets.load_from_disk(str(out))["train"]
    assert {"rationale", "curriculum_iteration", "margin"} <= set(data.column_names)
    model = AutoModelForCausalLM.from_pretrained(small_llama)
    trainer = DPOTrainer(model=model, args=_args(DPOConfig, tmp_path / "o"), train_dataset=data,
                         processing_class=AutoTokenizer.from_pretrained(small_llama))
    assert trainer.train().training_loss > 0


@pytest.mark.slow
def test_rdpo_trainer_trains_on_the_rdpo_export(ws, tmp_path: Path, monkeypatch, small_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig

    from workbench.trainers.rdpo import RDPOTrainer

    explain(ws, tmp_path, monkeypatch)
    out = tmp_path / "rdpo"
    result = cli("export", "explained", "--trl", "rdpo", "--out", str(out), workspace=ws.root)
    assert result.returncode == 0, result.stderr
    data = datasets.load_from_disk(str(out))["train"]
    model = AutoModelForCausalLM.from_pretrained(small_llama)
    tokenizer = AutoTokenizer.from_pretrained(small_llama)
    trainer = RDPOTrainer(model=model, args=_args(DPOConfig, tmp_path / "o", beta=0.1),
                          train_dataset=data, processing_class=tokenizer, rationale_gamma=0.1)
    # the rationale sequence is x_rat as a user turn, then r as the assistant's reply
    row = trainer.train_dataset[0]
    text = tokenizer.decode(row["rationale_prompt_ids"] + row["rationale_ids"])
    assert data[0]["rationale_prompt"] in text and tokenizer.decode(
        row["rationale_ids"]).startswith(data[0]["rationale"])
    # the trainer's loss is rdpo_loss of the log-probs computed from plain logits
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
    policy = _logps(trainer.model, batch["input_ids"], batch["completion_mask"])
    ref = _logps(trainer.ref_model, batch["input_ids"], batch["completion_mask"])
    rationale = _logps(trainer.model, batch["rationale_input_ids"],
                       batch["rationale_completion_mask"])
    expected = rdpo_loss(*policy.chunk(2), *ref.chunk(2), rationale, beta=0.1, gamma=0.1).mean()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-4)
    assert expected.item() > math.log(2)  # the rationale term is really there
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert trainer.train().training_loss > 0
    assert _changed(before, trainer.model)


@pytest.mark.slow
def test_longpo_trainer_trains_on_the_longpo_export(ws, tmp_path: Path, monkeypatch,
                                                     small_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig

    from workbench.io.layouts_longpo import longpo_messages
    from workbench.trainers.longpo import LongPOTrainer, assistant_tokens

    long_pairs_in(ws, tmp_path, monkeypatch)
    out = tmp_path / "longpo"
    result = cli("export", "pairs", "--trl", "longpo", "--out", str(out), workspace=ws.root)
    assert result.returncode == 0, result.stderr
    data = datasets.load_from_disk(str(out))["train"]
    model = AutoModelForCausalLM.from_pretrained(small_llama)
    tokenizer = AutoTokenizer.from_pretrained(small_llama)
    reference = AutoModelForCausalLM.from_pretrained(small_llama)  # the initial model
    trainer = LongPOTrainer(model=model, args=_args(DPOConfig, tmp_path / "o", beta=0.01),
                            train_dataset=data, processing_class=tokenizer, dpo_lambda=0.01)
    # the reply masks mark exactly the answers of both turns
    record = data[0]
    ids, mask = assistant_tokens(tokenizer, longpo_messages(record)["chosen"])
    marked = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
    assert all(answer in marked for answer in record["chosens"])
    assert record["questions"][1] not in marked and record["prompt"] not in marked
    # reference log-probs: the initial model on the short conversations, summed over turns
    row = trainer.train_dataset[0]
    short = sum(_logps(reference, torch.tensor([i]), torch.tensor([m])).item()
                for i, m in zip(row["ref_chosen_input_ids"], row["ref_chosen_completion_mask"],
                                strict=True))
    assert row["ref_chosen_logps"] == pytest.approx(short, rel=1e-5)  # padded batch vs one
    # the trainer's loss is longpo_loss of independently computed parts
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
    ids, marks = batch["input_ids"], batch["completion_mask"]
    policy = _logps(trainer.model, ids, marks)
    chosen_tokens = marks.chunk(2)[0][:, 1:].sum()
    nll = -policy.chunk(2)[0].sum() / chosen_tokens
    expected = longpo_loss(nll, *policy.chunk(2), batch["ref_chosen_logps"],
                           batch["ref_rejected_logps"], beta=0.01, dpo_lambda=0.01).mean()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert trainer.train().training_loss > 0
    assert _changed(before, trainer.model)
