"""Helpers shared by the reference tests of the rule-based and surrogate methods."""

from __future__ import annotations

import torch
from torch import nn


def max_rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """``max |ours - ref| / max |ref|``: the exactness figure the docs report."""
    return float((ours - ref).abs().max() / ref.abs().max())


def randomise_bn(model: nn.Module, *, weight_low: float = 0.5, weight_span: float = 1.0) -> nn.Module:
    """Give every ``BatchNorm2d`` non-trivial statistics and affine weights (seeded), in eval mode.

    Weights are drawn from ``[weight_low, weight_low + weight_span)``; a negative ``weight_low``
    gives some negative scales (which flip signs through a folded convolution).
    """
    generator = torch.Generator().manual_seed(3)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            with torch.no_grad():
                module.weight.copy_(torch.rand(n, generator=generator) * weight_span + weight_low)
                module.bias.copy_(torch.rand(n, generator=generator) * 0.4 - 0.2)
    return model.eval()
