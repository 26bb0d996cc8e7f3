"""Sample-size simulation (studies.analysis.power) against closed forms."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

from studies.analysis.power import allocation, intercepts_for, simulate_power


def test_ci_width_matches_binomial_closed_form() -> None:
    """No worker or item effect, one method, n = 200 judgments at p = 0.7: the mean Wilson width is
    2 * 1.96 * sqrt(p (1 - p) / n) within 10%; the pigeonhole bootstrap is wider, by at most sqrt(3)."""
    r = simulate_power(method_names=["m"], accuracies=[0.7], workers=20, trials_per_worker=10,
                       judgments_per_item=1, worker_sd=0.0, item_sd=0.0, n_sim=200, n_boot=200)  # fmt: skip
    closed = 2 * 1.96 * np.sqrt(0.7 * 0.3 / 200)
    assert r.n_judgments == (200,)
    assert r.wilson_width[0] == pytest.approx(closed, rel=0.10)
    assert closed * 0.9 < r.ci_width[0] < closed * np.sqrt(3) * 1.1
    assert r.pairs == ()
    assert r.power == ()


def test_power_large_difference_is_one() -> None:
    r = simulate_power(method_names=["a", "b"], accuracies=[0.9, 0.5], workers=40, trials_per_worker=20,
                       judgments_per_item=2, n_sim=200, n_boot=200)  # fmt: skip
    assert r.pairs == (("a", "b"),)
    assert r.n_judgments == (400, 400)
    assert r.power[0] >= 0.99


def test_power_equal_accuracies_is_false_positive_rate() -> None:
    r = simulate_power(method_names=["a", "b"], accuracies=[0.7, 0.7], workers=40, trials_per_worker=20,
                       judgments_per_item=2, n_sim=200, n_boot=200)  # fmt: skip
    assert r.power[0] <= 0.10


def test_power_grows_and_width_shrinks_with_workers() -> None:
    kw = {"method_names": ["a", "b"], "accuracies": [0.75, 0.65], "trials_per_worker": 20, "judgments_per_item": 3,
              "n_sim": 100, "n_boot": 100}  # fmt: skip
    small, big = simulate_power(workers=10, **kw), simulate_power(workers=80, **kw)  # type: ignore[arg-type]
    assert big.power[0] > small.power[0]
    assert all(b < s for b, s in zip(big.ci_width, small.ci_width, strict=True))


def test_intercepts_give_population_accuracy() -> None:
    mu = intercepts_for([0.6, 0.85], sd=1.0)
    z = np.random.default_rng(0).normal(size=400_000)
    assert special.expit(mu[0] + z).mean() == pytest.approx(0.6, abs=0.003)
    assert special.expit(mu[1] + z).mean() == pytest.approx(0.85, abs=0.003)
    assert intercepts_for([0.7], sd=0.0)[0] == pytest.approx(special.logit(0.7))


def test_allocation_is_balanced() -> None:
    a = allocation(n_methods=3, workers=12, trials_per_worker=9, judgments_per_item=4)
    item = a.unit * 3 + a.method
    assert np.bincount(item).tolist() == [4] * 27
    assert np.bincount(a.method).tolist() == [36, 36, 36]
    for w in range(12):  # no worker sees an item twice; methods balanced within a worker
        assert np.unique(item[a.worker == w]).size == 9
        assert np.bincount(a.method[a.worker == w]).tolist() == [3, 3, 3]


def test_same_seed_same_result() -> None:
    kw = {"method_names": ["a", "b"], "accuracies": [0.8, 0.7], "workers": 10, "trials_per_worker": 10,
              "judgments_per_item": 2, "n_sim": 20, "n_boot": 50, "seed": 3}  # fmt: skip
    assert simulate_power(**kw) == simulate_power(**kw)  # type: ignore[arg-type]
