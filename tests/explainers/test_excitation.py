"""Excitation backprop and c-MWP (Zhang et al., 2016): hand-computed values, conservation, refusals."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from explainers import explain
from tests.explainers._tools import randomise_bn


def _tiny() -> nn.Module:
    first, second = nn.Linear(3, 2), nn.Linear(2, 2)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0, -1.0, 2.0], [2.0, 1.0, -1.0]]))
        first.bias.copy_(torch.tensor([0.0, -1.0]))
        second.weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 1.0]]))
        second.bias.copy_(torch.tensor([0.5, 0.5]))
    return nn.Sequential(nn.Flatten(), first, nn.ReLU(), second).eval()


def test_hand_computed_tiny_net() -> None:
    # x = (1, 2, 1); z1 = (1 - 2 + 2, 2 + 2 - 1 - 1) = (1, 2) = a1 after the ReLU.
    x = torch.tensor([1.0, 2.0, 1.0]).view(1, 1, 1, 3)
    model = _tiny()
    # class 0: w+ = (1, 2): P(a1) = (1*1, 2*2) / 5 = (0.2, 0.8).
    # unit 0 (P 0.2): w+ row (1, 0, 2), a*w+ = (1, 0, 2), Z = 3 -> 0.2 * (1/3, 0, 2/3)
    # unit 1 (P 0.8): w+ row (2, 1, 0), a*w+ = (2, 2, 0), Z = 4 -> 0.8 * (1/2, 1/2, 0)
    expected0 = torch.tensor([0.2 / 3 + 0.4, 0.4, 0.4 / 3])
    # class 1: w+ = (0, 1): P(a1) = (0, 1) -> P(x) = (1/2, 1/2, 0).
    # its dual (-w)+ = (1, 0): P(a1) = (1, 0) -> P(x) = (1/3, 0, 2/3); c-MWP = max(difference, 0)
    expected1 = torch.tensor([0.5, 0.5, 0.0])
    contrast1 = torch.tensor([0.5 - 1 / 3, 0.5, 0.0])
    for fast in (True, False):
        maps = explain(model, x, [[0, 1]], ["excitation_backprop", "contrastive_excitation_backprop"], fast=fast,
                       options={"excitation_backprop": {"to": "input"},
                                "contrastive_excitation_backprop": {"to": "input"}})
        torch.testing.assert_close(maps["excitation_backprop"][0, 0, 0], expected0)
        torch.testing.assert_close(maps["excitation_backprop"][0, 1, 0], expected1)
        torch.testing.assert_close(maps["contrastive_excitation_backprop"][0, 1, 0], contrast1)
        # class 0's dual has no positive weight: nothing to subtract
        torch.testing.assert_close(maps["contrastive_excitation_backprop"][0, 0, 0], expected0)
        assert float(maps["excitation_backprop"][0, 0].sum()) == pytest.approx(1.0, abs=1e-6)


def _randomise_bn(model: nn.Module) -> nn.Module:
    return randomise_bn(model, weight_low=-0.5, weight_span=1.5)  # some negative


def _small() -> nn.Module:
    torch.manual_seed(0)
    return _randomise_bn(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, 10),
    ))


def _vgg() -> nn.Module:
    torch.manual_seed(0)
    return _randomise_bn(torchvision.models.vgg11_bn(num_classes=10))


@pytest.mark.parametrize(("arch", "layer", "size"), [("small", "6", 32), ("small", "2", 32), ("vgg11_bn", None, 64)])
def test_conservation_and_fast_copy(arch: str, layer: str | None, size: int) -> None:
    model = _small() if arch == "small" else _vgg()
    torch.manual_seed(1)
    images = torch.randn(2, 3, size, size)
    targets = torch.tensor([[1, 4], [7, 2]])
    names = ["excitation_backprop", "contrastive_excitation_backprop"]
    exact = explain(model, images, targets, names, layer, fast=False, layer_maps=True)
    fast = explain(model, images, targets, names, layer, layer_maps=True)
    mwp = exact["excitation_backprop@layer"]
    assert (mwp >= 0).all()
    torch.testing.assert_close(mwp.sum(dim=(-2, -1)), torch.ones(2, 2), rtol=0, atol=1e-5)  # mass conserved
    contrast = exact["contrastive_excitation_backprop@layer"]
    assert (contrast >= 0).all()
    assert (contrast <= mwp + 1e-6).all()
    assert contrast.sum() > 0
    assert exact["excitation_backprop"].shape == (2, 2, size, size)
    # the fast copy folds BatchNorm as the rule does: the same maps up to rounding. c-MWP is a
    # difference of two nearly equal MWPs (on VGG-11 its norm is ~1e-3 of theirs), so its rounding
    # is measured against the MWP's norm.
    for name in names:
        ours, ref = fast[name + "@layer"], exact[name + "@layer"]
        assert float((ours - ref).norm() / mwp.norm()) < 1e-4


def test_no_trace_left_on_the_model() -> None:
    model = _small()
    for p in model.parameters():
        p.requires_grad_(True)
    model.train()
    images = torch.randn(1, 3, 32, 32)
    explain(model, images, [3], ["excitation_backprop", "contrastive_excitation_backprop"], "6", fast=False)
    assert model.training
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules())


def test_refusals_name_what_cannot_be_propagated() -> None:
    images = torch.randn(1, 3, 64, 64)
    resnet = torchvision.models.resnet18(num_classes=10).eval()
    # from layer4 (the default CAM layer) only the average pooling and fc remain: fine
    maps = explain(resnet, images, [0], ["excitation_backprop"], fast=False, layer_maps=True)
    assert float(maps["excitation_backprop@layer"].sum()) == pytest.approx(1.0, abs=1e-5)
    for fast in (True, False):
        with pytest.raises(ValueError, match="add"):  # from layer3, layer4's residual additions
            explain(resnet, images, [0], ["excitation_backprop"], "layer3", fast=fast)
    gelu = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="GELU"):
        explain(gelu, images, [0], ["excitation_backprop"], "0")
    with pytest.raises(ValueError, match="non-negative inputs"):
        explain(_small(), torch.randn(1, 3, 32, 32), [0], ["excitation_backprop"], options={
            "excitation_backprop": {"to": "input"}})
    with pytest.raises(ValueError, match="non-negative layer output"):  # a convolution before its ReLU
        explain(_small(), torch.randn(1, 3, 32, 32), [0], ["excitation_backprop"], "4", fast=False)
    with pytest.raises(ValueError, match="'to'"):
        explain(_small(), torch.randn(1, 3, 32, 32), [0], ["excitation_backprop"], "6",
                options={"excitation_backprop": {"to": "pixels"}})
