"""Issue 14, defects 3 and 4: the default CAM layer is the output the classifier reads (whole
concat blocks, the last token block's input norm for ViT), zoo and engine agree, token and
channels-last outputs are read on the right axes (against pytorch-grad-cam with its
reshape_transform), anything else is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from explainers import explain
from explainers.layers import default_layer, resolve_layer
from explainers.zoo import load_model


def _x(n, size, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("arch", "size", "expected"), [
    ("googlenet", 64, "inception5b"),
    ("inception_v3", 107, "Mixed_7c"),
    ("resnet18", 64, "layer4"),
    ("vgg11", 64, "features.19"),
    ("densenet121", 64, "features"),
    ("efficientnet_b0", 64, "features"),
    ("convnext_tiny", 64, "features"),
    ("swin_t", 64, "permute"),
])
def test_default_layer_is_what_the_classifier_reads_and_zoo_agrees(arch, size, expected):
    kwargs = {"aux_logits": False, "init_weights": False} if arch in ("googlenet", "inception_v3") else {}
    model = torchvision.models.get_model(arch, weights=None, num_classes=5, **kwargs).eval()
    assert default_layer(model, _x(1, size)) == expected
    if arch in ("googlenet", "densenet121"):
        assert load_model(arch, num_classes=5).default_layer == expected


def _gradcam_reference(model, layer, x, targets, reshape):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = GradCAM(model=model, target_layers=[layer], reshape_transform=reshape)
    try:
        cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])
        acts = cam.activations_and_grads.activations[0]
        grads = cam.activations_and_grads.gradients[0]
        low = cam.get_cam_image(x, layer, None, acts, grads.numpy())
    finally:
        cam.activations_and_grads.release()
    return torch.from_numpy(np.maximum(low, 0)).float()


def _vit_reshape(t):
    b, n, c = t.shape
    side = int((n - 1) ** 0.5)
    return t[:, 1:, :].reshape(b, side, side, c).permute(0, 3, 1, 2)


def test_vit_gradcam_default_layer_matches_pytorch_grad_cam():
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(num_classes=5).eval()
    x = _x(1, 224)
    name, module = resolve_layer(model, None, example=x)
    assert name == "encoder.layers.encoder_layer_11.ln_1"
    ours = explain(model, x, [3], ["gradcam"], "encoder.layers.encoder_layer_11.ln_1", layer_maps=True)
    ref = _gradcam_reference(model, module, x, [3], _vit_reshape)
    assert ours["gradcam@layer"].shape == ref.shape == (1, 14, 14)
    torch.testing.assert_close(ours["gradcam@layer"], ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))


def test_swin_channels_last_layer_matches_pytorch_grad_cam():
    torch.manual_seed(0)
    model = torchvision.models.swin_t(num_classes=5).eval()
    x = _x(2, 64)
    ours = explain(model, x, [1, 4], ["gradcam"], "features.6", layer_maps=True)
    ref = _gradcam_reference(model, model.features[6], x, [1, 4], lambda t: t.permute(0, 3, 1, 2))
    assert ours["gradcam@layer"].shape == ref.shape == (2, 2, 2)
    torch.testing.assert_close(ours["gradcam@layer"], ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
    # the explicit reshape= option gives the same maps
    again = explain(model, x, [1, 4], ["gradcam"], "features.6", layer_maps=True,
                    reshape=lambda t: t.permute(0, 3, 1, 2))
    torch.testing.assert_close(again["gradcam@layer"], ours["gradcam@layer"])


class _Cube(nn.Module):
    """A layer whose output [B, 7, 7, 7] could be either layout."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 7, 3, stride=4, padding=1)
        self.head = nn.Linear(7 * 7 * 7, 3)

    def forward(self, x):
        return self.head(self.conv(x).flatten(1))


def test_ambiguous_and_pooled_layers_are_refused():
    model = _Cube().eval()
    with pytest.raises(ValueError, match=r"'conv'.*\(2, 7, 7, 7\).*reshape="):
        explain(model, _x(2, 28), [0, 1], ["gradcam"], "conv")
    maps = explain(model, _x(2, 28), [0, 1], ["gradcam"], "conv", reshape=lambda t: t)
    assert maps["gradcam"].shape == (2, 28, 28)
    resnet = torchvision.models.resnet18(num_classes=4).eval()
    with pytest.raises(ValueError, match=r"'avgpool'.*1x1"):
        explain(resnet, _x(2, 64), [0, 1], ["gradcam"], "avgpool")


def test_dotted_and_indexed_paths_resolve():
    model = torchvision.models.resnet18(num_classes=4).eval()
    assert resolve_layer(model, "layer4.1.conv2")[0] == "layer4.1.conv2"
    assert resolve_layer(model, "layer4[-1]")[0] == "layer4.1"
    assert resolve_layer(model, "layer4.-1.bn2")[0] == "layer4.1.bn2"
