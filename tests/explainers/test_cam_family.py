"""The CAM family members (explainers/methods/cam_family.py) against pytorch-grad-cam.

Models: torchvision ResNet-18 (``layer4``), VGG-11-BN (``features.27``, the last ReLU; its
classifier cut to one linear layer to keep the ablation/score forwards cheap) and MobileNetV2
(``features``), random weights (fixed seed), eval mode, 64x64 inputs.

What is compared: pytorch-grad-cam returns ``scale(resize(scale(ReLU(cam))))`` (per-image
min-max scaling at layer resolution, ``cv2.resize`` bilinear, scaled again). We apply the same
two min-max scalings around our own bilinear upsampling to our layer-resolution maps
(``"<method>@layer"``, already ReLU'd) and compare with the same target layer and
``ClassifierOutputTarget`` targets. Error: max |ours - ref| / max |ref| <= 1e-4, on
``explain(..., fast=False)`` (the model as given) and <= 1e-3 on the default fast copy.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torchvision
from pytorch_grad_cam import AblationCAM, EigenCAM, GradCAM, HiResCAM, LayerCAM, ScoreCAM, XGradCAM
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction
from torch import nn

from explainers import METHODS, explain
from explainers.methods.cam import upsample

TOL = 1e-4
FAST_TOL = 1e-3
SIZE = 64
REFERENCE = {"layercam": LayerCAM, "xgradcam": XGradCAM, "hirescam": HiResCAM, "scorecam": ScoreCAM,
             "ablationcam": AblationCAM}
NEW = ["cam", "layercam", "xgradcam", "hirescam", "eigencam", "scorecam", "ablationcam"]


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    scale = ref.abs().max()
    assert scale > 0, "reference map is all zero: the comparison would be vacuous"
    return float((ours - ref).abs().max() / scale)


def _min_max(maps: torch.Tensor) -> torch.Tensor:
    maps = maps - maps.flatten(1).min(dim=1).values.view(-1, 1, 1)
    return maps / (1e-7 + maps.flatten(1).max(dim=1).values.view(-1, 1, 1))


def like_grad_cam(low: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's postprocessing applied to our layer-resolution maps."""
    return _min_max(upsample(_min_max(low), (SIZE, SIZE)))


def build(name: str):
    torch.manual_seed(0)
    if name == "resnet18":
        model, layer = torchvision.models.resnet18(num_classes=20), "layer4"
    elif name == "vgg11_bn":
        model, layer = torchvision.models.vgg11_bn(num_classes=20), "features.27"
        model.classifier = nn.Linear(512 * 7 * 7, 20)
    else:
        model, layer = torchvision.models.mobilenet_v2(num_classes=20), "features"
    model.eval()
    images = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    return model, layer, images, torch.tensor([3, 11])


@pytest.fixture(scope="module", params=["resnet18", "vgg11_bn"])
def case(request):
    model, layer, images, targets = build(request.param)
    names = ["layercam", "xgradcam", "hirescam", "eigencam", "ablationcam", "gradcam"]
    maps = explain(model, images, targets, names, layer=layer, layer_maps=True, fast=False)
    return model, layer, images, targets, maps


def reference(cls, model, layer, images, targets):
    with cls(model, [model.get_submodule(layer)]) as cam:
        return torch.from_numpy(cam(images, targets=[ClassifierOutputTarget(int(t)) for t in targets]))


def test_registered_selectable_and_spatial():
    for name in NEW:
        spec = METHODS[name]
        assert spec.output == "spatial"
        assert spec.needs_layer
        assert spec.doc


@pytest.mark.parametrize("method", ["layercam", "xgradcam", "hirescam", "ablationcam"])
def test_matches_pytorch_grad_cam(case, method):
    model, layer, images, targets, maps = case
    ref = reference(REFERENCE[method], model, layer, images, targets)
    assert rel_err(like_grad_cam(maps[method + "@layer"]), ref) <= TOL
    assert maps[method].shape == (2, SIZE, SIZE)


def test_eigencam_matches_pytorch_grad_cam(case):
    """Default: sign-corrected projection (pytorch-grad-cam's ``get_2d_projection_with_sign_correction``,
    then its ReLU + scaling); ``sign_correction=False``: ``EigenCAM`` itself (the SVD's own sign,
    which agrees between torch and numpy's LAPACK here)."""
    model, layer, images, targets, maps = case
    activation = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: activation.setdefault("a", o.detach()))
    with torch.no_grad():
        model(images)
    handle.remove()
    projection = np.maximum(get_2d_projection_with_sign_correction(activation["a"].numpy()), 0)
    ref = torch.from_numpy(scale_cam_image(scale_cam_image(projection, (SIZE, SIZE))))
    assert rel_err(like_grad_cam(maps["eigencam@layer"]), ref) <= TOL
    raw = explain(model, images, targets, ["eigencam"], layer=layer, layer_maps=True, fast=False,
                  options={"eigencam": {"sign_correction": False}})
    assert rel_err(like_grad_cam(raw["eigencam@layer"]), reference(EigenCAM, model, layer, images, targets)) <= TOL


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_scorecam_matches_pytorch_grad_cam(arch):
    model, layer, images, targets = build(arch)
    if arch == "mobilenet_v2":  # 1280 channels: one image keeps the test short
        images, targets = images[:1], targets[:1]
    ref = reference(ScoreCAM, model, layer, images, targets)
    exact = explain(model, images, targets, ["scorecam"], layer=layer, layer_maps=True, fast=False)
    assert rel_err(like_grad_cam(exact["scorecam@layer"]), ref) <= TOL
    if arch == "resnet18":
        fast = explain(model, images, targets, ["scorecam"], layer=layer, layer_maps=True)
        assert rel_err(like_grad_cam(fast["scorecam@layer"]), ref) <= FAST_TOL


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_cam_is_gradcam_times_hw_on_gap_nets(arch):
    """Zhou et al.'s CAM on a global-average-pooled net: ``h w`` x Grad-CAM at layer resolution,
    so the same map after min-max scaling as pytorch-grad-cam ``GradCAM``."""
    model, layer, images, targets = build(arch)
    maps = explain(model, images, targets, ["cam", "gradcam"], layer=layer, layer_maps=True, fast=False)
    low = maps["cam@layer"]
    hw = low.shape[-1] * low.shape[-2]
    assert rel_err(low, hw * maps["gradcam@layer"]) <= TOL
    assert rel_err(like_grad_cam(low), reference(GradCAM, model, layer, images, targets)) <= TOL
    fast = explain(model, images, targets, ["cam"], layer=layer, layer_maps=True)
    assert rel_err(fast["cam@layer"], low) <= FAST_TOL


def test_cam_refuses_a_net_that_is_not_gap_linear():
    model, _, images, targets = build("vgg11_bn")
    with pytest.raises(ValueError, match="cam needs"):
        explain(model, images, targets, ["cam"], layer="features.27", fast=False)


def test_fast_path_and_several_targets(case):
    """The default (fast copy) path agrees; ``[B, K]`` targets equal per-target calls."""
    model, layer, images, targets, maps = case
    many = torch.stack([targets, torch.tensor([0, 19])], dim=1)
    names = ["layercam", "xgradcam", "hirescam", "eigencam", "ablationcam"]
    fast = explain(model, images, many, names, layer=layer)
    for name in names:
        assert fast[name].shape == (2, 2, SIZE, SIZE)
        assert rel_err(fast[name][:, 0], maps[name]) <= FAST_TOL, name
    second = explain(model, images, many[:, 1], names, layer=layer)
    for name in names:
        assert rel_err(fast[name][:, 1], second[name]) <= FAST_TOL, name


class _BatchReshapeNet(nn.Module):
    """A head that reshapes by the *input's* batch size: the single-image ablation trick
    cannot run it, so ablationcam must fall back to forwards of the repeated image."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(8 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        return self.fc(nn.functional.max_pool2d(self.conv(x), 2).reshape(batch, -1))


def test_ablationcam_falls_back_when_the_head_reads_the_input_batch():
    torch.manual_seed(0)
    model = _BatchReshapeNet().eval()
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([1, 4])
    ours = explain(model, images, targets, ["ablationcam"], layer="conv", layer_maps=True, fast=False)
    ref = reference(AblationCAM, model, "conv", images, targets)
    low = ours["ablationcam@layer"]
    assert rel_err(_min_max(upsample(_min_max(low), (16, 16))), ref) <= TOL
