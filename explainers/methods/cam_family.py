"""The rest of the CAM family: CAM, LayerCAM, XGradCAM, HiResCAM, EigenCAM, ScoreCAM, AblationCAM.

Every method carries its own logic here; the engine plans the passes from the registry
(:data:`explainers.registry.METHODS`, whose ``function`` field names each function below):

* **Gradient members** (``layercam``, ``xgradcam``, ``hirescam``; registry family ``"cam"``) are
  functions of the CAM layer's activation ``A`` and gradient ``G = dy_c/dA`` (``[B, K, h, w]``),
  like Grad-CAM: they share the engine's one forward and its plain backward per target.
* **Forward-only members** (``cam``, ``eigencam``, ``scorecam``, ``ablationcam``, registry family
  ``"activation"``) need no gradient. Each is called ``f(runner, images, classes [B, T],
  activation, logits, model, layer, **options, autocast_dtype=None)`` -> ``[B, T, h, w]``:
  ``runner`` is what runs forwards (the fast copy or the model as given), ``model`` the model as
  given (names), ``layer`` the CAM layer module (called by ``runner``); keyword-only parameters
  other than ``autocast_dtype`` are the method's options. One forward under
  ``torch.inference_mode()`` keeps ``A`` and the logits (:func:`forward_with_activation`);
  ``cam`` then reads the classifier's weights, ``eigencam`` takes an SVD of ``A``, and
  ``scorecam`` / ``ablationcam`` run batched forwards of masked inputs / ablated activations
  under inference mode, every target of an image served by the same forwards.

All maps are float32 ``[B, T, h, w]`` at layer resolution (``T`` targets per image) with a final
ReLU, as pytorch-grad-cam's ``BaseCAM`` (before its min-max scaling); the engine upsamples them
bilinearly (``align_corners=False``) like Grad-CAM.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from explainers.methods.common import autocast_context

# --------------------------------------------------------------------------------------------
# Gradient members: f(A, G) -> [B, h, w]


def layercam(activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """LayerCAM (Jiang et al., 2021, "LayerCAM: Exploring Hierarchical Class Activation Maps
    for Localization", IEEE TIP, eq. 5-6).

    ``L = ReLU(sum_k ReLU(G_k) * A_k)``: every position keeps its own positive gradient as weight.
    Equals pytorch-grad-cam ``LayerCAM`` (before its min-max scaling).
    """
    a, g = activation.float(), gradient.float()
    return (g.clamp(min=0) * a).sum(dim=1).clamp(min=0)


def xgradcam(activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM (Fu et al., 2020, "Axiom-based Grad-CAM", BMVC, eq. 9).

    ``w_k = sum_ij G_kij * A_kij / (sum_ij A_kij + eps)``, ``L = ReLU(sum_k w_k A_k)``,
    ``eps = 1e-7``. Equals pytorch-grad-cam ``XGradCAM`` (before its min-max scaling).
    """
    a, g = activation.float(), gradient.float()
    weights = (g * a / (a.sum(dim=(2, 3), keepdim=True) + 1e-7)).sum(dim=(2, 3), keepdim=True)
    return (weights * a).sum(dim=1).clamp(min=0)


def hirescam(activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """HiResCAM (Draelos & Carin, 2020, "Use HiResCAM instead of Grad-CAM for faithful
    explanations of convolutional neural networks", eq. 4).

    ``L = ReLU(sum_k G_k * A_k)`` (element-wise gradient, no spatial averaging). Equals
    pytorch-grad-cam ``HiResCAM`` (before its min-max scaling).
    """
    a, g = activation.float(), gradient.float()
    return (g * a).sum(dim=1).clamp(min=0)


# --------------------------------------------------------------------------------------------
# Forward-only members


def forward_with_activation(
    model: nn.Module, images: torch.Tensor, layer: nn.Module, name: str,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[object, torch.Tensor]:
    """One forward (under the caller's inference mode): ``(model output, layer output)``, the
    layer's output as it is (the engine reads it as ``[B, K, h, w]`` with its layer reader)."""
    captured: dict[str, torch.Tensor] = {}

    def keep(module: nn.Module, inputs: object, output: object) -> None:
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"CAM layer {name!r} returns {type(output).__name__}, not a tensor")
        captured["activation"] = output.detach()

    handle = layer.register_forward_hook(keep)
    try:
        with autocast_context(images.device, autocast_dtype):
            output = model(images)
    finally:
        handle.remove()
    if "activation" not in captured:
        raise RuntimeError(f"CAM layer {name!r} was not called during the forward pass")
    return output, captured["activation"]


def _weighted(weights: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
    """``ReLU(sum_k w_btk A_bk)``: weights ``[B, T, K]``, activation ``[B, K, h, w]`` -> ``[B, T, h, w]``."""
    return torch.einsum("btk,bkhw->bthw", weights.float(), activation.float()).clamp(min=0)


def classifier_layer(model: nn.Module, channels: int, classes: int, fc: str | None = None) -> tuple[str, nn.Linear]:
    """The linear layer CAM reads: ``fc`` (dotted name) or the last ``nn.Linear`` of ``model``
    with ``in_features == channels`` and ``out_features == classes``."""
    modules = dict(model.named_modules())
    if fc is not None:
        module = modules.get(fc)
        if not isinstance(module, nn.Linear):
            raise ValueError(f"cam option fc={fc!r} is not an nn.Linear of {type(model).__name__}")
        candidates = [(fc, module)]
    else:
        candidates = [(n, m) for n, m in modules.items() if isinstance(m, nn.Linear)][-1:]
    for name, module in candidates:
        if module.in_features == channels and module.out_features == classes:
            return name, module
    found = [(n, m.in_features, m.out_features) for n, m in candidates]
    raise ValueError(
        f"cam needs the classifier to be one linear layer reading the global-average-pooled CAM "
        f"layer ({channels} channels -> {classes} classes); found {found or 'no nn.Linear'}. "
        "Pass options={'cam': {'fc': '<linear layer>'}} or use gradcam (equal to CAM on such nets)"
    )


def cam(
    runner: nn.Module, images: torch.Tensor, classes: torch.Tensor, activation: torch.Tensor,
    logits: torch.Tensor, model: nn.Module, layer: nn.Module, *, fc: str | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """CAM (Zhou et al., 2016, "Learning Deep Features for Discriminative Localization", eq. 2).

    ``M_c = ReLU(sum_k w_ck A_k)`` with ``w_c`` the row of class ``c`` of the final linear layer
    that reads the global-average-pooled CAM layer (``y_c = sum_k w_ck mean_ij A_kij + b_c``).
    The ReLU is pytorch-grad-cam / torchcam's convention for every CAM (the paper shows the raw
    sum). On such a net ``dy_c/dA_kij = w_ck / (h w)``, so CAM = ``h w`` x Grad-CAM exactly.

    The net's structure is checked, never assumed: the logits must equal
    ``fc(mean_ij A)`` (relative 1e-3), else a ``ValueError`` says why.

    Options:
        fc: dotted name of the linear layer (default: the model's last ``nn.Linear``).
    """
    _, linear = classifier_layer(model, activation.shape[1], logits.shape[1], fc)
    weight = linear.weight.detach().float()
    pooled = activation.mean(dim=(2, 3)) @ weight.t()
    if linear.bias is not None:
        pooled = pooled + linear.bias.detach().float()
    scale = logits.abs().max().clamp(min=1e-12)
    error = float((pooled - logits).abs().max() / scale)
    if error > 1e-3:
        raise ValueError(
            "cam needs a net whose logits are a linear layer of the global-average-pooled CAM "
            f"layer; here fc(mean(A)) differs from the logits by {error:.2g} (relative). "
            "Choose the layer right before the global pooling or use gradcam"
        )
    return _weighted(weight[classes], activation)


def eigen_projection(activation: torch.Tensor, sign_correction: bool = True) -> torch.Tensor:
    """First principal component of each image's activation, ``[B, h, w]`` (no ReLU).

    ``M = A^T`` as ``[hw, K]``, centred per channel, ``M = U S V^T``; projection ``M v_1``.
    ``sign_correction`` flips it when ``|min| > |max|`` (Chung & Ying, 2025, Seg-Eigen-CAM eq. 13,
    pytorch-grad-cam's ``get_2d_projection_with_sign_correction``), so the map does not depend on
    the SVD library's arbitrary sign of ``v_1``.
    """
    a = activation.float()
    a = torch.nan_to_num(a, nan=0.0)
    batch, channels, height, width = a.shape
    m = a.reshape(batch, channels, height * width).transpose(1, 2)
    m = m - m.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(m, full_matrices=False)
    projection = (m @ vh[:, 0, :].unsqueeze(-1)).squeeze(-1)
    if sign_correction:
        flip = projection.min(dim=1).values.abs() > projection.max(dim=1).values.abs()
        projection = torch.where(flip.unsqueeze(1), -projection, projection)
    return projection.reshape(batch, height, width)


def eigencam(
    runner: nn.Module, images: torch.Tensor, classes: torch.Tensor, activation: torch.Tensor,
    logits: torch.Tensor, model: nn.Module, layer: nn.Module, *, sign_correction: bool = True,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Eigen-CAM (Muhammad & Yeasin, 2020, "Eigen-CAM: Class Activation Map using Principal
    Components", eq. 4-5): ``L = ReLU(A_c v_1)``, the projection of the centred activation on
    its first right-singular vector (:func:`eigen_projection`). Class-agnostic: every target
    gets the same map.

    Options:
        sign_correction: ``True`` (default) fixes the SVD's arbitrary sign (larger extreme
            positive); ``False`` keeps the SVD's own sign, as pytorch-grad-cam ``EigenCAM``
            (whose sign then depends on the LAPACK build and the device).
    """
    projection = eigen_projection(activation, sign_correction).clamp(min=0)
    return projection.unsqueeze(1).expand(-1, classes.shape[1], -1, -1).contiguous()


def scorecam(
    runner: nn.Module, images: torch.Tensor, classes: torch.Tensor, activation: torch.Tensor,
    logits: torch.Tensor, model: nn.Module, layer: nn.Module, *, batch_size: int = 32,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Score-CAM (Wang et al., 2020, "Score-CAM: Score-Weighted Visual Explanations for
    Convolutional Neural Networks", CVPR-W, eq. 4-8), as pytorch-grad-cam ``ScoreCAM``.

    ``H_k = up(A_k)`` (bilinear, ``align_corners=True``), ``S_k = (H_k - min H_k) /
    (max H_k - min H_k + 1e-8)``; ``s_ck = y_c(x * S_k)`` (the logit); ``w_c = softmax_k(s_c)``;
    ``L = ReLU(sum_k w_ck A_k)``.

    One forward per channel and image, ``batch_size`` masked images per forward under
    ``inference_mode``; every target of an image uses the same forwards. A constant channel
    gives ``S_k = 0``, the zero image: its score is computed once for the whole call.

    Options:
        batch_size: masked images per forward (memory knob).
    """
    if batch_size < 1:
        raise ValueError(f"scorecam batch_size must be >= 1, got {batch_size}")
    batch, channels = activation.shape[:2]
    x = images.detach()
    up = F.interpolate(activation, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=True)
    flat = up.flatten(2)
    low, high = flat.min(dim=2).values, flat.max(dim=2).values
    masks = ((flat - low.unsqueeze(2)) / (high - low + 1e-8).unsqueeze(2)).view_as(up)
    constant = high == low  # S_k == 0 exactly: the input becomes the zero image
    scores = torch.empty(batch, channels, classes.shape[1], device=x.device)
    with autocast_context(x.device, autocast_dtype):
        if bool(constant.any()):
            zero = runner(torch.zeros_like(x[:1])).float()[0]
            scores[constant] = zero[classes].unsqueeze(1).expand(-1, channels, -1)[constant]
        rows = (~constant).nonzero()  # [(b, k)]
        for start in range(0, rows.shape[0], batch_size):
            b, k = rows[start:start + batch_size].unbind(1)
            out = runner(x[b] * masks[b, k].unsqueeze(1).to(x.dtype)).float()
            scores[b, k] = out.gather(1, classes[b])
    weights = scores.softmax(dim=1).transpose(1, 2)  # [B, T, K]
    return _weighted(weights, activation)


def ablation_value(activation: torch.Tensor) -> torch.Tensor:
    """Per image, the value an ablated channel takes: 0 if the image's activation has minimum 0
    (post-ReLU maps), else ``min - 1e7`` (pytorch-grad-cam ``AblationLayer``)."""
    low = activation.flatten(1).min(dim=1).values
    return torch.where(low == 0, torch.zeros_like(low), low - 1e7)


def ablationcam(
    runner: nn.Module, images: torch.Tensor, classes: torch.Tensor, activation: torch.Tensor,
    logits: torch.Tensor, model: nn.Module, layer: nn.Module, *, batch_size: int = 256,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Ablation-CAM (Desai & Ramaswamy, 2020, "Ablation-CAM: Visual Explanations for Deep
    Convolutional Network via Gradient-free Localization", WACV, eq. 3), as pytorch-grad-cam
    ``AblationCAM`` (all channels ablated).

    ``w_ck = (y_c - y_c(A with A_k := v)) / y_c``, ``L = ReLU(sum_k w_ck A_k)``, with ``y_c`` the
    logit and ``v`` the ablation value (:func:`ablation_value`).

    Batching: the ablated activations replace ``layer``'s output through a forward hook, and
    ``batch_size`` of them (plus the unablated one, as a check) follow one forward of the single
    image, so the network before the layer runs once per chunk instead of once per channel.
    Tensors from before the layer that the rest of the net reads (skip connections) have batch
    1 and broadcast, which is exact. If the unablated row does not reproduce the image's logits
    (a model that reshapes by its input's batch size), the image falls back to forwards of the
    image repeated, like the reference. A channel already equal to ``v`` everywhere is unchanged
    by its ablation and contributes ``w_k * A_k = 0``: it is skipped. Runs under the caller's
    ``inference_mode``.

    Options:
        batch_size: ablated activations per forward (memory knob).
    """
    if batch_size < 1:
        raise ValueError(f"ablationcam batch_size must be >= 1, got {batch_size}")
    batch, channels = activation.shape[:2]
    x = images.detach()
    values = ablation_value(activation)
    replacement: dict[str, torch.Tensor] = {}

    def replace(module: nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor:
        return replacement["rows"].to(output.dtype)

    original = logits.gather(1, classes)  # [B, T]
    weights = torch.zeros(batch, classes.shape[1], channels, device=x.device)
    handle = layer.register_forward_hook(replace)
    try:
        with autocast_context(x.device, autocast_dtype):
            for b in range(batch):
                a = activation[b]
                todo = (a.flatten(1) != values[b]).any(dim=1).nonzero().flatten()
                shared_prefix = True
                for start in range(0, todo.shape[0], batch_size):
                    chosen = todo[start:start + batch_size]
                    rows = a.unsqueeze(0).repeat(chosen.shape[0] + 1, 1, 1, 1)
                    rows[torch.arange(1, chosen.shape[0] + 1), chosen] = values[b]
                    replacement["rows"] = rows
                    out = None
                    if shared_prefix:
                        try:
                            out = runner(x[b:b + 1]).float()
                        except Exception:  # the single-image trick failed: repeat the image
                            out = None
                        scale = logits[b].abs().max().clamp(min=1e-12)
                        if (out is None or out.shape != (rows.shape[0], logits.shape[1])
                                or float((out[0] - logits[b]).abs().max() / scale) > 1e-3):
                            shared_prefix, out = False, None
                    if out is None:
                        out = runner(x[b:b + 1].expand(rows.shape[0], *x.shape[1:])).float()
                    ablated = out[1:].gather(1, classes[b].unsqueeze(0).expand(chosen.shape[0], -1))
                    weights[b, :, chosen] = ((original[b] - ablated) / original[b]).t()
    finally:
        handle.remove()
    return _weighted(weights, activation)

