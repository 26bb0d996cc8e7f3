"""Sanity checks (cascading / independent randomization), similarities, verdict, figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from explainers.metrics import (
    cascade_data,
    cascade_figure,
    control_explain_fn,
    map_similarity,
    randomizable_layers,
    sanity_cascade,
    sanity_verdict,
)
from explainers.metrics.sanity import SanityResult


def small_cnn(batchnorm: bool = True) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Conv2d(3, 6, 3, padding=1)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(6))
    layers += [nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 16 * 16, 3)]
    return nn.Sequential(*layers).eval()


def input_gradient(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    x = images.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x).gather(1, targets.view(-1, 1)).sum(), x)
    return grad


def test_randomizable_layers_are_conv_and_linear_only():
    assert randomizable_layers(small_cnn()) == ["0", "3", "6"]  # BatchNorm "1" is kept


def test_cascade_never_mutates_the_model_and_walks_top_down():
    model = small_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.randn(3, 3, 16, 16)
    result = sanity_cascade(model, images, [0, 1, 2], input_gradient, keep_maps=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert result.layers == ("6", "3", "0")
    assert set(result.similarity) == {"spearman", "spearman_abs", "ssim", "hog"}
    assert result.similarity["spearman"].shape == (3, 3)
    assert result.randomized.shape == (3, 3, 3, 16, 16)
    # Cascading keeps earlier randomizations: the last maps differ from the first ones.
    assert not torch.allclose(result.randomized[0], result.randomized[-1])
    assert sanity_verdict(result).passed  # input gradient depends on the weights


def test_independent_order_restores_other_layers():
    model = small_cnn(batchnorm=False)
    images = torch.randn(2, 3, 16, 16)
    seen: list[float] = []

    def explain(m: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(float(m[0].weight.detach().sum()))  # first conv as seen by each step
        return input_gradient(m, x, t)

    result = sanity_cascade(model, images, [0, 1], explain, order="independent")
    assert result.layers == ("0", "2", "5")
    original = float(model[0].weight.detach().sum())
    # original map, then step 0 randomizes conv "0", steps 1 and 2 see it restored.
    assert seen[0] == pytest.approx(original)
    assert seen[1] != pytest.approx(original)
    assert seen[2] == pytest.approx(original)
    assert seen[3] == pytest.approx(original)


def test_control_similarity_stays_one_and_fails():
    result = sanity_cascade(small_cnn(), torch.rand(2, 3, 16, 16), [0, 1], control_explain_fn("sobel"))
    for values in result.similarity.values():
        assert torch.allclose(values, torch.ones_like(values), atol=1e-5)
    verdict = sanity_verdict(result)
    assert not verdict.passed
    assert verdict.final == pytest.approx(1.0)


def test_map_similarity_hand_cases():
    a = torch.rand(2, 16, 16) - 0.5
    same = map_similarity(a, a)
    assert all(torch.allclose(v, torch.ones(2), atol=1e-6) for v in same.values())
    flipped = map_similarity(a, -a, measures=("spearman", "spearman_abs"))
    assert torch.allclose(flipped["spearman"], -torch.ones(2))
    assert torch.allclose(flipped["spearman_abs"], torch.ones(2))
    constant = map_similarity(a, torch.zeros(2, 16, 16), measures=("spearman",))
    assert torch.equal(constant["spearman"], torch.zeros(2))  # constant map: correlation counted 0
    with pytest.raises(ValueError, match="unknown similarity"):
        map_similarity(a, a, measures=("l2",))


def test_verdict_rule_on_made_up_curves():
    def result(curve: list[float]) -> SanityResult:
        values = torch.tensor(curve)[:, None].repeat(1, 2)
        return SanityResult(
            "cascading",
            tuple(str(i) for i in range(len(curve))),
            {"spearman_abs": values},
            torch.zeros(2, 4, 4),
        )

    assert sanity_verdict(result([0.8, 0.5, 0.2, 0.1])).passed
    assert not sanity_verdict(result([0.8, 0.7, 0.6, 0.55])).passed  # never falls below 0.5
    assert sanity_verdict(result([-0.5, 0.0, -0.2, 0.45])).passed  # stays below 0.5
    rebound = sanity_verdict(result([0.1, 0.0, 0.6, 0.3]))  # back above 0.5: not monotone-ish
    assert not rebound.passed
    assert rebound.largest_rise == pytest.approx(0.6)


def test_cascade_figure_and_data():
    result = sanity_cascade(
        small_cnn(), torch.randn(2, 3, 16, 16), [0, 1], input_gradient, measures=("spearman",)
    )
    data = cascade_data(result, "spearman")
    assert data["steps"] == ["original", "6", "3", "0"]
    assert data["mean"][0] == 1.0
    assert data["low"][1] <= data["mean"][1] <= data["high"][1]
    fig = cascade_figure({"saliency": result, "other": result}, measure="spearman")
    assert {line.get_label() for line in fig.axes[0].lines} >= {"saliency", "other"}


def test_unknown_layer_is_named():
    with pytest.raises(ValueError, match="unknown layers"):
        sanity_cascade(small_cnn(), torch.rand(1, 3, 16, 16), [0], input_gradient, layers=["head"])


def test_spearman_equals_quantus_mprt_top_down():
    """quantus.MPRT (top_down, Spearman, no abs/normalise) on a model without BatchNorm.

    Quantus resets every module with ``reset_parameters`` (also BatchNorm, which we keep) and
    re-seeds ``torch.manual_seed(seed + 1)`` before each layer; we pass that scheme through
    ``randomize_layer`` so both randomize identically.
    """
    quantus = pytest.importorskip("quantus")
    model = small_cnn(batchnorm=False)
    images = torch.randn(3, 3, 16, 16)
    targets = torch.tensor([0, 2, 1])

    def explain_numpy(model, inputs, targets, **kwargs):
        x = torch.as_tensor(inputs, dtype=torch.float32)
        return input_gradient(model, x, torch.as_tensor(targets)).sum(1, keepdim=True).numpy()

    a_batch = explain_numpy(model, images.numpy(), targets.numpy())
    metric = quantus.MPRT(
        layer_order="top_down",
        seed=42,
        abs=False,
        normalise=False,
        disable_warnings=True,
        similarity_func=quantus.similarity_func.correlation_spearman,
    )
    q = metric(
        model=model,
        x_batch=images.numpy(),
        y_batch=targets.numpy(),
        a_batch=a_batch,
        explain_func=explain_numpy,
        device="cpu",
        batch_size=3,
    )

    def quantus_like(module: nn.Module, step: int) -> None:
        torch.manual_seed(43)
        module.reset_parameters()

    ours = sanity_cascade(
        model, images, targets, input_gradient, measures=("spearman",), randomize_layer=quantus_like
    )
    assert list(q)[1:] == list(ours.layers)  # first key is "original"
    for step, layer in enumerate(ours.layers):
        np.testing.assert_allclose(ours.similarity["spearman"][step].numpy(), q[layer], atol=1e-5)
