"""Deletion and insertion curves (Samek et al. 2016; Petsiuk et al. 2018, RISE).

Pixels (or ``patch`` x ``patch`` squares) are ranked by the map, most relevant first. At step
``s`` of ``S`` the ``round(s / S * N)`` top-ranked units (``N`` units in all) are

* **deletion**: replaced by the baseline (start = the image, end = the baseline), or
* **insertion**: copied from the image onto the baseline (start = the baseline, end = the image),

and the model's softmax probability of the target class is recorded (``score="sigmoid"`` for
multi-label models, ``"logit"`` for the raw score). The area under the curve
is the trapezoid rule over the exact fraction of units perturbed, ``x_s = count_s / N in [0, 1]``:
``AUC = sum_s (x_{s+1} - x_s) (p_s + p_{s+1}) / 2``. Lower deletion AUC and higher insertion AUC
mean a more faithful map.

Vectorised as in torchcam's ``DeletionInsertionMetric``: one stable ``argsort`` per image gives
each unit its rank ``r``; the mask for step ``s`` is ``r < count_s``; all (image, step, curve)
jobs are flattened and evaluated ``batch_size`` at a time, one forward per chunk, under
``torch.inference_mode()``. The all-baseline and all-image points are shared between the two
curves, so both curves cost ``2 + 2 (S - 1)`` forwards per image. Ties in the map are broken by
raster order (stable sort), so a constant map deletes from the top-left corner.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from explainers.fast import fast_model
from explainers.metrics._common import (
    ChannelReduction,
    as_saliency,
    as_targets,
    check_batch,
    check_images,
    eval_mode,
    resize_maps,
)

CurveMode = Literal["deletion", "insertion"]
BaselineName = Literal["blur", "mean", "zero"]
ScoreName = Literal["softmax", "sigmoid", "logit"]


@dataclass(frozen=True)
class CurveResult:
    """One deletion or insertion curve per image.

    Attributes:
        mode: ``"deletion"`` or ``"insertion"``.
        fractions: ``[S + 1]`` fraction of units perturbed at each point, from 0 to 1.
        probs: ``[B, S + 1]`` target-class score (softmax probability by default) at each point.
        auc: ``[B]`` trapezoid area under ``probs`` over ``fractions``.
    """

    mode: str
    fractions: Tensor
    probs: Tensor
    auc: Tensor


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``[B, C, H, W]`` images, kernel radius ``ceil(3 sigma)``.

    Borders are reflected (replicated when the image is smaller than the radius).
    """
    if sigma <= 0:
        return images.clone()
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    b, c, h, w = images.shape
    pad_mode = "reflect" if radius < min(h, w) else "replicate"
    out = images.reshape(b * c, 1, h, w)
    out = F.conv2d(F.pad(out, (radius, radius, 0, 0), mode=pad_mode), kernel.view(1, 1, 1, -1))
    out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode=pad_mode), kernel.view(1, 1, -1, 1))
    return out.reshape(b, c, h, w)


def make_baseline(
    images: Tensor, baseline: BaselineName | float | Tensor, *, blur_sigma: float = 5.0
) -> Tensor:
    """Build the ``[B, C, H, W]`` baseline that replaces removed pixels.

    Args:
        images: ``[B, C, H, W]`` preprocessed images.
        baseline: ``"blur"`` (Gaussian blur with ``blur_sigma`` px; RISE insertion uses sigma 5),
            ``"mean"`` (each image's per-channel mean), ``"zero"`` (0 in the *preprocessed* space,
            i.e. the dataset mean colour for normalised inputs), a float constant, or a tensor
            broadcastable to the images.
        blur_sigma: standard deviation of the blur in pixels.
    """
    if isinstance(baseline, Tensor):
        return torch.broadcast_to(baseline.to(images), images.shape)
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(images, float(baseline))
    if baseline == "blur":
        return gaussian_blur(images, blur_sigma)
    if baseline == "mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    if baseline == "zero":
        return torch.zeros_like(images)
    raise ValueError(f"unknown baseline {baseline!r}; use 'blur', 'mean', 'zero', a float or a tensor")


def unit_ranks(saliency: Tensor, patch: int) -> Tensor:
    """Rank of each ``patch`` x ``patch`` unit by descending mean saliency: ``[B, H/p * W/p]``, 0 = top.

    Ties keep raster order (stable sort).
    """
    b, h, w = saliency.shape
    scores = (
        F.avg_pool2d(saliency[:, None], patch)[:, 0].reshape(b, -1) if patch > 1 else saliency.reshape(b, -1)
    )
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return ranks


def _target_scores(model: nn.Module, x: Tensor, targets: Tensor, score: ScoreName) -> Tensor:
    logits = model(x)
    if logits.ndim != 2:
        raise ValueError(f"model must return [N, classes] logits, got shape {tuple(logits.shape)}")
    picked = logits.float()
    if score == "softmax":
        picked = picked.softmax(1)
    picked = picked.gather(1, targets[:, None])[:, 0]
    return picked.sigmoid() if score == "sigmoid" else picked


def perturbation_curves(
    model: nn.Module,
    images: Tensor,
    targets: Tensor | Sequence[int],
    maps: Tensor,
    *,
    modes: Sequence[CurveMode] = ("deletion", "insertion"),
    steps: int = 32,
    patch: int = 1,
    baseline: BaselineName | float | Tensor = "blur",
    blur_sigma: float = 5.0,
    score: ScoreName = "softmax",
    batch_size: int = 64,
    channel_reduction: ChannelReduction = "abs_sum",
    fast: bool = True,
) -> dict[str, CurveResult]:
    """Deletion and/or insertion curves of ``maps`` for ``model`` (see the module docstring).

    Args:
        model: classifier returning ``[N, classes]`` logits. Run in eval mode for the call
            (each module's flag is restored afterwards); parameters are not touched.
        images: ``[B, C, H, W]`` preprocessed images.
        targets: ``[B]`` class whose score is tracked.
        maps: ``[B, h, w]`` or ``[B, C', h, w]`` maps; resized to ``H x W`` (bilinear or area)
            if needed; gradient maps are reduced with ``channel_reduction``.
        modes: which curves to compute.
        steps: number of steps ``S``; each curve has ``S + 1`` points.
        patch: side of the square units that are ranked and removed together; must divide H and W.
        baseline: what a removed pixel becomes (see :func:`make_baseline`).
        blur_sigma: blur standard deviation in pixels for ``baseline="blur"``.
        score: ``"softmax"`` probability (default, as in RISE, for single-label classifiers),
            ``"sigmoid"`` of the target logit (multi-label classifiers such as the synthetic
            world's CNN), or the raw ``"logit"``.
        batch_size: perturbed images per forward pass (memory knob).
        channel_reduction: how ``[B, C, H, W]`` maps become one value per pixel.
        fast: score the perturbed images with the cached fast copy of the model
            (:mod:`explainers.fast`: BatchNorm folded, channels-last; scores equal up to
            float rounding); ``False`` runs the model as given.

    Returns:
        ``{mode: CurveResult}`` for each requested mode.
    """
    check_images(images)
    b, _, h, w = images.shape
    saliency = as_saliency(maps, reduction=channel_reduction).to(images.device)
    check_batch(b, saliency, "maps")
    saliency = resize_maps(saliency, (h, w))
    target = as_targets(targets, b, images.device)
    modes = tuple(modes)
    if not modes or any(m not in ("deletion", "insertion") for m in modes):
        raise ValueError(f"modes must be a non-empty subset of ('deletion', 'insertion'), got {modes!r}")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got steps={steps}, batch_size={batch_size}")
    if patch < 1 or h % patch or w % patch:
        raise ValueError(f"patch={patch} must be >= 1 and divide the image size {h}x{w}")
    if score not in ("softmax", "sigmoid", "logit"):
        raise ValueError(f"score must be 'softmax', 'sigmoid' or 'logit', got {score!r}")

    hp, wp = h // patch, w // patch
    n_units = hp * wp
    counts = torch.round(torch.linspace(0, n_units, steps + 1, dtype=torch.float64)).long().to(images.device)
    fractions = counts.double() / n_units

    with torch.inference_mode(), eval_mode(model):
        scorer = fast_model(model) if fast else model
        base = make_baseline(images, baseline, blur_sigma=blur_sigma)
        ranks = unit_ranks(saliency, patch)
        # Shared end points: the untouched image and the full baseline.
        p_image = torch.cat(
            [
                _target_scores(scorer, images[i : i + batch_size], target[i : i + batch_size], score)
                for i in range(0, b, batch_size)
            ]
        )
        p_base = torch.cat(
            [
                _target_scores(scorer, base[i : i + batch_size], target[i : i + batch_size], score)
                for i in range(0, b, batch_size)
            ]
        )
        # Interior jobs: (image, step, is_insertion) for steps 1..S-1 of each mode.
        interior = torch.arange(1, steps, device=images.device)
        job_img, job_step, job_ins = [], [], []
        for mode in modes:
            grid_b, grid_s = torch.meshgrid(torch.arange(b, device=images.device), interior, indexing="ij")
            job_img.append(grid_b.reshape(-1))
            job_step.append(grid_s.reshape(-1))
            job_ins.append(torch.full((grid_b.numel(),), mode == "insertion", device=images.device))
        j_img, j_step, j_ins = torch.cat(job_img), torch.cat(job_step), torch.cat(job_ins)
        scores = torch.empty(j_img.numel(), device=images.device)
        for start in range(0, j_img.numel(), batch_size):
            sl = slice(start, start + batch_size)
            bi, si, ins = j_img[sl], j_step[sl], j_ins[sl]
            chosen = ranks[bi] < counts[si][:, None]  # [n, units]: removed (deletion) / inserted
            chosen = chosen.view(-1, 1, hp, wp)
            if patch > 1:
                chosen = chosen.repeat_interleave(patch, 2).repeat_interleave(patch, 3)
            show_image = chosen == ins.view(-1, 1, 1, 1)
            x = torch.where(show_image, images[bi], base[bi])
            scores[sl] = _target_scores(scorer, x, target[bi], score)

    results: dict[str, CurveResult] = {}
    offset = 0
    n_interior = b * (steps - 1)
    for mode in modes:
        mid = scores[offset : offset + n_interior].view(b, steps - 1)
        offset += n_interior
        first, last = (p_image, p_base) if mode == "deletion" else (p_base, p_image)
        probs = torch.cat([first[:, None], mid, last[:, None]], dim=1).float()
        auc = torch.trapezoid(probs.double(), fractions.to(probs.device)[None].expand(b, -1), dim=1).float()
        results[mode] = CurveResult(
            mode=mode, fractions=fractions.float().cpu(), probs=probs.cpu(), auc=auc.cpu()
        )
    return results


def deletion_insertion(
    model: nn.Module,
    images: Tensor,
    targets: Tensor | Sequence[int],
    maps: Tensor,
    *,
    mode: CurveMode = "deletion",
    steps: int = 32,
    patch: int = 1,
    baseline: BaselineName | float | Tensor = "blur",
    blur_sigma: float = 5.0,
    score: ScoreName = "softmax",
    batch_size: int = 64,
    channel_reduction: ChannelReduction = "abs_sum",
    fast: bool = True,
) -> CurveResult:
    """One curve (``mode="deletion"`` or ``"insertion"``); see :func:`perturbation_curves`."""
    return perturbation_curves(
        model,
        images,
        targets,
        maps,
        modes=(mode,),
        steps=steps,
        patch=patch,
        baseline=baseline,
        blur_sigma=blur_sigma,
        score=score,
        batch_size=batch_size,
        channel_reduction=channel_reduction,
        fast=fast,
    )[mode]
