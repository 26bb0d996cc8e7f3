"""Issue 14, defects 1, 2, 5, 7: the fast copy is checked before it is trusted, non-ReLU
activations are refused by the guided/deconvnet rules, the rectifier guard accepts in-place
ReLUs on views, and container CAM layers keep their BatchNorms folded."""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision
from torch import nn

from explainers import explain
from explainers.fast import FastModel, build_fast_model, fast_model, forget


class ConvNetOneConv(nn.Module):
    """Captum's BasicModel_ConvNet_One_Conv pattern: an optional second input."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 2, 3)
        self.bn = nn.BatchNorm2d(2)
        self.relu1 = nn.ReLU()
        self.fc1 = nn.Linear(2 * 14 * 14, 4)

    def forward(self, x, extra=None):
        if extra is not None:
            x = x + extra
        x = self.relu1(self.bn(self.conv1(x)))
        return self.fc1(x.flatten(1))


class FrozenProbe(nn.Module):
    """A frozen backbone under no_grad and a linear probe: no gradient reaches the input."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.probe = nn.Linear(4, 3)

    def forward(self, x):
        with torch.no_grad():
            features = self.backbone(x).flatten(1)
        return self.probe(features)


class MaxPoolReLUView(nn.Module):
    """An in-place ReLU applied to a view (Captum BasicModel_MaxPool_ReLU(inplace=True) kind)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 2 * 3 * 4 * 4)
        self.relu = nn.ReLU(inplace=True)
        self.out = nn.Linear(2 * 3 * 4 * 4, 5)

    def forward(self, x):
        h = self.relu(self.fc(x.flatten(1)).view(x.shape[0], 2, 3, 4, 4))  # in-place module on a view
        return self.out(h.reshape(x.shape[0], 96))


def _images(n=2, size=16, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_optional_argument_is_traced_with_its_default():
    model = ConvNetOneConv().eval()
    copy = build_fast_model(model)
    assert copy.traced
    assert copy.folded == 1
    x = _images()
    torch.testing.assert_close(copy(x), model(x), rtol=1e-4, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast = explain(model, x, [0, 3], ["saliency", "guided_backprop", "gradcam"], "relu1")
    exact = explain(model, x, [0, 3], ["saliency", "guided_backprop", "gradcam"], "relu1", fast=False)
    for name in fast:
        torch.testing.assert_close(fast[name], exact[name], rtol=1e-4, atol=1e-6)


def test_no_grad_block_is_not_traced_and_the_model_as_given_is_refused_clearly():
    model = FrozenProbe().eval()
    x = _images()
    with pytest.warns(RuntimeWarning, match="no_grad"):
        assert fast_model(model, example=x) is model
    for fast in (True, False):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(ValueError, match="does not depend differentiably"):
                explain(model, x, [0, 1], ["saliency"], fast=fast)
            with pytest.raises(ValueError, match="does not depend differentiably"):
                explain(model, x, [0, 1], ["smoothgrad"], options={"smoothgrad": {"samples": 2}}, fast=fast)
        assert not any("no_grad" in str(w.message) for w in caught)  # said once per model
    # forward-only methods are what the model as given computes
    occ = explain(model, x, [0, 1], ["occlusion"], options={"occlusion": {"window": 8, "stride": 8}})
    ref = explain(model, x, [0, 1], ["occlusion"], options={"occlusion": {"window": 8, "stride": 8}}, fast=False)
    torch.testing.assert_close(occ, ref)


class _Sneaky(nn.Module):
    """The trace cannot see a Python-side switch: the copy differs from the model afterwards."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 3)
        self.scale = 1.0  # a plain attribute: a trace bakes it in

    def forward(self, x):
        return self.fc(self.conv(x).mean(dim=(2, 3)) * self.scale)


def test_copy_whose_logits_differ_is_not_trusted_and_warns_once():
    model = _Sneaky().eval()
    x = _images()
    explain(model, x, [0, 1], ["saliency"])  # copy built and checked with scale 1
    model.scale = 3.0
    with torch.no_grad():
        model.conv.weight.mul_(1.0)  # bumps the version: the check runs again
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = explain(model, x, [0, 1], ["saliency", "occlusion"], options={"occlusion": {"window": 8, "stride": 8}})
        explain(model, x, [0, 1], ["saliency"])
    messages = [str(w.message) for w in caught if "cannot be trusted" in str(w.message)]
    assert len(messages) == 1
    assert "differ" in messages[0]
    ref = explain(model, x, [0, 1], ["saliency", "occlusion"], options={"occlusion": {"window": 8, "stride": 8}},
                  fast=False)
    for name in got:
        torch.testing.assert_close(got[name], ref[name])
    forget(model)


def test_guard_accepts_an_inplace_relu_on_a_view():
    torch.manual_seed(1)
    model = MaxPoolReLUView().eval()
    x = _images(size=8)
    for fast in (True, False):
        maps = explain(model, x, [1, 4], ["guided_backprop", "deconvnet"], fast=fast)
        captum = pytest.importorskip("captum.attr")
        for name, cls in (("guided_backprop", captum.GuidedBackprop), ("deconvnet", captum.Deconvolution)):
            ref = cls(model).attribute(x.clone().requires_grad_(True), target=torch.tensor([1, 4]))
            torch.testing.assert_close(maps[name], ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(("act", "name"), [(nn.GELU, "GELU"), (nn.SiLU, "silu"), (nn.Hardswish, "hardswish")])
def test_guided_rules_refuse_non_relu_activations(act, name):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), act(), nn.Conv2d(4, 4, 3), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    x = _images()
    for method in ("guided_backprop", "deconvnet", "guided_gradcam", "deconv_gradcam"):
        with pytest.raises(ValueError, match=f"(?i){name}"):
            explain(model, x, [0, 1], [method], "2")
    with pytest.raises(ValueError, match=f"(?i){name}"):
        explain(model, x, [0, 1], ["smoothgrad"], options={"smoothgrad": {"base": "guided_backprop", "samples": 2}})
    # plain gradients and CAMs are unaffected
    maps = explain(model, x, [0, 1], ["saliency", "gradcam"], "2")
    assert maps["saliency"].abs().sum() > 0


def test_container_cam_layer_keeps_its_batchnorms_folded():
    torch.manual_seed(0)
    model = torchvision.models.densenet121(num_classes=5).eval()
    plain = build_fast_model(model)
    kept = build_fast_model(model, keep=model.features)
    assert isinstance(kept, FastModel)
    assert kept.tap is not None
    assert kept.folded == plain.folded >= 50  # was 0 with the container kept whole
    x = _images(n=2, size=64)
    fast = explain(model, x, [1, 2], ["gradcam", "saliency"], "features")
    exact = explain(model, x, [1, 2], ["gradcam", "saliency"], "features", fast=False)
    torch.testing.assert_close(fast["gradcam"], exact["gradcam"], rtol=1e-3, atol=1e-5)
    rel = (fast["saliency"] - exact["saliency"]).norm() / exact["saliency"].norm()
    assert rel < 1e-3
