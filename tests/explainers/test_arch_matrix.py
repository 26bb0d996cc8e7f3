"""Issue 14: the architecture matrix. 12 torchvision architectures (random weights, small inputs)
x every method of this engine: each works (finite maps of the right shape) or refuses clearly.
Guided/deconvnet methods follow the documented rule: refused with a ValueError naming the
activation on nets that use GELU / SiLU / Hardswish. A fast subset runs unmarked."""

from __future__ import annotations

import pytest
import torch
import torchvision

from explainers import explain

METHODS = ["saliency", "input_x_gradient", "guided_backprop", "deconvnet", "smoothgrad", "integrated_gradients",
           "gradcam", "counterfactual_gradcam", "gradcam_plus_plus", "guided_gradcam", "deconv_gradcam",
           "occlusion", "rise"]
GUIDED = {"guided_backprop", "deconvnet", "guided_gradcam", "deconv_gradcam"}
# arch -> (input size, activation that makes the guided rules refuse, or None for ReLU nets)
ARCHS = {
    "resnet18": (64, None),
    "mobilenet_v3_small": (64, "hardswish"),
    "efficientnet_b0": (64, "silu"),
    "vgg11": (64, None),
    "densenet121": (64, None),
    "googlenet": (64, None),
    "inception_v3": (107, None),
    "regnet_y_400mf": (64, None),
    "convnext_tiny": (64, "gelu"),
    "swin_t": (64, "gelu"),
    "maxvit_t": (224, "gelu"),
    "vit_b_16": (224, "gelu"),
}
FAST = ("resnet18", "mobilenet_v3_small", "efficientnet_b0")


def _model(arch):
    torch.manual_seed(0)
    kwargs = {"aux_logits": False, "init_weights": False} if arch in ("googlenet", "inception_v3") else {}
    return torchvision.models.get_model(arch, weights=None, num_classes=4, **kwargs).eval()


def _check(arch):
    size, activation = ARCHS[arch]
    model = _model(arch)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    opts = {"smoothgrad": {"samples": 1}, "integrated_gradients": {"steps": 1},
            "occlusion": {"window": size // 2, "stride": size // 2}, "rise": {"masks": 2}}
    methods = [m for m in METHODS if not (activation and m in GUIDED)]
    maps = explain(model, x, [2], methods, options={m: o for m, o in opts.items() if m in methods})
    for name in methods:
        assert maps[name].shape[0] == 1, name
        assert maps[name].shape[-2:] == (size, size), name
        assert torch.isfinite(maps[name]).all(), name
    if activation:
        for name in sorted(GUIDED):
            with pytest.raises(ValueError, match=f"(?i){activation}"):
                explain(model, x, [2], [name])


@pytest.mark.parametrize("arch", FAST)
def test_matrix_fast_subset(arch):
    _check(arch)


@pytest.mark.slow
@pytest.mark.parametrize("arch", [a for a in ARCHS if a not in FAST])
def test_matrix_all_architectures(arch):
    _check(arch)
