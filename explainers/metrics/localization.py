"""Localization metrics: weakly supervised boxes, pointing game, energy inside the object.

Boxes are ``(x0, y0, x1, y1)`` in pixels, half-open: the box covers columns ``x0 .. x1 - 1`` and
rows ``y0 .. y1 - 1``; its area is ``(x1 - x0) (y1 - y0)``. Regions (object masks) are
``[B, H, W]`` boolean tensors; :func:`boxes_to_masks` turns boxes into masks. Maps whose size
differs from the region masks are resized to the masks' size (bilinear / area).

References:
    Selvaraju et al. 2017/2019, Sec. 4.1 (weakly supervised localization, ILSVRC protocol).
    Zhang et al. 2016/2018, "Top-down neural attention by excitation backprop" (pointing game,
    15 px tolerance). Wang et al. 2020, Score-CAM (energy-based pointing game). Arras et al. 2022
    (relevance mass accuracy, the same quantity as :func:`energy_in_region`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

from explainers.metrics._common import ChannelReduction, as_saliency, resize_maps

Box = tuple[float, float, float, float]
_NAN_BOX = (math.nan, math.nan, math.nan, math.nan)
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def boxes_to_masks(boxes: Sequence[Sequence[Box]], size: tuple[int, int]) -> Tensor:
    """Union of each image's boxes as a ``[B, H, W]`` boolean mask (half-open boxes, clipped)."""
    h, w = size
    masks = torch.zeros((len(boxes), h, w), dtype=torch.bool)
    for i, image_boxes in enumerate(boxes):
        for box in image_boxes:
            if len(box) != 4:
                raise ValueError(f"boxes[{i}] has an entry {box!r}; expected (x0, y0, x1, y1)")
            x0, y0, x1, y1 = (int(round(float(v))) for v in box)
            masks[i, max(0, y0) : max(0, min(h, y1)), max(0, x0) : max(0, min(w, x1))] = True
    return masks


def box_iou(box: Box, others: Sequence[Box]) -> np.ndarray:
    """IoU of one half-open box with each of ``others``; NaN where ``box`` is NaN (no box)."""
    if not others:
        return np.zeros(0)
    a = np.asarray(box, dtype=np.float64)
    o = np.asarray(others, dtype=np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(a[2], o[:, 2]) - np.maximum(a[0], o[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[3], o[:, 3]) - np.maximum(a[1], o[:, 1]), 0, None)
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (o[:, 2] - o[:, 0]) * (o[:, 3] - o[:, 1]) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def wsl_boxes(
    maps: Tensor, *, threshold: float = 0.15, channel_reduction: ChannelReduction = "abs_sum"
) -> Tensor:
    """Bounding box of the largest connected component of ``map >= threshold * max(map)``.

    Selvaraju et al.'s weakly supervised localization: binarize at 15 % of the map's maximum,
    keep the largest 8-connected segment (ties: the one with more map mass), draw its box.

    Args:
        maps: ``[B, H, W]`` (or gradient-style ``[B, C, H, W]``) maps.
        threshold: fraction of the per-image maximum.

    Returns:
        ``[B, 4]`` float boxes ``(x0, y0, x1, y1)``, half-open; NaN rows where the map has no
        positive value (no box can be drawn).
    """
    sal = as_saliency(maps, reduction=channel_reduction).cpu().numpy()
    out = np.full((sal.shape[0], 4), np.nan)
    for i, m in enumerate(sal):
        peak = float(m.max())
        if peak <= 0:
            continue
        labels, count = ndimage.label(m >= threshold * peak, structure=_EIGHT_CONNECTED)
        sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        mass = np.bincount(labels.ravel(), weights=m.ravel(), minlength=count + 1)[1:]
        best = np.lexsort((-mass, -sizes))[0] + 1  # largest size, then largest mass
        rows, cols = np.nonzero(labels == best)
        out[i] = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
    return torch.from_numpy(out).float()


@dataclass(frozen=True)
class LocalizationResult:
    """Per-image weakly supervised localization outcome.

    Attributes:
        boxes: ``[B, 4]`` predicted boxes (NaN rows: no positive map value).
        best_iou: ``[B]`` largest IoU with a ground-truth box of the class (0 if no predicted box,
            NaN if the image has no ground-truth box).
        correct_class: ``[B]`` bool, prediction == label.
        error: ``[B]`` float: 1.0 if the class is wrong or ``best_iou < iou_threshold``, else 0.0;
            NaN when the image has no ground-truth box (skipped). Top-1 localization error is
            ``nanmean(error)``.
    """

    boxes: Tensor
    best_iou: Tensor
    correct_class: Tensor
    error: Tensor


def localization_error(
    maps: Tensor,
    *,
    predictions: Tensor | Sequence[int],
    labels: Tensor | Sequence[int],
    gt_boxes: Sequence[Sequence[Box]],
    threshold: float = 0.15,
    iou_threshold: float = 0.5,
    channel_reduction: ChannelReduction = "abs_sum",
) -> LocalizationResult:
    """Top-1 weakly supervised localization error (Selvaraju et al., ILSVRC protocol).

    An image counts as an error when the top-1 prediction is wrong, or when the IoU between the
    box from :func:`wsl_boxes` and every ground-truth box of the labelled class is below
    ``iou_threshold``. ``maps`` should explain the predicted class, as in the paper. Boxes
    must be in the maps' pixel coordinates.

    Args:
        maps: ``[B, H, W]`` maps.
        predictions: ``[B]`` predicted (top-1) class.
        labels: ``[B]`` true class.
        gt_boxes: per image, the ground-truth boxes of the labelled class (may be empty).
        threshold: binarization threshold as a fraction of the map maximum.
        iou_threshold: IoU needed for a correct box.
    """
    b = maps.shape[0]
    pred = torch.as_tensor(predictions).reshape(-1).cpu()
    lab = torch.as_tensor(labels).reshape(-1).cpu()
    if pred.numel() != b or lab.numel() != b or len(gt_boxes) != b:
        raise ValueError(
            f"predictions ({pred.numel()}), labels ({lab.numel()}) and gt_boxes ({len(gt_boxes)}) "
            f"must each have one entry per image ({b})"
        )
    boxes = wsl_boxes(maps, threshold=threshold, channel_reduction=channel_reduction)
    best = torch.full((b,), math.nan)
    for i in range(b):
        if len(gt_boxes[i]) == 0:
            continue
        if torch.isnan(boxes[i]).any():
            best[i] = 0.0
        else:
            best[i] = float(box_iou(tuple(boxes[i].tolist()), list(gt_boxes[i])).max())
    correct = pred == lab
    error = torch.where(correct & (best >= iou_threshold), 0.0, 1.0)
    error = torch.where(torch.isnan(best), math.nan, error)
    return LocalizationResult(boxes=boxes, best_iou=best, correct_class=correct, error=error)


def _check_regions(regions: Tensor, b: int) -> Tensor:
    if not isinstance(regions, Tensor) or regions.ndim != 3:
        shape = tuple(regions.shape) if isinstance(regions, Tensor) else type(regions).__name__
        raise ValueError(f"regions must be a [B, H, W] boolean mask tensor, got {shape}")
    if regions.shape[0] != b:
        raise ValueError(f"regions has {regions.shape[0]} masks but maps has {b}")
    return regions.bool()


def dilate(regions: Tensor, radius: float) -> Tensor:
    """Pixels within Euclidean distance ``radius`` of a ``True`` pixel of ``[B, H, W]`` masks."""
    if radius <= 0:
        return regions.bool()
    r = int(math.floor(radius))
    y, x = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
    disk = ((x**2 + y**2) <= radius**2).float().to(regions.device)
    hits = F.conv2d(regions.float()[:, None], disk[None, None], padding=r)[:, 0]
    return hits > 0.5


def pointing_game(
    maps: Tensor,
    regions: Tensor,
    *,
    tolerance: float = 15.0,
    channel_reduction: ChannelReduction = "abs_sum",
) -> Tensor:
    """Pointing game (Zhang et al.): is the map's maximum on the object, within ``tolerance`` px?

    A hit is a maximum point within Euclidean distance ``tolerance`` of a region pixel. When
    several pixels share the maximum, the score is the fraction of them that hit (the expected
    hit if the tie were broken at random), so a flat map does not hit for free. Images whose
    region is empty are skipped: NaN, never a hit (Quantus 0.6 turns them into hits).

    Args:
        maps: ``[B, h, w]`` maps (resized to the regions' size if different).
        regions: ``[B, H, W]`` boolean object masks of the explained class.
        tolerance: radius in pixels (15 in Zhang et al.; 0 = the maximum must be on the mask).

    Returns:
        ``[B]`` float: 1 hit, 0 miss (fractions on ties), NaN skipped.
    """
    sal = as_saliency(maps, reduction=channel_reduction)
    reg = _check_regions(regions, sal.shape[0]).to(sal.device)
    sal = resize_maps(sal, tuple(reg.shape[1:]))
    flat = sal.reshape(sal.shape[0], -1)
    is_max = flat == flat.amax(1, keepdim=True)
    near = dilate(reg, tolerance).reshape(reg.shape[0], -1)
    score = (is_max & near).sum(1).float() / is_max.sum(1).float()
    empty = reg.reshape(reg.shape[0], -1).sum(1) == 0
    return torch.where(empty, torch.full_like(score, math.nan), score).cpu()


def energy_in_region(
    maps: Tensor, regions: Tensor, *, channel_reduction: ChannelReduction = "abs_sum"
) -> Tensor:
    """Share of the map's positive energy inside the region (energy-based pointing game).

    ``E = sum_{p in R} max(m_p, 0) / sum_p max(m_p, 0)`` (Wang et al. 2020; equals Arras et al.'s
    relevance mass accuracy for non-negative maps). NaN when the region is empty or the map has
    no positive value.

    Args:
        maps: ``[B, h, w]`` maps (resized to the regions' size if different).
        regions: ``[B, H, W]`` boolean masks (use :func:`boxes_to_masks` for boxes).

    Returns:
        ``[B]`` float in ``[0, 1]`` or NaN.
    """
    sal = as_saliency(maps, reduction=channel_reduction)
    reg = _check_regions(regions, sal.shape[0]).to(sal.device)
    sal = resize_maps(sal, tuple(reg.shape[1:])).clamp_min(0).double()
    inside = (sal * reg).flatten(1).sum(1)
    total = sal.flatten(1).sum(1)
    ok = (total > 0) & (reg.flatten(1).sum(1) > 0)
    ratio = inside / torch.where(total > 0, total, torch.ones_like(total))
    return torch.where(ok, ratio, torch.full_like(ratio, math.nan)).float().cpu()
