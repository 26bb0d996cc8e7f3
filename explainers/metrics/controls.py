"""Control explainers: maps that know nothing about the model.

Every metric should be read against what such a map scores (Adebayo et al. 2018 use the Sobel
edge detector as a model-independent control; Quantus ships similar "control variates").

* ``"random"``: i.i.d. uniform ``[0, 1)`` values per pixel from a seeded generator.
* ``"sobel"``: gradient magnitude ``sqrt(G_x^2 + G_y^2)`` of the channel-mean image with the
  3x3 Sobel kernels and replicated borders.
* ``"gaussian"``: centred isotropic Gaussian ``exp(-d^2 / (2 (sigma min(H, W))^2))``, where ``d`` is
  the distance to the image centre (a pure centre bias).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from explainers.metrics._common import check_images

ControlKind = Literal["random", "sobel", "gaussian"]
CONTROL_KINDS: tuple[str, ...] = ("random", "sobel", "gaussian")


def sobel_magnitude(images: Tensor) -> Tensor:
    """Sobel edge magnitude of the channel-mean of ``[B, C, H, W]`` images: ``[B, H, W]``."""
    gray = images.float().mean(1, keepdim=True)
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=images.device)
    kernels = torch.stack([kx, kx.T])[:, None]
    grads = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), kernels)
    return grads.pow(2).sum(1).sqrt()


def control_map(kind: ControlKind, images: Tensor, *, seed: int = 0, sigma: float = 0.25) -> Tensor:
    """A model-independent ``[B, H, W]`` float32 map for ``images``.

    Args:
        kind: ``"random"``, ``"sobel"`` or ``"gaussian"`` (see the module docstring).
        images: ``[B, C, H, W]`` images.
        seed: seed of the random map (same seed, same maps).
        sigma: Gaussian width as a fraction of ``min(H, W)``.
    """
    check_images(images)
    b, _, h, w = images.shape
    if kind == "random":
        gen = torch.Generator().manual_seed(seed)
        return torch.rand((b, h, w), generator=gen).to(images.device)
    if kind == "sobel":
        return sobel_magnitude(images)
    if kind == "gaussian":
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        y = torch.arange(h, device=images.device, dtype=torch.float32) - (h - 1) / 2
        x = torch.arange(w, device=images.device, dtype=torch.float32) - (w - 1) / 2
        d2 = y[:, None] ** 2 + x[None, :] ** 2
        g = torch.exp(-d2 / (2 * (sigma * min(h, w)) ** 2))
        return g.expand(b, h, w).clone()
    raise ValueError(f"unknown control kind {kind!r}; use one of {CONTROL_KINDS}")


def control_explain_fn(
    kind: ControlKind, *, seed: int = 0, sigma: float = 0.25
) -> Callable[[nn.Module, Tensor, Sequence[int] | Tensor], Tensor]:
    """An ``explain_fn(model, images, targets) -> [B, H, W]`` that ignores model and targets.

    Useful for :func:`explainers.metrics.sanity.sanity_cascade`: a control's similarity to itself
    under weight randomization stays 1.
    """

    def explain_fn(model: nn.Module, images: Tensor, targets: Sequence[int] | Tensor) -> Tensor:
        del model, targets
        return control_map(kind, images, seed=seed, sigma=sigma)

    return explain_fn
