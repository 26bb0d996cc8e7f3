"""Class activation maps computed from a layer activation and its gradient.

All functions take the activation ``A`` and gradient ``G = dy_c/dA`` of shape
``[B, K, h, w]`` (any float dtype; computed in float32) and return ``[B, h, w]``
maps at layer resolution; :func:`upsample` brings them to the input size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gradcam(activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., 2017, "Grad-CAM: Visual Explanations from Deep
    Networks via Gradient-based Localization", eq. 1-2).

    ``alpha_k = mean_ij dy_c/dA_k[i,j]``; ``L = ReLU(sum_k alpha_k A_k)``.
    Equals Captum ``LayerGradCam(relu_attributions=True)``.
    """
    a, g = activation.float(), gradient.float()
    weights = g.mean(dim=(2, 3), keepdim=True)
    return (weights * a).sum(dim=1).clamp(min=0)


def counterfactual_gradcam(activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """Counterfactual Grad-CAM (Selvaraju et al., 2017, sec. 5.3): Grad-CAM with
    negated gradients, ``L = ReLU(sum_k -alpha_k A_k)``, showing regions whose removal
    would raise the class score."""
    return gradcam(activation, -gradient.float())


def gradcam_plus_plus(activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhyay et al., 2018, "Grad-CAM++: Improved Visual Explanations
    for Deep Convolutional Networks", eq. 19 with the exponential-score closed form).

    ``a_kij = g^2 / (2 g^2 + sum_ab A_kab * g^3 + eps)`` (0 where ``g == 0``),
    ``w_k = sum_ij a_kij ReLU(g_kij)``, ``L = ReLU(sum_k w_k A_k)``, ``eps = 1e-6``.
    Matches pytorch-grad-cam ``GradCAMPlusPlus`` (before its min-max scaling).
    """
    a, g = activation.float(), gradient.float()
    g2 = g * g
    g3 = g2 * g
    sum_a = a.sum(dim=(2, 3), keepdim=True)
    aij = g2 / (2 * g2 + sum_a * g3 + 1e-6)
    aij = torch.where(g != 0, aij, torch.zeros_like(aij))
    weights = (g.clamp(min=0) * aij).sum(dim=(2, 3), keepdim=True)
    return (weights * a).sum(dim=1).clamp(min=0)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling (``align_corners=False``) of ``[..., h, w]`` maps to ``size``,
    the Grad-CAM paper's choice; leading axes are preserved."""
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:]).float()
    out = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    return out.reshape(*lead, *size)
