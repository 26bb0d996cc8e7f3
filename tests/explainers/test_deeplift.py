"""DeepLIFT (rescale rule) against Captum ``DeepLift`` on two architectures, plus its own axioms.

Captum registers hooks per module, so it is exact only where every nonlinear module is called once
and no two hooked nonlinear modules are adjacent (a ReLU feeding a MaxPool gets the unmodified
pooling gradient as its ``grad_output``; measured: 5 of 100 random 4x4 nets conv-ReLU-MaxPool
differ, 0 of 100 with a 1x1 identity convolution between them, and both sides still sum to the
delta). The VGG test therefore gives Captum a function-identical copy with an identity 1x1
convolution after each ReLU that feeds a MaxPool, and ours the model as given.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torchvision
from torch import nn

from explainers import explain
from tests.explainers._tools import max_rel as _rel
from tests.explainers._tools import randomise_bn as _randomise_bn

captum_attr = pytest.importorskip("captum.attr")


def _identity_1x1(channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(channels, channels, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))
    return conv


def _small() -> nn.Module:
    torch.manual_seed(0)
    return _randomise_bn(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 1), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(16, 16, 1), nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1), nn.Sigmoid(), nn.Conv2d(16, 16, 1), nn.Tanh(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, 10),
    ))


def _vgg() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    model = _randomise_bn(torchvision.models.vgg11_bn(num_classes=10))
    separated = copy.deepcopy(model)
    layers: list[nn.Module] = []
    for module in separated.features:
        if isinstance(module, nn.MaxPool2d) and isinstance(layers[-1], nn.ReLU):
            channels = next(m for m in reversed(layers) if isinstance(m, nn.Conv2d)).out_channels
            layers.append(_identity_1x1(channels))
        layers.append(module)
    separated.features = nn.Sequential(*layers)
    return model, separated.eval()


def _captum(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, baseline) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return captum_attr.DeepLift(model).attribute(images, baselines=baseline, target=targets).detach()


@pytest.mark.parametrize("arch", ["small", "vgg11_bn"])
@pytest.mark.parametrize("baseline", ["zeros", "tensor"])
def test_deeplift_equals_captum(arch: str, baseline: str) -> None:
    if arch == "small":
        model = reference = _small()
        size = 32
    else:
        model, reference = _vgg()
        size = 64
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(3, 3, size, size, generator=generator)
    targets = torch.tensor([1, 4, 7])
    base = None if baseline == "zeros" else 0.3 * torch.randn(1, 3, size, size, generator=generator)
    options = {} if base is None else {"deeplift": {"baseline": base}}
    ours = explain(model, images, targets, ["deeplift"], options=options, fast=False)["deeplift"]
    ref = _captum(reference, images, targets, 0.0 if base is None else base)
    assert _rel(ours, ref) < 1e-4
    fast = explain(model, images, targets, ["deeplift"], options=options)["deeplift"]
    assert float((fast - ref).norm() / ref.norm()) < 1e-3


def test_deeplift_sums_to_delta_on_resnet18_with_reused_relu() -> None:
    """ResNet-18 calls each block's ReLU module twice (Captum refuses it); every call is ruled."""
    torch.manual_seed(0)
    model = _randomise_bn(torchvision.models.resnet18(num_classes=10))
    images = torch.randn(2, 3, 64, 64)
    targets = torch.tensor([3, 5])
    maps = explain(model, images, targets, ["deeplift", "saliency"], fast=False)
    with torch.no_grad():
        delta = model(images)[[0, 1], targets] - model(torch.zeros_like(images))[[0, 1], targets]
    torch.testing.assert_close(maps["deeplift"].sum(dim=(1, 2, 3)), delta, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(maps["deeplift"], maps["saliency"] * images)  # not input x gradient


def test_deeplift_targets_and_leaves_no_trace() -> None:
    model = _small().train()
    images = torch.randn(2, 3, 32, 32)
    maps = explain(model, images, torch.tensor([[1, 2], [3, 4]]), ["deeplift"])["deeplift"]
    assert maps.shape == (2, 2, 3, 32, 32)
    single = explain(model, images, torch.tensor([2, 4]), ["deeplift"], fast=False)["deeplift"]
    torch.testing.assert_close(maps[:, 1], single, rtol=1e-3, atol=1e-5)
    assert model.training
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
               for m in model.modules())


def test_deeplift_refuses_unknown_layers() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.Flatten(), nn.LazyLinear(3))
    model(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="GELU"):
        explain(model, torch.randn(1, 3, 8, 8), [0], ["deeplift"], fast=False)
