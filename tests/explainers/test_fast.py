"""The fast copy (explainers.fast): BatchNorm folded, channels-last, cached, never stale.

The model is ResNet-18 with *non-trivial* BatchNorm statistics and affine parameters (at
initialisation they are 0/1, and folding would be close to the identity). Forward-only
quantities (logits, CAM maps, occlusion) must agree with the model as given to float
rounding. Gradient maps go through ReLU masks: where a pre-activation lies within rounding
of zero the two runs can take different branches. Most maps then agree to rounding (about
1e-6 relative L2), but a map whose forward crossed such a branch differs by up to a few
1e-3 (measured: 3 of 18 SmoothGrad maps on this model, 0.2% to 1.6%). So gradient maps are
compared map by map: every map within 5% L2, and at least half of them within 1e-4.
"""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
import torchvision
from torch import nn

from explainers import explain
from explainers.fast import FastModel, fast_model, forget
from explainers.metrics import perturbation_curves

FORWARD_TOL = 1e-4  # max |fast - exact| / max |exact|, as the reference tests
GRADIENT_L2_MAX = 5e-2  # ||fast - exact|| / ||exact|| of any one map (a branch crossed)
GRADIENT_L2_ROUNDING = 1e-4  # ... of a map whose forwards crossed no branch (rounding only)


def _randomise_batchnorms(model: nn.Module, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
            module.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
            with torch.no_grad():
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
    return model


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return _randomise_batchnorms(torchvision.models.resnet18(num_classes=10), seed=1).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def l2_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||a - b|| / ||b||``; 0 when both are all zero (e.g. a Grad-CAM with no positive part)."""
    if b.norm() == 0:
        return 0.0 if a.norm() == 0 else float("inf")
    return float((a - b).norm() / b.norm())


def test_every_conv_batchnorm_pair_of_resnet18_is_folded(resnet, images):
    fast = fast_model(resnet)
    assert isinstance(fast, FastModel)
    assert fast.traced
    assert fast.folded == 20  # conv1, 16 block convs, 3 downsample convs
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    with torch.no_grad():
        assert max_rel(fast(images), resnet(images)) <= FORWARD_TOL
    assert all(isinstance(m, nn.BatchNorm2d) for m in [resnet.bn1, resnet.layer1[0].bn1])  # original untouched


def test_fast_and_exact_maps_agree(resnet, images):
    targets = torch.tensor([[1, 7], [4, 4]])
    methods = ["gradcam", "counterfactual_gradcam", "gradcam_plus_plus", "saliency", "input_x_gradient",
               "guided_backprop", "deconvnet", "guided_gradcam", "deconv_gradcam", "smoothgrad",
               "integrated_gradients", "occlusion"]  # fmt: skip
    options = {"smoothgrad": {"samples": 2}, "integrated_gradients": {"steps": 4},
               "occlusion": {"window": 16, "stride": 16}}  # fmt: skip
    fast = explain(resnet, images, targets, methods, "layer4", options=options)
    exact = explain(resnet, images, targets, methods, "layer4", options=options, fast=False)
    for name in methods:
        assert fast[name].shape == exact[name].shape, name
        assert fast[name].is_contiguous(), name
        if name in ("gradcam", "counterfactual_gradcam", "gradcam_plus_plus", "occlusion"):
            assert max_rel(fast[name], exact[name]) <= FORWARD_TOL, name
        else:
            per_map = [l2_rel(f, e) for f, e in zip(fast[name].flatten(0, 1), exact[name].flatten(0, 1), strict=True)]
            assert max(per_map) <= GRADIENT_L2_MAX, (name, per_map)
            assert sum(v <= GRADIENT_L2_ROUNDING for v in per_map) >= len(per_map) / 2, (name, per_map)


def test_cam_layer_is_traced_through_and_its_tap_carries_the_hook(resnet, images):
    # issue 14, defect 7: the CAM layer no longer stays whole (its BatchNorms fold); an identity
    # tap on its output is what the engine hooks, and the maps equal the model's as given.
    fast = fast_model(resnet, keep=resnet.layer4)
    assert fast.hook_module(resnet.layer4) is fast.tap is not None
    assert fast.folded == fast_model(resnet).folded
    ours = explain(resnet, images, [0, 1], ["gradcam"], "layer4")
    exact = explain(resnet, images, [0, 1], ["gradcam"], "layer4", fast=False)
    torch.testing.assert_close(ours["gradcam"], exact["gradcam"], rtol=1e-4, atol=1e-6)


def test_cache_reuses_the_copy_and_refolds_after_an_update():
    torch.manual_seed(3)
    model = torchvision.models.resnet18(num_classes=5).eval()
    x = torch.randn(1, 3, 32, 32)
    first = fast_model(model)
    assert fast_model(model) is first

    def agrees() -> bool:
        with torch.no_grad():
            return max_rel(fast_model(model)(x), model(x)) <= FORWARD_TOL

    model.layer1[0].bn1.running_mean.add_(0.5)  # an in-place update bumps the version counter
    assert agrees()
    model.load_state_dict(_randomise_batchnorms(torchvision.models.resnet18(num_classes=5), seed=9).state_dict())
    assert agrees()
    model.layer2[0].conv1.reset_parameters()
    assert agrees()
    assert fast_model(model) is first  # refolded in place, not traced again
    model.layer3[1].bn2 = nn.BatchNorm2d(256).eval()  # a replaced module: traced again
    assert fast_model(model) is not first
    assert agrees()
    with torch.no_grad():
        model.layer4[0].bn1.running_var.data.mul_(3)  # through .data: invisible to the version counter
    assert not agrees()
    forget(model)
    assert agrees()


def test_cache_does_not_keep_the_model_alive():
    model = torchvision.models.resnet18(num_classes=5).eval()
    fast_model(model)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


class _DataDependent(nn.Module):
    """A forward that torch.fx cannot trace (Python control flow on a tensor's value)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        if y.mean() > 0:
            y = y * 2
        return self.head(y.mean(dim=(2, 3)))


def test_untraceable_model_runs_as_given():
    torch.manual_seed(4)
    model = _DataDependent().eval()
    fast = fast_model(model)
    assert not fast.traced
    assert fast.folded == 0
    assert fast.net is model
    x = torch.randn(2, 3, 8, 8)
    fast_maps = explain(model, x, [0, 2], ["saliency", "guided_backprop", "gradcam"], "bn")
    exact_maps = explain(model, x, [0, 2], ["saliency", "guided_backprop", "gradcam"], "bn", fast=False)
    for name, value in fast_maps.items():
        assert torch.allclose(value, exact_maps[name], rtol=1e-5, atol=1e-7), name


def test_model_left_as_it_was(resnet, images):
    resnet.train()
    flags = [m.training for m in resnet.modules()]
    try:
        explain(resnet, images, [0, 1], ["saliency", "occlusion"], options={"occlusion": {"window": 32, "stride": 32}})
        assert [m.training for m in resnet.modules()] == flags
        assert all(p.requires_grad and p.grad is None for p in resnet.parameters())
    finally:
        resnet.eval()


def test_deletion_insertion_scores_on_the_fast_copy_match(resnet, images):
    maps = torch.rand(2, 64, 64, generator=torch.Generator().manual_seed(5))
    kwargs = {"steps": 8, "patch": 8, "score": "logit", "batch_size": 16}
    fast = perturbation_curves(resnet, images, [1, 4], maps, **kwargs)
    exact = perturbation_curves(resnet, images, [1, 4], maps, fast=False, **kwargs)
    for mode in ("deletion", "insertion"):
        assert max_rel(fast[mode].probs, exact[mode].probs) <= FORWARD_TOL, mode
    with torch.inference_mode():  # a copy first built under inference mode still serves gradients
        forget(resnet)
        perturbation_curves(resnet, images, [1, 4], maps, **kwargs)
    explain(resnet, images, [1, 4], ["saliency"])


class _StaticPadConv(nn.Conv2d):
    """A ``Conv2d`` subclass from outside ``torch.nn`` (as EfficientNet's static-padding conv):
    torch.fx traces through it, so the pair to fold is a functional ``conv2d`` and a BatchNorm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(
            torch.nn.functional.pad(x, (1, 1, 1, 1)), self.weight, self.bias, self.stride, 0, self.dilation, self.groups
        )


def test_functional_convolutions_fold_but_the_cam_layer_stays():
    torch.manual_seed(6)
    model = nn.Sequential(
        _StaticPadConv(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU6(inplace=True),
        _StaticPadConv(8, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
    )  # fmt: skip
    _randomise_batchnorms(model, seed=7).eval()
    x = torch.randn(2, 3, 16, 16)
    fast = fast_model(model)
    assert fast.folded == 2
    with torch.no_grad():
        assert max_rel(fast(x), model(x)) <= FORWARD_TOL
    kept = fast_model(model, keep=model[4])  # the second BatchNorm as the CAM layer: not folded away
    assert kept.folded == 1
    maps = explain(model, x, [0, 2], ["gradcam"], "4")
    exact = explain(model, x, [0, 2], ["gradcam"], "4", fast=False)
    assert max_rel(maps["gradcam"], exact["gradcam"]) <= FORWARD_TOL


class _BufferWeightConv(nn.Module):
    """A convolution whose weight is a registered buffer, not a parameter (frozen models do this)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("weight", torch.randn(8, 3, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(x, self.weight, None, 1, 1)


def test_buffer_weights_fold_too():
    torch.manual_seed(8)
    model = nn.Sequential(_BufferWeightConv(), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 3))  # fmt: skip
    _randomise_batchnorms(model, seed=10).eval()
    x = torch.randn(2, 3, 12, 12)
    fast = fast_model(model)
    assert fast.folded == 1
    with torch.no_grad():
        assert max_rel(fast(x), model(x)) <= FORWARD_TOL
        model[0].weight.mul_(-1)  # an in-place change of the buffer refolds
        assert max_rel(fast_model(model)(x), model(x)) <= FORWARD_TOL


def test_only_the_copies_a_call_uses_are_built(resnet, images):
    from explainers.fast import _CACHE

    forget(resnet)
    explain(resnet, images, [0, 1], ["gradcam", "guided_backprop"], "layer4")
    assert set(_CACHE[resnet]) == {id(resnet.layer4)}  # no second, fully folded copy for nothing
    explain(resnet, images, [0, 1], ["occlusion"], options={"occlusion": {"window": 32, "stride": 32}})
    assert set(_CACHE[resnet]) == {id(resnet.layer4), id(None)}
