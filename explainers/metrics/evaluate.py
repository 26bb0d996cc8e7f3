"""One entry point that scores many methods on the same images, plus bootstrap intervals.

The study side calls :func:`evaluate_methods` once per (model, image set) with the maps already
computed (e.g. by ``explainers.explain``) and gets one value per image per metric per method;
it then summarises with :func:`bootstrap_interval` (percentile bootstrap over images).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from explainers.metrics._common import as_targets, check_images, eval_mode
from explainers.metrics.correlation import occlusion_rank_correlation
from explainers.metrics.deletion import BaselineName, ScoreName, perturbation_curves
from explainers.metrics.directions import HIGHER_IS_BETTER
from explainers.metrics.localization import (
    Box,
    boxes_to_masks,
    energy_in_region,
    localization_error,
    pointing_game,
)

#: :data:`HIGHER_IS_BETTER` (the direction of each metric key) is defined in the torch-free
#: :mod:`explainers.metrics.directions` and re-exported here.
__all__ = ["HIGHER_IS_BETTER", "Interval", "bootstrap_interval", "evaluate_methods"]


def evaluate_methods(
    model: nn.Module,
    images: Tensor,
    targets: Tensor | Sequence[int],
    maps_by_method: Mapping[str, Tensor],
    *,
    masks: Tensor | None = None,
    boxes: Sequence[Sequence[Box]] | None = None,
    labels: Tensor | Sequence[int] | None = None,
    occlusion: Tensor | None = None,
    curves: Sequence[str] = ("deletion", "insertion"),
    steps: int = 32,
    patch: int = 1,
    baseline: BaselineName | float | Tensor = "blur",
    score: ScoreName = "softmax",
    tolerance: float = 15.0,
    wsl_threshold: float = 0.15,
    batch_size: int = 64,
) -> dict[str, dict[str, np.ndarray]]:
    """Per-image metrics for each method's maps.

    Args:
        model: classifier (eval mode during the call; not modified).
        images: ``[B, C, H, W]`` preprocessed images.
        targets: ``[B]`` explained class per image.
        maps_by_method: ``{method: [B, H, W] or [B, C, H, W] maps}`` for ``targets``.
        masks: ``[B, H, W]`` boolean object masks of the target class (pointing game, energy).
        boxes: per image, the ground-truth boxes of the target class (half-open x0, y0, x1, y1).
            Used for the WSL error and, when ``masks`` is None, turned into masks.
        labels: ``[B]`` true classes; with ``boxes``, enables ``localization_error`` (top-1,
            predictions from one forward of ``model``).
        occlusion: ``[B, h, w]`` occlusion maps; enables ``occlusion_spearman``.
        curves: which of deletion/insertion to compute (empty to skip).
        steps, patch, baseline, score, batch_size: see :func:`~explainers.metrics.deletion.perturbation_curves`.
        tolerance: pointing-game radius in pixels.
        wsl_threshold: WSL binarization threshold (fraction of the maximum).

    Returns:
        ``{method: {metric: float64 array [B]}}`` with keys among :data:`HIGHER_IS_BETTER`;
        NaN marks an image the metric skips (no object of the class, constant map, ...).
    """
    check_images(images)
    b, _, h, w = images.shape
    target = as_targets(targets, b, images.device)
    if masks is None and boxes is not None:
        masks = boxes_to_masks(boxes, (h, w))
    predictions = None
    if labels is not None and boxes is not None:
        with torch.inference_mode(), eval_mode(model):
            predictions = torch.cat(
                [model(images[i : i + batch_size]).argmax(1) for i in range(0, b, batch_size)]
            )
    results: dict[str, dict[str, np.ndarray]] = {}
    for method, maps in maps_by_method.items():
        if maps.shape[0] != b:
            raise ValueError(f"maps_by_method[{method!r}] has {maps.shape[0]} maps for {b} images")
        row: dict[str, np.ndarray] = {}
        if curves:
            for mode, curve in perturbation_curves(
                model,
                images,
                target,
                maps,
                modes=tuple(curves),
                steps=steps,
                patch=patch,
                baseline=baseline,
                score=score,
                batch_size=batch_size,
            ).items():
                row[f"{mode}_auc"] = curve.auc.double().numpy()
        if occlusion is not None:
            row["occlusion_spearman"] = occlusion_rank_correlation(maps, occlusion).double().numpy()
        if masks is not None:
            row["pointing_game"] = pointing_game(maps, masks, tolerance=tolerance).double().numpy()
            row["energy_in_region"] = energy_in_region(maps, masks).double().numpy()
        if predictions is not None and boxes is not None and labels is not None:
            loc = localization_error(
                maps, predictions=predictions, labels=labels, gt_boxes=boxes, threshold=wsl_threshold
            )
            row["localization_error"] = loc.error.double().numpy()
        results[method] = row
    return results


@dataclass(frozen=True)
class Interval:
    """Mean of the non-NaN values with a percentile bootstrap interval; ``n`` values used."""

    mean: float
    low: float
    high: float
    n: int


def bootstrap_interval(
    values: np.ndarray | Sequence[float], *, level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> Interval:
    """Percentile bootstrap interval of the mean over images, NaNs (skipped images) dropped.

    Resamples the ``n`` non-NaN values with replacement ``resamples`` times (seeded) and takes
    the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled means.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    if v.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(resamples, v.size))].mean(1)
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return Interval(float(v.mean()), float(low), float(high), int(v.size))
