"""The optional mixed-effects logistic model recovers known method effects."""

from __future__ import annotations

import numpy as np
import pytest

from studies.analysis import Judgments
from studies.analysis.mixed import mixed_logit


def test_mixed_logit_recovers_method_effects_and_worker_spread():
    rng = np.random.default_rng(0)
    n_workers, n_items, n = 20, 12, 1000
    worker = rng.integers(0, n_workers, n)
    item = rng.integers(0, n_items, n)
    method = rng.integers(0, 3, n)
    truth = np.array([-1.0, 0.0, 1.0])
    logit = truth[method] + rng.normal(0, 1.0, n_workers)[worker] + rng.normal(0, 0.2, n_items)[item]
    is_catch = rng.random(n) < 0.05
    j = Judgments(
        method=method,
        worker=worker,
        item=item,
        method_names=("a", "b", "c", "unused"),
        correct=rng.random(n) < 1 / (1 + np.exp(-logit)),
        is_catch=is_catch,
    )
    result = mixed_logit(j)
    a, b, c, unused = result.rows
    assert result.n_judgments == (~is_catch).sum()
    assert (result.n_workers, result.n_items) == (n_workers, n_items)
    assert c.log_odds - a.log_odds == pytest.approx(2.0, abs=0.4)
    assert b.log_odds - a.log_odds == pytest.approx(1.0, abs=0.4)
    assert a.low < a.log_odds < a.high
    assert b.accuracy_typical == pytest.approx(1 / (1 + np.exp(-b.log_odds)))
    assert 0.5 < result.worker_sd < 1.6
    assert result.item_sd < result.worker_sd
    assert unused.n_judgments == 0
    assert np.isnan(unused.log_odds)
    with pytest.raises(ValueError, match="needs Judgments.correct"):
        mixed_logit(Judgments(method=[0], worker=[0], item=[0], method_names=("m",)))
