"""Issue 14, defect 6: one validation for every path (images, targets, model output, options)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from explainers import explain

ALL = ["saliency", "input_x_gradient", "guided_backprop", "deconvnet", "smoothgrad", "integrated_gradients",
       "gradcam", "counterfactual_gradcam", "gradcam_plus_plus", "guided_gradcam", "deconv_gradcam",
       "occlusion", "rise"]
OPTS = {"smoothgrad": {"samples": 2}, "integrated_gradients": {"steps": 2},
        "occlusion": {"window": 8, "stride": 8}, "rise": {"masks": 4, "batch_size": 8}}


def _net(dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval().to(dtype)


def _x(dtype=torch.float32, n=2):
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(0)).to(dtype)


def _one(method, model, x, targets, **kw):
    opts = {method: OPTS[method]} if method in OPTS else None
    return explain(model, x, targets, [method], "3", options=opts, **kw)


@pytest.mark.parametrize("method", ALL)
def test_targets_out_of_range_are_refused_by_every_method(method):
    for targets in ([0, 3], [-1, 0]):
        with pytest.raises(ValueError, match="out of range|>= 0"):
            _one(method, _net(), _x(), targets)


@pytest.mark.parametrize("method", ALL)
def test_image_dtypes_are_cast_to_the_model_dtype_on_every_path(method):
    reference = _one(method, _net(), _x(), [0, 2])[method]
    for dtype in (torch.float64, torch.bfloat16):
        got = _one(method, _net(), _x(dtype), [0, 2])[method]
        assert got.dtype == torch.float32
        assert got.shape == reference.shape
        assert torch.isfinite(got).all()
    double = _one(method, _net(torch.float64), _x(), [0, 2])[method]
    assert double.dtype == torch.float32
    torch.testing.assert_close(double, reference, rtol=2e-3, atol=2e-4 * float(reference.abs().max()) + 1e-7)


class _Tuple(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _net()

    def forward(self, x):
        return self.net(x), x.mean()


@pytest.mark.parametrize("method", ["saliency", "gradcam", "smoothgrad", "integrated_gradients", "occlusion", "rise"])
def test_model_returning_a_tuple_is_refused_clearly(method):
    model = _Tuple().eval()
    opts = {method: OPTS[method]} if method in OPTS else None
    with pytest.raises(ValueError, match="tensor of logits, got a tuple"):
        explain(model, _x(), [0, 1], [method], "net.3", options=opts)


def test_bad_images_and_methods_string():
    model = _net()
    bad = _x()
    bad[0, 0, 0, 0] = float("nan")
    for method in ("saliency", "occlusion", "gradcam"):
        with pytest.raises(ValueError, match="NaN or Inf"):
            _one(method, model, bad, [0, 1])
    with pytest.raises(ValueError, match="empty batch"):
        explain(model, _x()[:0], [], ["saliency"])
    maps = explain(model, _x(), [0, 1], "saliency")
    assert set(maps) == {"saliency"}


@pytest.mark.parametrize(("method", "options", "match"), [
    ("rise", {"masks": 0}, "masks"),
    ("rise", {"p": 0.0}, "p must"),
    ("rise", {"batch_size": 0}, "batch_size"),
    ("smoothgrad", {"samples": 0}, "samples"),
    ("smoothgrad", {"noise": -1.0}, "noise"),
    ("smoothgrad", {"noise": float("nan")}, "noise"),
    ("integrated_gradients", {"steps": 0}, "steps"),
    ("occlusion", {"window": 0}, "window"),
    ("occlusion", {"window": 64}, "larger"),
    ("occlusion", {"stride": 0}, "stride"),
    ("occlusion", {"batch_size": 0}, "batch_size"),
])
def test_options_out_of_range_are_refused(method, options, match):
    with pytest.raises(ValueError, match=match):
        explain(_net(), _x(), [0, 1], [method], options={method: options})
