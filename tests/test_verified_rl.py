"""Checked data for RL and DPO: sample k answers, `verify`, keep a pass-rate band, pair a
passing with a failing answer, export `--trl grpo` with the reward function and the default
preference export; TRL's GRPOTrainer and DPOTrainer each train a step on them. A scripted
model makes the pass rates known; the acceptance run uses the embedded model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
import polars as pl
import pytest
from conftest import cli
from scripted_backend import ScriptedBackend, install

from workbench.algorithms.rewards import completion_text, verified_reward
from workbench.algorithms.stats import pass_rates
from workbench.models.base import Generation
from workbench.pipeline import build_pipeline
from workbench.runner import run_pipeline
from workbench.verifiers.math import check

SUMS = [(3, 4), (2, 2), (5, 1), (6, 3), (7, 8), (9, 4), (12, 5), (1, 1)]
BAND = {"where": {"pass_rate": {"min": 0.2, "max": 0.8}}, "reason": "pass rate outside 0.2-0.8"}


class Samples(ScriptedBackend):
    """Scripted replies that differ per sample: `reply(messages)` returns the n texts."""

    def generate(self, prompts, params, seeds=None):
        out = []
        for prompt in prompts:
            self.prompts.append(prompt)
            texts = self.reply(list(prompt))
            out.append([Generation(texts[j % len(texts)], "stop", 10, len(texts[j % len(texts)]))
                        for j in range(params.n)])
        return out


def sums_file(tmp_path: Path, pairs: list[tuple[int, int]] = SUMS) -> Path:
    path = tmp_path / "sums.parquet"
    pl.DataFrame({"prompt": [f"What is {a} + {b}? Answer with the number only."
                             for a, b in pairs],
                  "answer": [str(a + b) for a, b in pairs]}).write_parquet(path)
    return path


def right_times(messages: list[dict[str, str]]) -> list[str]:
    """Question i of SUMS gets i % 5 right answers out of 4 (pass rates 0, .25, ... 1)."""
    question = messages[-1]["content"]
    i = next(k for k, (a, b) in enumerate(SUMS) if question.startswith(f"What is {a} + {b}?"))
    a, b = SUMS[i]
    right = [f"{a + b}", f"It is {a + b}.", f"{a} plus {b} makes {a + b}.", f"{a + b}!"]
    wrong = ["No idea.", f"It is {a + b + 1}, I am sure of it.", f"{a * b + 100}", "Perhaps 0."]
    n_right = min(i % 5, 4)
    return right[:n_right] + wrong[: 4 - n_right]


def band_and_pairs(ws, tmp_path: Path, model: dict, sample: dict[str, Any]) -> tuple:
    """sample -> verify -> band (dataset `band`), then band -> verified pairs (`pairs`)."""
    first = run_pipeline(build_pipeline({
        "name": "band", "input": str(sums_file(tmp_path)), "output": "band", "seed": 0,
        "models": {"default": model},
        "steps": [{"sample_responses": {"n": 4, **sample}},
                  {"verify": {"checker": "math", "answer": "answer"}},
                  {"filter": BAND}]}), ws, progress=False)
    second = run_pipeline(build_pipeline({
        "name": "pairs", "input": "band", "output": "pairs",
        "steps": [{"pairs": {"method": "verified"}}]}), ws, progress=False)
    return first, second


def check_band_and_pairs(ws, first, second) -> None:
    """What the band keeps and what the pairs hold, whatever the model sampled."""
    verify, band = first.steps[1], first.steps[2]
    assert sum(verify.detail["report"]["rows_by_pass_rate"].values()) == verify.rows_out
    kept = ws.read("band")
    assert kept.height == band.rows_out > 0
    assert kept["pass_rate"].is_between(0.2, 0.8).all()
    assert band.rows_in - band.rows_out == band.dropped.get("pass rate outside 0.2-0.8", 0)
    pairs = ws.read("pairs")
    assert pairs.height == second.steps[0].rows_out > 0
    for row in pairs.iter_rows(named=True):
        assert check(row["chosen"], row["answer"]).passed
        assert not check(row["rejected"], row["answer"]).passed
        assert row["chosen_passed"] and not row["rejected_passed"]
        assert row["chosen"] in row["responses"] and row["rejected"] in row["responses"]
        assert 0 < row["pass_rate"] < 1


def grpo_export(ws, tmp_path: Path, name: str) -> datasets.Dataset:
    out = tmp_path / f"grpo-{name}"
    result = cli("export", name, "--trl", "grpo", "--out", str(out), workspace=ws.root)
    assert result.returncode == 0, result.stderr
    card = (out / "README.md").read_text()
    assert "## Pass rate (verify)" in card and "verified_reward" in card
    return datasets.load_from_disk(str(out))["train"]


def test_band_pairs_and_grpo_export_on_known_pass_rates(ws, tmp_path: Path, monkeypatch):
    model = install(monkeypatch, Samples(right_times, "sums"))
    first, second = band_and_pairs(ws, tmp_path, model, {"max_new_tokens": 16})
    check_band_and_pairs(ws, first, second)
    band = ws.read("band")
    assert band["pass_rate"].to_list() == [0.25, 0.5, 0.75, 0.25, 0.5]  # questions 1-3, 6, 7
    assert first.steps[2].dropped == {"pass rate outside 0.2-0.8": 3}
    pairs = ws.read("pairs")
    assert pairs.height == 5 and (pairs["pair_method"] == "verified").all()
    # the shortest passing answer against the longest failing one
    assert pairs.filter(pl.col("answer") == "4").select("chosen", "rejected").row(0) == (
        "4", "It is 5, I am sure of it.")
    data = grpo_export(ws, tmp_path, "band")
    assert data.column_names == ["prompt", "checker", "answer", "pass_rate"]
    assert data["answer"] == band["answer"].to_list() and set(data["checker"]) == {"math"}
    assert data[0]["prompt"] == [{"role": "user", "content": "What is 2 + 2? Answer with the "
                                                             "number only."}]
    # the pairs' GRPO export finds the checker in its input's lineage, one row per prompt
    again = grpo_export(ws, tmp_path, "pairs")
    assert again["answer"] == data["answer"]
    # the reward function gives the same verdicts as verify did
    completions = [[{"role": "assistant", "content": c}] for c in pairs["chosen"]]
    assert verified_reward(pairs["prompt"].to_list(), completions, answer=pairs["answer"],
                           checker=["math"] * pairs.height) == [1.0] * pairs.height
    assert verified_reward([], pairs["rejected"].to_list(),
                           answer=pairs["answer"]) == [0.0] * pairs.height


def test_verified_reward_applies_each_checker():
    assert completion_text([{"role": "assistant", "content": "<think>2+2=5?</think>It is 4."}]) \
        == "It is 4."
    assert verified_reward([], ["<think>maybe 5</think> \\boxed{4}", "5"], answer=["4", "4"]) \
        == [1.0, 0.0]
    assert verified_reward([], ["abc-123", "abc"], answer=[r"\d+$", r"\d+$"],
                           checker="regex") == [1.0, 0.0]
    assert verified_reward([], ['{"a": 1}', '{"a": "x"}'], checker="json_schema",
                           answer=[{"type": "object", "properties": {"a": {"type": "integer"}}}] * 2
                           ) == [1.0, 0.0]
    code = "```python\ndef add(a, b):\n    return a + b\n```"
    assert verified_reward([], [code, code.replace("a + b", "a - b")], checker="code",
                           tests=["assert add(2, 3) == 5"] * 2) == [1.0, 0.0]
    assert verified_reward([], ["4"], answer=[None]) == [0.0]
    with pytest.raises(ValueError, match="unknown checker"):
        verified_reward([], ["4"], answer=["4"], checker="vibes")


def test_pass_rates_bin_by_value_or_in_tenths():
    few = pass_rates(pl.LazyFrame({"pass_rate": [0.0, 0.25, 0.25, 1.0, None]}))
    assert few.rows() == [(0.0, 0.0, 1), (0.25, 0.25, 2), (1.0, 1.0, 1)]
    many = pass_rates(pl.LazyFrame({"pass_rate": [i / 20 for i in range(21)]}))
    assert many["prompts"].to_list() == [2] * 9 + [3] and many["bin"][-1] == pytest.approx(0.9)
    assert pass_rates(pl.LazyFrame({"x": [1]})).height == 0
    # verified pairs: several rows to a prompt, each prompt counted once
    prompt = [[{"role": "user", "content": q}] for q in ("a", "a", "a", "b", "c", "c")]
    pairs = pl.LazyFrame({"prompt": prompt, "pass_rate": [0.5, 0.5, 0.5, 0.25, 0.5, 0.5]})
    assert pass_rates(pairs).rows() == [(0.25, 0.25, 1), (0.5, 0.5, 2)]


def test_grpo_export_needs_a_checker_and_a_truth(ws, tmp_path: Path):
    prompt = [[{"role": "user", "content": "What is 1 + 1?"}]]
    ws.write_dataset("bare", pl.DataFrame({"prompt": prompt, "answer": ["2"]}), "instruction")
    refused = cli("export", "bare", "--trl", "grpo", "--out", str(tmp_path / "a"),
                  workspace=ws.root)
    assert refused.returncode == 1 and "run `verify`" in refused.stderr
    ws.write_dataset("no_truth", pl.DataFrame({"prompt": prompt, "checker": ["math"]}),
                     "instruction")
    refused = cli("export", "no_truth", "--trl", "grpo", "--out", str(tmp_path / "b"),
                  workspace=ws.root)
    assert refused.returncode == 1 and "no `answer` or `tests` column" in refused.stderr


# one training step each, on what the exports hold ---------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_models import small_llama

    return small_llama(tmp_path_factory.mktemp("tiny-llama"))


def train_grpo(data: datasets.Dataset, tiny: Path, out: Path) -> list[dict[str, Any]]:
    """One GRPOTrainer step with `verified_reward`; returns what the reward function saw."""
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    seen: list[dict[str, Any]] = []

    def reward(prompts, completions, **columns):
        rewards = verified_reward(prompts, completions, **columns)
        seen.append({"answer": list(columns["answer"]), "checker": list(columns["checker"]),
                     "rewards": rewards, "completions": completions})
        return rewards

    args = GRPOConfig(output_dir=str(out), per_device_train_batch_size=2, num_generations=2,
                      max_completion_length=8, max_steps=1, report_to=[], use_cpu=True,
                      save_strategy="no", logging_steps=1)
    trainer = GRPOTrainer(model=str(tiny), reward_funcs=reward, args=args, train_dataset=data,
                          processing_class=AutoTokenizer.from_pretrained(tiny))
    assert trainer.train().global_step == 1
    return seen


def train_dpo(data: datasets.Dataset, tiny: Path, out: Path) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(output_dir=str(out), per_device_train_batch_size=2, max_steps=1,
                     report_to=[], use_cpu=True, save_strategy="no", logging_steps=1,
                     max_length=128)
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny), args=args,
                         train_dataset=data, processing_class=AutoTokenizer.from_pretrained(tiny))
    return trainer.train().training_loss


@pytest.mark.slow
def test_grpo_trainer_takes_the_export_and_calls_the_reward(ws, tmp_path: Path, monkeypatch,
                                                            tiny):
    model = install(monkeypatch, Samples(right_times, "sums"))
    band_and_pairs(ws, tmp_path, model, {"max_new_tokens": 16})
    data = grpo_export(ws, tmp_path, "band")
    seen = train_grpo(data, tiny, tmp_path / "grpo")
    assert seen and all(set(s["checker"]) == {"math"} for s in seen)
    assert all(a in data["answer"] for s in seen for a in s["answer"])
    for s in seen:  # the rewards are the checker's verdicts on what the model wrote
        assert s["rewards"] == [float(check(completion_text(c), a).passed)
                                for c, a in zip(s["completions"], s["answer"], strict=True)]


@pytest.mark.slow
def test_acceptance_pipeline_on_the_embedded_model(ws, tmp_path: Path, tiny):
    """Acceptance 3: k = 4 samples of the embedded model, verify, a pass-rate band, verified
    pairs; GRPOTrainer trains a step on the `--trl grpo` export, DPOTrainer on the default
    preference export."""
    embedded = {"backend": "transformers", "model": "embedded"}
    first, second = band_and_pairs(ws, tmp_path, embedded,
                                   {"temperature": 1.0, "max_new_tokens": 8})
    check_band_and_pairs(ws, first, second)
    data = grpo_export(ws, tmp_path, "band")
    assert set(data["checker"]) == {"math"} and all(0.2 <= r <= 0.8 for r in data["pass_rate"])
    seen = train_grpo(data, tiny, tmp_path / "grpo")
    assert seen and len(seen[0]["rewards"]) == len(seen[0]["completions"])
    out = tmp_path / "dpo"
    result = cli("export", "pairs", "--out", str(out), workspace=ws.root)
    assert result.returncode == 0, result.stderr
    pairs = datasets.load_from_disk(str(out))["train"]
    assert {"chosen_passed", "rejected_passed", "pass_rate", "pair_method"} <= set(
        pairs.column_names)
    assert all(pairs["chosen_passed"]) and not any(pairs["rejected_passed"])
    assert train_dpo(pairs, tiny, tmp_path / "dpo-run") > 0
