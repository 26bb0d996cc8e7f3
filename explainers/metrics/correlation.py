"""Rank correlation between maps (Selvaraju et al. 2019, Sec. 5: correlation with occlusion).

Selvaraju et al. report the Spearman rank correlation between each method's map and the
occlusion map (Zeiler & Fergus 2014) of the same image: Guided Grad-CAM 0.261, Grad-CAM 0.254,
Guided Backprop 0.168 on PASCAL VOC 2007 val. Both maps are first brought to a *common
resolution*: the smaller of the two heights and widths, shrinking by area averaging (so a
full-resolution map is averaged over the cells of a coarse occlusion grid, rather than a coarse
map being interpolated into fake detail). Spearman's rho is the Pearson correlation of the
average ranks (ties get the mean of their ranks, as ``scipy.stats.spearmanr``). A constant map
has no ranking: its correlation is NaN.
"""

from __future__ import annotations

import torch
from torch import Tensor

from explainers.metrics._common import ChannelReduction, as_saliency, resize_maps


def rankdata(values: Tensor) -> Tensor:
    """Average ranks (1-based) along the last axis of a ``[B, N]`` tensor, ties averaged. float64."""
    if values.ndim != 2:
        raise ValueError(f"rankdata expects [B, N], got {tuple(values.shape)}")
    b, n = values.shape
    sorted_values, order = torch.sort(values, dim=1, stable=True)
    new_group = torch.ones_like(sorted_values, dtype=torch.bool)
    new_group[:, 1:] = sorted_values[:, 1:] != sorted_values[:, :-1]
    group = torch.cumsum(new_group.long(), dim=1) - 1 + torch.arange(b, device=values.device)[:, None] * n
    positions = torch.arange(n, dtype=torch.float64, device=values.device).expand(b, n)
    sums = torch.zeros(b * n, dtype=torch.float64, device=values.device).index_add_(
        0, group.reshape(-1), positions.reshape(-1)
    )
    sizes = torch.zeros(b * n, dtype=torch.float64, device=values.device).index_add_(
        0, group.reshape(-1), torch.ones(b * n, dtype=torch.float64, device=values.device)
    )
    mean_rank = (sums / sizes.clamp_min(1))[group] + 1.0
    ranks = torch.empty_like(mean_rank)
    ranks.scatter_(1, order, mean_rank)
    return ranks


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation per row of two ``[B, ...]`` tensors (flattened); NaN for a constant row."""
    a = a.reshape(a.shape[0], -1).double()
    b = b.reshape(b.shape[0], -1).double()
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    denom = a.norm(dim=1) * b.norm(dim=1)
    r = (a * b).sum(1) / denom
    r = torch.where(denom > 0, r, torch.full_like(r, float("nan")))
    return r.clamp(-1.0, 1.0).float()


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation per row of two ``[B, ...]`` tensors (flattened): ``[B]``, NaN if constant."""
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return pearson(rankdata(a.double()), rankdata(b.double()))


def occlusion_rank_correlation(
    maps: Tensor,
    occlusion_maps: Tensor,
    *,
    size: tuple[int, int] | None = None,
    channel_reduction: ChannelReduction = "abs_sum",
) -> Tensor:
    """Spearman correlation of each method map with the occlusion map of the same image.

    Args:
        maps: ``[B, h, w]`` or ``[B, C, h, w]`` method maps.
        occlusion_maps: ``[B, h', w']`` occlusion maps (e.g. ``explain(..., ["occlusion"])``).
        size: common resolution; default ``(min(h, h'), min(w, w'))`` (area-averaged down).
        channel_reduction: how gradient maps become one value per pixel (see ``as_saliency``).

    Returns:
        ``[B]`` float32 Spearman's rho, NaN where either map is constant.
    """
    a = as_saliency(maps, reduction=channel_reduction)
    o = as_saliency(occlusion_maps, reduction=channel_reduction, name="occlusion_maps").to(a.device)
    if a.shape[0] != o.shape[0]:
        raise ValueError(f"maps has {a.shape[0]} images but occlusion_maps has {o.shape[0]}")
    if size is None:
        size = (min(a.shape[1], o.shape[1]), min(a.shape[2], o.shape[2]))
    return spearman(resize_maps(a, size), resize_maps(o, size))
