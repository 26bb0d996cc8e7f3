"""explain(): planning, target shapes, layer resolution, validation, RISE, IG completeness."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from explainers import METHODS, explain, resolve_layer
from explainers.methods.perturbation import rise_masks

CONTRACT = {"saliency", "input_x_gradient", "guided_backprop", "deconvnet", "smoothgrad",
            "integrated_gradients", "gradcam", "counterfactual_gradcam", "guided_gradcam",
            "deconv_gradcam", "occlusion", "gradcam_plus_plus", "rise",
            # issue #14: the CAM family, rule-based and surrogate methods
            "cam", "scorecam", "layercam", "xgradcam", "hirescam", "eigencam", "ablationcam", "deeplift",
            "lrp_epsilon_plus", "lrp_epsilon_gamma_box", "excitation_backprop", "contrastive_excitation_backprop",
            "lime",
            # issue #16: stimuli that are no attribution map (explain() refuses them)
            "image_only", "nearest_examples"}


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))


def test_registry_has_every_contract_method():
    assert set(METHODS) == CONTRACT
    assert {n for n, s in METHODS.items() if s.needs_layer} == {
        "gradcam", "counterfactual_gradcam", "gradcam_plus_plus", "guided_gradcam", "deconv_gradcam",
        "cam", "scorecam", "layercam", "xgradcam", "hirescam", "eigencam", "ablationcam",
        "excitation_backprop", "contrastive_excitation_backprop"}


def test_bk_targets_equal_separate_calls_and_add_k_axis(resnet, images):
    methods = ["saliency", "guided_backprop", "gradcam", "deconv_gradcam", "occlusion"]
    opts = {"occlusion": {"window": 16, "stride": 16}}
    targets = torch.tensor([[1, 2], [3, 4], [5, 6]])
    both = explain(resnet, images, targets, methods, "layer3", options=opts)
    for k in range(2):
        one = explain(resnet, images, targets[:, k], methods, "layer3", options=opts)
        for name in methods:
            assert both[name].shape[:2] == (3, 2)
            torch.testing.assert_close(both[name][:, k], one[name], rtol=1e-5, atol=1e-7)


def test_per_image_classes_in_one_pass_equal_single_image_calls(resnet, images):
    batch = explain(resnet, images, [7, 0, 3], ["saliency", "gradcam"], "layer3")
    for i, c in enumerate([7, 0, 3]):
        single = explain(resnet, images[i:i + 1], [c], ["saliency", "gradcam"], "layer3")
        torch.testing.assert_close(batch["gradcam"][i], single["gradcam"][0], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(batch["saliency"][i], single["saliency"][0], rtol=1e-4, atol=1e-6)


def test_cam_only_pass_equals_full_pass(resnet, images):
    alone = explain(resnet, images, [1, 2, 3], ["gradcam", "gradcam_plus_plus"], "layer3", layer_maps=True)
    full = explain(resnet, images, [1, 2, 3], ["gradcam", "gradcam_plus_plus", "saliency"], "layer3")
    torch.testing.assert_close(alone["gradcam"], full["gradcam"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(alone["gradcam_plus_plus"], full["gradcam_plus_plus"], rtol=1e-5, atol=1e-7)
    assert alone["gradcam@layer"].shape == (3, 2, 2)
    assert alone["gradcam"].shape == (3, 32, 32)
    assert alone["gradcam"].dtype == torch.float32


@pytest.mark.parametrize("base", ["saliency", "guided_backprop"])
def test_smoothgrad_noise_and_result_do_not_depend_on_batch_size(resnet, images, base):
    opts = {"samples": 4, "noise": 0.2, "seed": 3, "base": base}
    whole = explain(resnet, images, [1, 2, 3], ["smoothgrad"],
                    options={"smoothgrad": {**opts, "batch_size": 12}})["smoothgrad"]
    for rows in (None, 5, 1):  # 5 rows split an image's samples across passes
        chunked = explain(resnet, images, [1, 2, 3], ["smoothgrad"],
                          options={"smoothgrad": {**opts, "batch_size": rows}})["smoothgrad"]
        torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-7)
    other_seed = explain(resnet, images, [1, 2, 3], ["smoothgrad"],
                         options={"smoothgrad": {**opts, "seed": 4}})["smoothgrad"]
    assert not torch.allclose(other_seed, whole, rtol=1e-3)


def test_resolve_layer_names_modules_default_and_errors(resnet):
    assert resolve_layer(resnet, "layer4")[1] is resnet.layer4
    assert resolve_layer(resnet, resnet.layer2[1]) == ("layer2.1", resnet.layer2[1])
    assert resolve_layer(resnet, None, example=torch.zeros(1, 3, 64, 64))[0] == "layer4"
    assert resolve_layer(resnet, None, example=torch.zeros(1, 3, 32, 32))[0] == "layer3"  # layer4 is 1x1
    vgg = torchvision.models.vgg11(num_classes=3)
    assert resolve_layer(vgg, None, example=torch.zeros(1, 3, 32, 32))[0] == "features.19"
    with pytest.raises(ValueError, match=r"layer 'layer5' not found.*layer4"):
        resolve_layer(resnet, "layer5")
    with pytest.raises(ValueError, match="not a submodule"):
        resolve_layer(resnet, nn.Conv2d(1, 1, 1))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"methods": ["gradcam", "nope"]}, "unknown explanation method 'nope'"),
    ({"options": {"occlusion": {"windw": 3}}, "methods": ["occlusion"]}, "unknown options"),
    ({"options": {"rise": {}}}, "not requested"),
    ({"targets": [[1, 2, 3]]}, "targets must have shape"),
    ({"targets": [11, 0, 0]}, "out of range"),
])
def test_bad_input_gets_a_clear_error(resnet, images, kwargs, message):
    call = {"targets": [1, 2, 3], "methods": ["saliency"], **kwargs}
    with pytest.raises(ValueError, match=message):
        explain(resnet, images, call["targets"], call["methods"], options=call.get("options"))


def test_rise_equals_direct_formula_with_same_masks(resnet, images):
    opts = {"masks": 10, "cells": 4, "p": 0.4, "seed": 3, "batch_size": 7}
    ours = explain(resnet, images[:2], [1, 2], ["rise"], options={"rise": opts})["rise"]
    masks = rise_masks(10, cells=4, p=0.4, size=(32, 32), seed=3)
    ref = torch.zeros(2, 32, 32)
    with torch.no_grad():
        for m in masks:
            probs = resnet(images[:2] * m).softmax(dim=1)[[0, 1], [1, 2]]
            ref += probs.view(2, 1, 1) * m
    torch.testing.assert_close(ours, ref / (10 * 0.4), rtol=1e-5, atol=1e-7)
    assert masks.min() >= 0
    assert masks.max() <= 1 + 1e-6
    assert masks.std() > 0


def test_integrated_gradients_completeness_on_smooth_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Softplus(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    x = torch.randn(2, 3, 8, 8)
    ig = explain(model, x, [0, 2], ["integrated_gradients"],
                 options={"integrated_gradients": {"steps": 64}})["integrated_gradients"]
    with torch.no_grad():
        delta = model(x)[[0, 1], [0, 2]] - model(torch.zeros_like(x))[[0, 1], [0, 2]]
    torch.testing.assert_close(ig.sum(dim=(1, 2, 3)), delta, rtol=1e-3, atol=1e-4)


def test_autocast_bf16_returns_float32_maps_close_to_fp32(resnet, images):
    fp32 = explain(resnet, images, [1, 2, 3], ["gradcam", "saliency"], "layer3")
    bf16 = explain(resnet, images, [1, 2, 3], ["gradcam", "saliency"], "layer3", autocast_dtype=torch.bfloat16)
    for key in fp32:
        assert bf16[key].dtype == torch.float32
        corr = torch.corrcoef(torch.stack([fp32[key].flatten(), bf16[key].flatten()]))[0, 1]
        assert corr > 0.9, (key, float(corr))
