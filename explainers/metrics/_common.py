"""Shared input validation and small tensor helpers for the metrics.

Conventions used by every metric in this package:

* ``images`` are ``[B, C, H, W]`` float tensors, already preprocessed for the model.
* A *map* is ``[B, H, W]`` (CAM-style) or ``[B, C, H, W]`` (gradient-style). Gradient maps are
  reduced to one value per pixel with :func:`as_saliency` (default: sum of absolute values over
  channels, as in Simonyan et al. 2013's visualisation up to the choice of sum vs. max).
* ``targets`` are one class index per image (``[B]`` tensor or a sequence of ints).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ChannelReduction = Literal["abs_sum", "sum", "abs_max"]


def as_saliency(maps: Tensor, *, reduction: ChannelReduction = "abs_sum", name: str = "maps") -> Tensor:
    """Return a ``[B, H, W]`` float32 saliency map from a ``[B, H, W]`` or ``[B, C, H, W]`` map.

    Args:
        maps: CAM-style ``[B, H, W]`` maps (returned as float32 unchanged) or gradient-style
            ``[B, C, H, W]`` maps, reduced over channels.
        reduction: ``"abs_sum"`` = sum_c |m_c|, ``"sum"`` = sum_c m_c, ``"abs_max"`` = max_c |m_c|.
        name: argument name used in error messages.

    Raises:
        ValueError: wrong number of dimensions, unknown reduction or non-finite values.
    """
    if not isinstance(maps, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(maps).__name__}")
    if maps.ndim == 4:
        if reduction == "abs_sum":
            maps = maps.abs().sum(1)
        elif reduction == "sum":
            maps = maps.sum(1)
        elif reduction == "abs_max":
            maps = maps.abs().amax(1)
        else:
            raise ValueError(f"unknown channel reduction {reduction!r}; use abs_sum, sum or abs_max")
    elif maps.ndim != 3:
        raise ValueError(f"{name} must be [B, H, W] or [B, C, H, W], got shape {tuple(maps.shape)}")
    maps = maps.detach().float()
    if not torch.isfinite(maps).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return maps


def as_targets(targets: Tensor | Sequence[int], batch: int, device: torch.device) -> Tensor:
    """Return targets as a ``[B]`` int64 tensor on ``device``; error if the length differs from B."""
    t = torch.as_tensor(targets, dtype=torch.long, device=device).reshape(-1)
    if t.numel() != batch:
        raise ValueError(f"targets must hold one class index per image: got {t.numel()} for {batch} images")
    return t


def check_images(images: Tensor, *, name: str = "images") -> None:
    """Raise ``ValueError`` unless ``images`` is a finite ``[B, C, H, W]`` floating tensor."""
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{name} must be a float tensor [B, C, H, W], got {shape}")


def check_batch(b: int, other: Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``other`` does not have ``b`` rows."""
    if other.shape[0] != b:
        raise ValueError(f"{name} has {other.shape[0]} rows but there are {b} images")


def resize_maps(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize ``[B, h, w]`` maps to ``size``: bilinear when enlarging, area average when shrinking."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    shrinking = maps.shape[-2] >= size[0] and maps.shape[-1] >= size[1]
    mode = "area" if shrinking else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(maps[:, None], size=size, mode=mode, **kwargs)[:, 0]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` (and every submodule) in eval mode, restoring each module's flag on exit."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


def model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    """Device of the model's first parameter or buffer, else ``fallback``."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return fallback
