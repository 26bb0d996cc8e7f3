"""Backward rules: every rectifier spelling is ruled; nothing leaks; model state unchanged."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from explainers import explain


class _RefGuided(torch.autograd.Function):
    """Independent reference: guided backward of clamp(x, 0, hi)."""

    @staticmethod
    def forward(ctx, x, hi):
        ctx.save_for_backward(x)
        ctx.hi = hi
        return x.clamp(0, hi)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g.clamp(min=0) * ((x > 0) & (x < ctx.hi)).to(g.dtype), None


class FunctionalNet(nn.Module):
    """Uses every rectifier spelling; ``reference=True`` swaps them all for _RefGuided."""

    def __init__(self, reference: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.reference = reference
        self.convs = nn.ModuleList(nn.Conv2d(c, 6, 3, padding=1) for c in (3, 6, 6, 6, 6, 6, 6, 6))
        self.shared = nn.ReLU(inplace=True)  # reused in-place module
        self.relu6 = nn.ReLU6(inplace=True)
        self.fc = nn.Linear(6, 5)

    def act(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if self.reference:
            return _RefGuided.apply(x, 6.0 if i in (5, 6) else float("inf"))
        spelled = [
            lambda t: F.relu(t), lambda t: torch.relu(t), lambda t: t.relu_(),
            lambda t: (torch.relu_(t), t)[1], lambda t: self.shared(t),
            lambda t: F.relu6(t), lambda t: self.relu6(t), lambda t: self.shared(t),
        ]
        return spelled[i](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = self.act(i, conv(x) * 4.0)  # * 4: some values exceed the ReLU6 cap
        return self.fc(x.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def data():
    images = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    return images, torch.tensor([1, 4])


class ClampNet(nn.Module):
    """Rectifiers spelled as clamps: ``torch.clamp(min=0)``, ``clamp_min``, ``clip``, in place,
    capped; plus a clamp with a negative bound, which is not a rectifier and keeps its gradient."""

    def __init__(self, reference: bool = False) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.reference = reference
        self.convs = nn.ModuleList(nn.Conv2d(c, 6, 3, padding=1) for c in (3, 6, 6, 6, 6, 6))
        self.fc = nn.Linear(6, 5)

    def act(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if i == 5:
            return x.clamp(min=-1.0)  # not a rectifier: plain backward under every rule
        if self.reference:
            return _RefGuided.apply(x, 6.0 if i == 3 else float("inf"))
        spelled = [
            lambda t: torch.clamp(t, min=0), lambda t: t.clamp_min(0), lambda t: torch.clip(t, 0),
            lambda t: t.clamp_(0, 6), lambda t: (torch.clamp_min_(t, 0.0), t)[1],
        ]
        return spelled[i](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = self.act(i, conv(x) * 4.0)
        return self.fc(x.mean(dim=(2, 3)))


def _input_gradient(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Plain autograd ``d y_target / d x`` (the independent reference)."""
    x = images.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x), x, F.one_hot(targets, 5).float())
    return grad


@pytest.mark.parametrize("net", [FunctionalNet, ClampNet], ids=["relu-spellings", "clamp-spellings"])
def test_every_rectifier_spelling_gets_the_guided_rule(data, net):
    images, targets = data
    maps = explain(net(), images, targets, ["guided_backprop", "saliency"])
    ref = _input_gradient(net(reference=True), images, targets)
    torch.testing.assert_close(maps["guided_backprop"], ref, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(maps["saliency"], ref)  # plain backward differs


@pytest.mark.parametrize("net", [FunctionalNet, ClampNet], ids=["relu-spellings", "clamp-spellings"])
def test_plain_backward_through_ruled_forward_equals_autograd(data, net):
    images, targets = data
    model = net()
    # shared, ruled forward; fast=False: bit-for-bit equality needs the same kernels (no channels-last)
    maps = explain(model, images, targets, ["saliency", "guided_backprop"], fast=False)
    torch.testing.assert_close(maps["saliency"], _input_gradient(model, images, targets), rtol=0, atol=0)


def test_deconvnet_ignores_forward_mask_on_functional_relus(data):
    images, targets = data
    maps = explain(FunctionalNet(), images, targets, ["deconvnet", "guided_backprop"])
    assert not torch.allclose(maps["deconvnet"], maps["guided_backprop"])


class _SneakyReLU(nn.ReLU):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten.relu(x)


def test_rectifier_module_escaping_the_rule_is_an_error(data):
    images, targets = data
    model = nn.Sequential(nn.Conv2d(3, 4, 3), _SneakyReLU(), nn.Flatten(), nn.LazyLinear(3))
    model(images)
    with pytest.raises(RuntimeError, match="escaped the backward rule"):
        explain(model, images, targets.clamp(max=2), ["guided_backprop"])


class _Boom(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("boom")


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())


@pytest.mark.parametrize("methods", [["guided_backprop", "gradcam"], ["gradcam"], ["occlusion"]])
def test_no_hook_or_mode_survives_an_exception(methods):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3), _Boom())
    model.train()
    images = torch.randn(1, 3, 10, 10)
    options = {"occlusion": {"window": 4, "stride": 4}} if "occlusion" in methods else None
    with pytest.raises(ValueError, match="boom"):
        explain(model, images, [0], methods, layer="2", options=options)
    assert _hook_count(model) == 0
    assert all(m.training for m in model.modules())
    y = torch.relu(torch.randn(3, requires_grad=True))
    assert type(y.grad_fn).__name__ == "ReluBackward0"  # no function mode left active
    assert torch.is_grad_enabled()


def test_model_state_is_unchanged_and_no_param_grad():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4)
    model.train()
    model.layer1.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    requires = [p.requires_grad for p in model.parameters()]
    images = torch.randn(2, 3, 32, 32)
    explain(model, images, [1, 2], ["saliency", "guided_backprop", "deconv_gradcam", "gradcam_plus_plus",
                                   "smoothgrad", "occlusion"],
            layer="layer3", options={"smoothgrad": {"samples": 2}, "occlusion": {"window": 16, "stride": 16}})
    assert [m.training for m in model.modules()] == flags
    assert [p.requires_grad for p in model.parameters()] == requires
    assert all(p.grad is None for p in model.parameters())
    assert _hook_count(model) == 0
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN stats untouched (eval)


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_works_inside_no_grad_and_inference_mode(data, context):
    images, targets = data
    model = FunctionalNet()
    expected = explain(model, images, targets, ["guided_backprop", "gradcam"], layer="convs.7")
    with context():
        got = explain(model, images, targets, ["guided_backprop", "gradcam"], layer="convs.7")
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)
