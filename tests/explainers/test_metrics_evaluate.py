"""evaluate_methods (the study-side entry point) and the bootstrap interval."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from explainers.metrics import HIGHER_IS_BETTER, bootstrap_interval, evaluate_methods, pointing_game


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16 * 16, 2)
    ).eval()


def test_evaluate_methods_returns_one_value_per_image_and_metric():
    model = tiny_model()
    images = torch.rand(4, 3, 16, 16)
    boxes = [[(2, 2, 8, 8)], [(8, 8, 16, 16)], [], [(0, 0, 16, 16)]]
    maps = {"random": torch.rand(4, 16, 16), "grad": torch.randn(4, 3, 16, 16)}
    out = evaluate_methods(
        model,
        images,
        [0, 1, 0, 1],
        maps,
        boxes=boxes,
        labels=[0, 1, 0, 1],
        occlusion=torch.rand(4, 4, 4),
        steps=4,
        batch_size=5,
    )
    assert set(out) == {"random", "grad"}
    assert set(out["random"]) == set(HIGHER_IS_BETTER)
    for row in out.values():
        assert all(v.shape == (4,) and v.dtype == np.float64 for v in row.values())
        assert math.isnan(row["pointing_game"][2])  # no box for the class: skipped
        assert math.isnan(row["localization_error"][2])
    masks = torch.zeros(4, 16, 16, dtype=torch.bool)
    masks[0, 2:8, 2:8] = masks[1, 8:, 8:] = masks[3] = True
    np.testing.assert_array_equal(
        out["random"]["pointing_game"], pointing_game(maps["random"], masks).double().numpy()
    )


def test_evaluate_methods_skips_metrics_without_annotations():
    out = evaluate_methods(
        tiny_model(),
        torch.rand(2, 3, 16, 16),
        [0, 1],
        {"m": torch.rand(2, 16, 16)},
        curves=("deletion",),
        steps=2,
    )
    assert set(out["m"]) == {"deletion_auc"}
    with pytest.raises(ValueError, match="maps_by_method\\['m'\\]"):
        evaluate_methods(tiny_model(), torch.rand(2, 3, 16, 16), [0, 1], {"m": torch.rand(3, 16, 16)})


def test_bootstrap_interval():
    constant = bootstrap_interval([0.5, 0.5, math.nan, 0.5])
    assert (constant.mean, constant.low, constant.high, constant.n) == (0.5, 0.5, 0.5, 3)
    rng = np.random.default_rng(0)
    values = rng.normal(1.0, 1.0, size=400)
    ci = bootstrap_interval(values, seed=1)
    assert ci.low < values.mean() < ci.high
    # normal-theory half-width 1.96 * s / sqrt(n) ~= 0.098
    assert ci.high - ci.low == pytest.approx(2 * 1.96 * values.std() / 20, rel=0.15)
    assert bootstrap_interval([math.nan]).n == 0
