"""LRP (``lrp_epsilon_plus``, ``lrp_epsilon_gamma_box``) against Zennit's ``EpsilonPlus`` and
``EpsilonGammaBox`` composites with ``SequentialMergeBatchNorm``, on two architectures.

Zennit runs on a deep copy (its canonizer edits parameters in place while it runs). The output
relevance on both sides is the one-hot target. Measured (CPU, float32): the maps are bitwise equal
or within 2e-7 max relative error, on the model as given and on the fast copy.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

from explainers import explain
from tests.explainers._tools import max_rel as _rel
from tests.explainers._tools import randomise_bn as _randomise_bn

zennit = pytest.importorskip("zennit")
from zennit.attribution import Gradient  # noqa: E402
from zennit.canonizers import SequentialMergeBatchNorm  # noqa: E402
from zennit.composites import EpsilonGammaBox, EpsilonPlus  # noqa: E402

METHODS = ("lrp_epsilon_plus", "lrp_epsilon_gamma_box")


def _small() -> nn.Module:
    torch.manual_seed(0)
    return _randomise_bn(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(64, 32), nn.ReLU(), nn.Dropout(), nn.Linear(32, 10),
    ))


def _vgg() -> nn.Module:
    torch.manual_seed(0)
    return _randomise_bn(torchvision.models.vgg11_bn(num_classes=10))


def _zennit(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, method: str, **options) -> torch.Tensor:
    model = copy.deepcopy(model)
    canonizers = [SequentialMergeBatchNorm()]
    if method == "lrp_epsilon_plus":
        composite = EpsilonPlus(canonizers=canonizers, **options)
    else:
        composite = EpsilonGammaBox(canonizers=canonizers, **options)
    with Gradient(model, composite) as attributor:
        _, relevance = attributor(images, torch.eye(10)[targets])
    return relevance.detach()


_BOUNDS = {"low": torch.tensor([-2.0, -1.5, -1.8]).view(1, 3, 1, 1), "high": torch.tensor([2.2, 2.4, 2.6]).view(1, 3, 1, 1)}


@pytest.mark.parametrize("arch", ["small", "vgg11_bn"])
@pytest.mark.parametrize("method", METHODS)
def test_lrp_equals_zennit(arch: str, method: str) -> None:
    model, size = (_small(), 32) if arch == "small" else (_vgg(), 64)
    images = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([1, 4, 7])
    options = dict(_BOUNDS, gamma=0.3, epsilon=1e-5) if method == "lrp_epsilon_gamma_box" else {"epsilon": 1e-5}
    ref = _zennit(model, images, targets, method, **options)
    ours = explain(model, images, targets, [method], options={method: options}, fast=False)[method]
    assert ours.shape == images.shape
    assert _rel(ours, ref) < 1e-4
    fast = explain(model, images, targets, [method], options={method: options})[method]
    assert _rel(fast, ref) < 1e-4


def test_default_bounds_are_imagenet_pixel_bounds() -> None:
    model, images, targets = _small(), torch.randn(2, 3, 32, 32), torch.tensor([0, 3])
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    ref = _zennit(model, images, targets, "lrp_epsilon_gamma_box", low=-mean / std, high=(1 - mean) / std)
    ours = explain(model, images, targets, "lrp_epsilon_gamma_box", fast=False)["lrp_epsilon_gamma_box"]
    assert _rel(ours, ref) < 1e-4


def test_conservation_on_a_bias_free_net() -> None:
    """z+, gamma, ZBox, Norm, pass and gradient layers conserve relevance when no bias absorbs any;
    the top epsilon rule keeps ``z / (z + epsilon)`` of it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(6, 8, 3, padding=1, bias=False), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(8 * 4 * 4, 5, bias=False)).eval()
    images = torch.randn(4, 3, 16, 16)
    targets = torch.tensor([0, 1, 2, 3])
    maps = explain(model, images, targets, list(METHODS), fast=False)
    with torch.no_grad():
        logit = model(images)[range(4), targets]
    kept = logit / (logit + 1e-6 * logit.sign())  # the top epsilon rule's share (its logits are ~1e-3)
    for method in METHODS:  # measured: within 7e-5 of it
        torch.testing.assert_close(maps[method].sum(dim=(1, 2, 3)), kept, rtol=0, atol=2e-4)


def test_refuses_resnet_and_unknown_layers() -> None:
    model = torchvision.models.resnet18(num_classes=10).eval()
    for method in METHODS:
        with pytest.raises(ValueError, match="ResNet"):
            explain(model, torch.randn(1, 3, 32, 32), [0], [method], fast=False)
        with pytest.raises(ValueError, match="ResNet"):
            explain(model, torch.randn(1, 3, 32, 32), [0], [method])
    odd = nn.Sequential(nn.Conv2d(3, 4, 3), nn.LayerNorm([4, 6, 6]), nn.Flatten(), nn.Linear(144, 3))
    with pytest.raises(ValueError, match="LayerNorm"):
        explain(odd, torch.randn(1, 3, 8, 8), [0], ["lrp_epsilon_plus"], fast=False)
    with pytest.raises(ValueError, match="low"):
        explain(_small(), torch.randn(1, 3, 32, 32), [0], ["lrp_epsilon_gamma_box"],
                options={"lrp_epsilon_gamma_box": {"low": 1.0, "high": 0.0}})


def test_targets_and_no_trace_left() -> None:
    model = _small().train()
    images = torch.randn(2, 3, 32, 32)
    maps = explain(model, images, torch.tensor([[1, 2], [3, 4]]), list(METHODS))
    single = explain(model, images, torch.tensor([2, 4]), list(METHODS), fast=False)
    for method in METHODS:
        assert maps[method].shape == (2, 2, 3, 32, 32)
        torch.testing.assert_close(maps[method][:, 1], single[method], rtol=1e-4, atol=1e-7)
    assert model.training
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
               for m in model.modules())
