"""Length bias: the GLM recovers a known coefficient, equals the symmetric two-row design,
and `workbench report length-bias` prints it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import DATA, cli

from workbench.algorithms.length_bias import fit_phi, length_bias


def simulated(phi: float, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pairs whose winner is drawn from σ(φ · tanh(Δlen / sd)): (chosen, rejected) lengths."""
    rng = np.random.default_rng(seed)
    a, b = rng.lognormal(6, 0.6, n), rng.lognormal(6, 0.6, n)
    sd = np.sqrt(2 * ((a - b) ** 2).sum() / (2 * n - 1))
    a_wins = rng.random(n) < 1 / (1 + np.exp(-phi * np.tanh((a - b) / sd)))
    return np.where(a_wins, a, b), np.where(a_wins, b, a)


@pytest.mark.parametrize("phi", [0.0, 1.5, -1.0])
def test_known_coefficient_is_recovered(phi):
    chosen, rejected = simulated(phi, 3000)
    result = length_bias(chosen, rejected, bootstrap=300)
    assert result["ci_low"] < phi < result["ci_high"]
    assert result["ci_high"] - result["ci_low"] < 0.5
    assert result["p_at_plus_1sd"] == pytest.approx(1 / (1 + np.exp(-result["coef"] * np.tanh(1))))
    assert result["share_chosen_longer"] == pytest.approx(np.mean(chosen > rejected))
    assert result["n"] == 3000


def test_equals_the_symmetric_design_fit():
    """Each pair twice, (chosen, rejected) → 1 and (rejected, chosen) → 0, no intercept:
    the score of that likelihood is zero at our φ (up to the tiny ridge)."""
    chosen, rejected = simulated(0.8, 500, seed=3)
    delta = chosen - rejected
    sd = np.sqrt(2 * (delta**2).sum() / (2 * 500 - 1))
    x = np.tanh(np.r_[delta, -delta] / sd)
    y = np.r_[np.ones(500), np.zeros(500)]
    phi = length_bias(chosen, rejected, bootstrap=0)["coef"]
    p = 1 / (1 + np.exp(-phi * x))
    assert abs(((y - p) * x).sum()) < 1e-2
    # ties (label 0.5 both ways) pull φ toward 0
    ties = length_bias(chosen, rejected, labels=np.r_[np.ones(250), np.full(250, 0.5)],
                       bootstrap=0)
    assert 0 < ties["coef"] < phi and ties["ties"] == 250
    assert fit_phi(np.zeros(4), np.ones(4))[0] == 0.0  # no length difference: no bias


def test_report_command(tmp_path):
    ws = tmp_path / "ws"
    assert cli("import", str(DATA / "hh_rlhf_harmless_test_600.jsonl.gz"), "--name", "hh",
               workspace=ws).returncode == 0
    done = cli("report", "length-bias", "hh", "--json", "--bootstrap", "200", workspace=ws)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert {"coef", "ci_low", "ci_high", "share_chosen_longer", "p_at_plus_1sd", "n"} <= set(result)
    assert result["n"] == 600 and result["ci_low"] <= result["coef"] <= result["ci_high"]
    text = cli("report", "length-bias", "hh", "--bootstrap", "200", workspace=ws)
    assert "length coefficient" in text.stdout and "chosen is longer in" in text.stdout
    missing = cli("report", "length-bias", "nope", workspace=ws)
    assert missing.returncode == 1 and "no dataset 'nope'" in missing.stderr
