"""explain() against the reference implementations (Captum, pytorch-grad-cam).

torchvision ResNet-18 and VGG-16 with random weights (fixed seed), in-place ReLUs as
shipped. Error measure: max |ours - ref| / max |ref| <= 1e-4. The engine runs with
``fast=False`` (the model exactly as given); tests/explainers/test_fast.py checks the fast copy.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision
from captum.attr import (
    Deconvolution,
    GuidedBackprop,
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from pytorch_grad_cam import GradCAMPlusPlus
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from explainers import explain
from explainers.methods.cam import upsample

TOL = 1e-4
SIZE = 64
SMALL = 32  # sampled / perturbation methods: many forwards, smaller images


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    scale = ref.abs().max()
    assert scale > 0, "reference map is all zero: the comparison would be vacuous"
    return float((ours - ref).abs().max() / scale)


@pytest.fixture(scope="module", params=["resnet18", "vgg16"])
def case(request):
    torch.manual_seed(0)
    if request.param == "resnet18":
        model, layer_name = torchvision.models.resnet18(num_classes=20), "layer4"
    else:
        model, layer_name = torchvision.models.vgg16(num_classes=20), "features.29"
    model.eval()
    layer = model.get_submodule(layer_name)
    images = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([3, 11])
    maps = explain(
        model,
        images,
        targets,
        [
            "saliency",
            "input_x_gradient",
            "guided_backprop",
            "deconvnet",
            "gradcam",
            "counterfactual_gradcam",
            "guided_gradcam",
            "deconv_gradcam",
            "gradcam_plus_plus",
        ],
        layer=layer_name,
        layer_maps=True,
        fast=False,
    )
    return model, layer, layer_name, images, targets, maps


@pytest.fixture(autouse=True)
def _quiet_captum():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _min_max(maps: torch.Tensor) -> torch.Tensor:
    maps = maps - maps.flatten(1).min(dim=1).values.view(-1, 1, 1)
    return maps / (1e-7 + maps.flatten(1).max(dim=1).values.view(-1, 1, 1))


def _captum_gradcam(forward, layer, images, targets):
    low = LayerGradCam(forward, layer).attribute(images, target=targets, relu_attributions=True)
    return LayerAttribution.interpolate(low, (SIZE, SIZE), interpolate_mode="bilinear")[:, 0]


def test_saliency_matches_captum_signed(case):
    model, _, _, images, targets, maps = case
    ref = Saliency(model).attribute(images, target=targets, abs=False)
    assert rel_err(maps["saliency"], ref) <= TOL


def test_input_x_gradient_matches_captum(case):
    model, _, _, images, targets, maps = case
    assert rel_err(maps["input_x_gradient"], InputXGradient(model).attribute(images, target=targets)) <= TOL


def test_guided_backprop_matches_captum(case):
    model, _, _, images, targets, maps = case
    ref = GuidedBackprop(model).attribute(images, target=targets)
    assert rel_err(maps["guided_backprop"], ref) <= TOL
    assert rel_err(maps["saliency"], ref) > 1e-2  # the rule really changed the backward


def test_deconvnet_matches_captum(case):
    model, _, _, images, targets, maps = case
    assert rel_err(maps["deconvnet"], Deconvolution(model).attribute(images, target=targets)) <= TOL


def test_gradcam_matches_captum_layergradcam_relu_bilinear(case):
    model, layer, _, images, targets, maps = case
    assert rel_err(maps["gradcam"], _captum_gradcam(model, layer, images, targets)) <= TOL


def test_counterfactual_gradcam_is_gradcam_of_negated_score(case):
    model, layer, _, images, targets, maps = case
    ref = _captum_gradcam(lambda x: -model(x), layer, images, targets)
    assert rel_err(maps["counterfactual_gradcam"], ref) <= TOL


def test_guided_gradcam_matches_captum_bilinear(case):
    model, layer, _, images, targets, maps = case
    ref = GuidedGradCam(model, layer).attribute(images, target=targets, interpolate_mode="bilinear")
    assert rel_err(maps["guided_gradcam"], ref) <= TOL


def test_deconv_gradcam_is_deconvnet_times_gradcam(case):
    model, layer, _, images, targets, maps = case
    ref = Deconvolution(model).attribute(images, target=targets) * _captum_gradcam(
        model, layer, images, targets
    ).unsqueeze(1)
    assert rel_err(maps["deconv_gradcam"], ref) <= TOL


def test_gradcam_plus_plus_matches_pytorch_grad_cam(case):
    model, layer, _, images, targets, maps = case
    with GradCAMPlusPlus(model, [layer]) as cam:
        ref = cam(images, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    # grad-cam scales min-max at layer resolution, resizes, then scales again.
    ours = _min_max(upsample(_min_max(maps["gradcam_plus_plus@layer"]), (SIZE, SIZE)))
    assert rel_err(ours, torch.from_numpy(ref)) <= TOL


def _small(images: torch.Tensor) -> torch.Tensor:
    return images[:, :, :SMALL, :SMALL].contiguous()


def test_integrated_gradients_matches_captum(case):
    model, _, name, images, targets, _ = case
    images = _small(images)
    method = "gausslegendre" if name == "layer4" else "riemann_trapezoid"
    ours = explain(
        model,
        images,
        targets,
        ["integrated_gradients"],
        options={"integrated_gradients": {"steps": 4, "method": method, "batch_size": 4}},
        fast=False,
    )
    ref = IntegratedGradients(model).attribute(images, target=targets, n_steps=4, method=method)
    assert rel_err(ours["integrated_gradients"], ref) <= TOL


def test_smoothgrad_matches_captum_noise_tunnel_with_same_noise(case):
    model, _, _, images, targets, _ = case
    images = _small(images)
    # Images spanning the same range, so the paper's relative sigma is one absolute stdev.
    flat = images.flatten(1)
    lo, hi = flat.min(1).values.view(-1, 1, 1, 1), flat.max(1).values.view(-1, 1, 1, 1)
    images = (images - lo) / (hi - lo) * 4 - 2
    ours = explain(
        model,
        images,
        targets,
        ["smoothgrad"],
        options={"smoothgrad": {"samples": 3, "noise": 0.1, "seed": 7}},
        fast=False,
    )
    torch.manual_seed(7)
    ref = NoiseTunnel(Saliency(model)).attribute(
        images, target=targets, nt_type="smoothgrad", nt_samples=3, stdevs=0.4, abs=False
    )
    assert rel_err(ours["smoothgrad"], ref) <= TOL


def test_occlusion_matches_captum(case):
    model, _, _, images, targets, _ = case
    images = _small(images)
    ours = explain(
        model,
        images,
        targets,
        ["occlusion"],
        options={"occlusion": {"window": 16, "stride": 12, "baseline": 0.5, "batch_size": 5}},
        fast=False,
    )
    ref = Occlusion(model).attribute(
        images,
        target=targets,
        sliding_window_shapes=(3, 16, 16),
        strides=(3, 12, 12),
        baselines=0.5,
        perturbations_per_eval=3,
    )
    assert torch.equal(ref[:, 0], ref[:, 2])  # Captum's window spans all channels
    assert rel_err(ours["occlusion"], ref[:, 0]) <= 1e-5
