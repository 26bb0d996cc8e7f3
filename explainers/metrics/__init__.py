"""Automatic evaluation of explanations: faithfulness, localization, sanity checks, controls.

Pure PyTorch (+ numpy/scipy, scikit-image for SSIM/HOG). Every function takes batched tensors
and returns one value per image, so intervals over images can be computed by the caller.

Imports are lazy (PEP 562): ``import explainers.metrics.directions`` (which way is better for each
metric) does not import torch; the names below load their submodule on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from explainers.metrics.controls import CONTROL_KINDS, control_explain_fn, control_map, sobel_magnitude
    from explainers.metrics.correlation import occlusion_rank_correlation, pearson, rankdata, spearman
    from explainers.metrics.deletion import (
        CurveResult,
        deletion_insertion,
        make_baseline,
        perturbation_curves,
    )
    from explainers.metrics.directions import HIGHER_IS_BETTER
    from explainers.metrics.evaluate import Interval, bootstrap_interval, evaluate_methods
    from explainers.metrics.localization import (
        LocalizationResult,
        box_iou,
        boxes_to_masks,
        energy_in_region,
        localization_error,
        pointing_game,
        wsl_boxes,
    )
    from explainers.metrics.sanity import (
        SIMILARITY_MEASURES,
        SanityResult,
        SanityVerdict,
        cascade_data,
        cascade_figure,
        map_similarity,
        randomizable_layers,
        sanity_cascade,
        sanity_verdict,
    )

_SUBMODULE = {
    "controls": ("CONTROL_KINDS", "control_explain_fn", "control_map", "sobel_magnitude"),
    "correlation": ("occlusion_rank_correlation", "pearson", "rankdata", "spearman"),
    "deletion": ("CurveResult", "deletion_insertion", "make_baseline", "perturbation_curves"),
    "directions": ("HIGHER_IS_BETTER",),
    "evaluate": ("Interval", "bootstrap_interval", "evaluate_methods"),
    "localization": ("LocalizationResult", "box_iou", "boxes_to_masks", "energy_in_region",
                     "localization_error", "pointing_game", "wsl_boxes"),
    "sanity": ("SIMILARITY_MEASURES", "SanityResult", "SanityVerdict", "cascade_data", "cascade_figure",
               "map_similarity", "randomizable_layers", "sanity_cascade", "sanity_verdict"),
}
_WHERE = {name: module for module, names in _SUBMODULE.items() for name in names}

__all__ = [
    "CONTROL_KINDS",
    "HIGHER_IS_BETTER",
    "SIMILARITY_MEASURES",
    "CurveResult",
    "Interval",
    "LocalizationResult",
    "SanityResult",
    "SanityVerdict",
    "box_iou",
    "boxes_to_masks",
    "bootstrap_interval",
    "cascade_data",
    "cascade_figure",
    "control_explain_fn",
    "control_map",
    "deletion_insertion",
    "energy_in_region",
    "evaluate_methods",
    "localization_error",
    "make_baseline",
    "map_similarity",
    "occlusion_rank_correlation",
    "pearson",
    "perturbation_curves",
    "pointing_game",
    "randomizable_layers",
    "rankdata",
    "sanity_cascade",
    "sanity_verdict",
    "sobel_magnitude",
    "spearman",
    "wsl_boxes",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'explainers.metrics' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"explainers.metrics.{module}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
