"""The torch side of the automatic evaluation: maps, metrics and sanity cascades for one model.

Imported lazily by :mod:`studies.pipeline.evaluation` (inside the Celery task or the command),
never by views, admin or URLs. It takes database rows and returns plain numpy / Python values;
:mod:`studies.pipeline.evaluation` stores them. Model and image loading reuse
:mod:`studies.pipeline.gpu.explain_runner` (same cache, same preprocessing as the stimuli: RGB,
bilinear resize without crop to the model's input size, the row's mean/std).

Per *unit* (one image and one explained class) it computes, with :func:`explainers.explain`
for the study's methods plus ``occlusion`` (the reference for the rank correlation) and the
model-independent controls of :func:`explainers.metrics.control_map`:

* ``deletion_auc`` / ``insertion_auc`` (Samek et al. 2016; Petsiuk et al. 2018),
* ``occlusion_spearman`` (Selvaraju et al.: Spearman's rho with the occlusion map),
* ``pointing_game`` (Zhang et al.; tolerance 15 px at 224 px, scaled to the input size) and
  ``energy_in_region`` (inside the object's mask when the image has one, else its box),
* ``localization_error`` (Selvaraju's WSL protocol: binarize at 15 % of the maximum, largest
  component, box, IoU >= 0.5). Images hold several categories, so "the prediction is right"
  means: the explained class is among the model's top-``m`` classes, ``m`` = the number of
  the image's categories (top-1 for single-category images, top-2 for two-object scenes; the
  same rule the planner uses for trust studies).

The sanity cascade (Adebayo et al. 2018) runs per method on the first ``sanity_units`` units.
Models with many layers are randomized in at most ``sanity_steps`` contiguous groups of
layers (top group first, cumulative), so after the last step every conv/linear layer is random
whatever the grouping.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from explainers import METHODS, explain
from explainers.metrics import (
    CONTROL_KINDS,
    bootstrap_interval,
    cascade_data,
    control_explain_fn,
    control_map,
    evaluate_methods,
    localization_error,
    randomizable_layers,
    sanity_cascade,
    sanity_verdict,
)
from explainers.metrics.sanity import reset_layer
from studies.lib.scenes import PrepareInputError
from studies.models import ClassifierModel, Image
from studies.pipeline.gpu.explain_runner import _normalize, images_load, methods_check, model_load

CONTROL_PREFIX = "control:"
SANITY_MEASURE = "spearman_abs"


@dataclass(frozen=True)
class Unit:
    """One evaluated (image, class) pair; ``category`` is the image's category name for it."""

    image: Image
    target: int
    category: str


@dataclass
class ModelEvaluation:
    """What one model's evaluation produced (plain values, ready to store)."""

    units: list[tuple[int, int]]
    values: dict[str, dict[str, np.ndarray]]
    sanity: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluationSettings:
    """Knobs of one evaluation (stored with each result's summary)."""

    steps: int = 16
    baseline: str = "blur"
    score: str = "softmax"
    wsl_threshold: float = 0.15
    tolerance_at_224: float = 15.0
    batch_size: int = 64
    explain_batch: int = 16
    sanity_units: int = 4
    sanity_steps: int = 8
    seed: int = 0
    controls: tuple[str, ...] = CONTROL_KINDS
    occlusion: Mapping[str, Any] | None = None


def _occlusion_options(size: int, configured: Mapping[str, Any] | None) -> dict[str, Any]:
    if configured:
        return dict(configured)
    window = max(4, size // 8)
    return {"window": window, "stride": max(2, window // 2)}


def _scaled_boxes(unit: Unit, size: int) -> list[tuple[float, float, float, float]]:
    image = unit.image
    sx, sy = size / image.width, size / image.height
    return [(b["x0"] * sx, b["y0"] * sy, b["x1"] * sx, b["y1"] * sy)
            for b in image.boxes or [] if b.get("category") == unit.category]  # fmt: skip


def _region(unit: Unit, size: int) -> torch.Tensor:
    """The object's mask (from ``Image.mask``: pixel value ``1 + category index``) or its boxes."""
    image = unit.image
    categories = list(image.categories or [])
    if image.mask and unit.category in categories:
        try:
            with default_storage.open(image.mask.name, "rb") as handle:
                picture = PILImage.open(io.BytesIO(handle.read()))
                picture.load()
        except OSError as exc:
            raise PrepareInputError(f"mask of image {image.original_name!r} (id {image.pk}) cannot be read: {exc}") from exc
        values = np.asarray(picture.convert("L").resize((size, size), PILImage.Resampling.NEAREST))
        region = torch.from_numpy(values == categories.index(unit.category) + 1)
        if region.any():
            return region
    region = torch.zeros(size, size, dtype=torch.bool)
    for x0, y0, x1, y1 in _scaled_boxes(unit, size):
        region[int(round(y0)):int(round(y1)), int(round(x0)):int(round(x1))] = True
    return region


def _group_units(units: Sequence[Unit]) -> tuple[list[Image], list[list[int]], list[tuple[int, int]]]:
    """Images in first-seen order, their targets, and each unit's ``(image index, target index)``."""
    order: dict[int, int] = {}
    images: list[Image] = []
    targets: list[list[int]] = []
    where: list[tuple[int, int]] = []
    for unit in units:
        if unit.image.pk not in order:
            order[unit.image.pk] = len(images)
            images.append(unit.image)
            targets.append([])
        b = order[unit.image.pk]
        targets[b].append(unit.target)
        where.append((b, len(targets[b]) - 1))
    return images, targets, where


def _maps_for_units(
    model: torch.nn.Module, layer: str, inputs: torch.Tensor, targets: list[list[int]], where: list[tuple[int, int]],
    methods: Sequence[str], options: Mapping[str, Mapping[str, Any]], chunk: int,
    progress: Callable[[str], None] | None = None,
) -> dict[str, torch.Tensor]:
    """``{method: [U, ...]}`` maps per unit, computed in chunks of images (one ``explain`` call each)."""
    per_image: dict[str, list[torch.Tensor]] = {m: [] for m in methods}
    used = {m: dict(options[m]) for m in methods if options.get(m)}
    for start in range(0, len(targets), chunk):
        part = targets[start:start + chunk]
        k = max(len(t) for t in part)
        padded = torch.tensor([t + [t[-1]] * (k - len(t)) for t in part], dtype=torch.long)
        maps = explain(model, inputs[start:start + chunk], padded, list(methods), layer, options=used or None)
        for m in methods:
            per_image[m].append(maps[m].detach())
        if progress is not None:
            progress(f"explain {min(start + chunk, len(targets))}/{len(targets)} images")
    out: dict[str, torch.Tensor] = {}
    for m in methods:
        # Chunks may differ in K; index unit by unit.
        flat = [block[b] for block in per_image[m] for b in range(block.shape[0])]
        out[m] = torch.stack([flat[b][j] for b, j in where])
    return out


def _loc_predictions(model: torch.nn.Module, inputs: torch.Tensor, units: Sequence[Unit], batch: int) -> torch.Tensor:
    """Per unit: its target when the target is in the model's top-m (m = the image's categories), else top-1."""
    with torch.inference_mode():
        logits = torch.cat([model(inputs[i:i + batch]) for i in range(0, inputs.shape[0], batch)])
    out = []
    for i, unit in enumerate(units):
        m = max(1, len(set(unit.image.categories or [])))
        top = logits[i].topk(min(m, logits.shape[1])).indices.tolist()
        out.append(unit.target if unit.target in top else top[0])
    return torch.tensor(out, dtype=torch.long)


def _layer_groups(model: torch.nn.Module, steps: int) -> list[list[str]]:
    """The randomizable layers in bottom-to-top order, split into at most ``steps`` contiguous groups."""
    names = randomizable_layers(model)
    if not names:
        return []
    bounds = np.linspace(0, len(names), min(steps, len(names)) + 1).round().astype(int)
    return [names[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def _sanity(
    model: torch.nn.Module, layer: str, inputs: torch.Tensor, targets: torch.Tensor, method: str,
    options: Mapping[str, Any], settings: EvaluationSettings,
) -> dict[str, Any]:
    groups = _layer_groups(model, settings.sanity_steps)
    if not groups:
        raise PrepareInputError("the model has no conv or linear layer to randomize for the sanity check")
    step_seeds = np.random.default_rng(settings.seed).integers(0, 2**62, size=len(groups)).tolist()
    # sanity_cascade randomizes a deep copy and hands ``randomize`` the copy's top module of
    # each group; the copy's other modules are captured at its first (unrandomized) explain.
    copy_modules: dict[str, torch.nn.Module] = {}
    group_by_module: dict[int, list[str]] = {}

    def randomize(module: torch.nn.Module, step: int) -> None:
        for j, name in enumerate(group_by_module[id(module)]):
            reset_layer(copy_modules[name], int(step_seeds[step]) + j)

    if method.startswith(CONTROL_PREFIX):
        inner = control_explain_fn(method[len(CONTROL_PREFIX):], seed=settings.seed)  # type: ignore[arg-type]
    else:
        used = {method: dict(options)} if options else None

        def inner(m: torch.nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return explain(m, x, t, [method], layer, options=used)[method]

    def explain_fn(m: torch.nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if not copy_modules:  # first call: the unmodified copy, before any randomization
            copy_modules.update(dict(m.named_modules()))
            group_by_module.update({id(copy_modules[g[-1]]): g for g in groups})
        return inner(m, x, t)

    result = sanity_cascade(model, inputs, targets, explain_fn, layers=[g[-1] for g in groups],
                            measures=("spearman_abs", "spearman"), randomize_layer=randomize, seed=settings.seed)
    verdict = sanity_verdict(result, measure=SANITY_MEASURE)
    data = cascade_data(result, SANITY_MEASURE)
    data["steps"] = ["original"] + [_group_label(g) for g in reversed(groups)]
    final = result.similarity[SANITY_MEASURE][-1].double().numpy()
    return {
        "final": final,
        "cascade": data,
        "signed_mean": [1.0, *result.similarity["spearman"].double().nanmean(1).tolist()],
        "verdict": {"passed": verdict.passed, "measure": verdict.measure, "final": verdict.final,
                    "largest_rise": verdict.largest_rise, "rule": verdict.rule},
    }


def _group_label(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{names[-1]} .. {names[0]} ({len(names)})"


def model_evaluate(
    model_row: ClassifierModel,
    units: Sequence[Unit],
    methods: Sequence[str],
    *,
    options: Mapping[str, Mapping[str, Any]],
    settings: EvaluationSettings,
    progress: Callable[[str], None] | None = None,
) -> ModelEvaluation:
    """Every metric for every method (and control) on ``units`` of one model, plus sanity cascades.

    Returns:
        :class:`ModelEvaluation` with ``values[method][metric]`` float arrays ``[U]`` (NaN =
        skipped: no region for the class, flat map, ...) and ``sanity[method]`` dicts
        (``final`` per-unit similarity after the last step, ``cascade`` plot data, ``verdict``).
    """
    methods_check(methods)
    if not units:
        raise PrepareInputError(f"model {model_row.name!r}: nothing to evaluate (no image with a category)")
    loaded, layer = model_load(model_row)
    model = loaded.model
    size = model_row.input_size
    images, targets, where = _group_units(units)
    inputs_by_image = _normalize(model_row, images_load(images, size=size))
    explained = list(dict.fromkeys([*methods, "occlusion"]))
    all_options = {m: dict(options.get(m, {})) for m in explained}
    all_options["occlusion"] = _occlusion_options(size, settings.occlusion or options.get("occlusion"))
    maps = _maps_for_units(model, layer, inputs_by_image, targets, where, explained, all_options,
                           settings.explain_batch, progress)
    occlusion = maps["occlusion"] if "occlusion" in methods else maps.pop("occlusion")
    inputs = inputs_by_image[torch.tensor([b for b, _ in where])]
    unit_targets = torch.tensor([u.target for u in units], dtype=torch.long)
    for kind in settings.controls:
        maps[f"{CONTROL_PREFIX}{kind}"] = control_map(kind, inputs, seed=settings.seed)  # type: ignore[arg-type]
    regions = torch.stack([_region(u, size) for u in units])
    boxes = [_scaled_boxes(u, size) for u in units]
    if progress is not None:
        progress("metrics")
    values = evaluate_methods(
        model, inputs, unit_targets, maps, masks=regions, occlusion=occlusion, steps=settings.steps,
        baseline=settings.baseline, score=settings.score,  # type: ignore[arg-type]
        tolerance=settings.tolerance_at_224 * size / 224, wsl_threshold=settings.wsl_threshold,
        batch_size=settings.batch_size,
    )
    predictions = _loc_predictions(model, inputs, units, settings.batch_size)
    for method, method_maps in maps.items():
        loc = localization_error(method_maps, predictions=predictions, labels=unit_targets, gt_boxes=boxes,
                                 threshold=settings.wsl_threshold)
        values[method]["localization_error"] = loc.error.double().numpy()
    sanity: dict[str, dict[str, Any]] = {}
    subset = slice(0, min(settings.sanity_units, len(units)))
    for method in maps:
        if method == "occlusion" and method not in methods:
            continue
        if progress is not None:
            progress(f"sanity {method}")
        sanity[method] = _sanity(model, layer, inputs[subset], unit_targets[subset], method,
                                 all_options.get(method, {}), settings)
    return ModelEvaluation(units=[(u.image.pk, u.target) for u in units], values=values, sanity=sanity)


def summary_interval(per_unit: np.ndarray, image_ids: Sequence[int], *, seed: int) -> dict[str, Any]:
    """Mean and 95 % bootstrap interval over *images*: units of one image are averaged first."""
    groups: dict[int, list[float]] = {}
    for image_id, value in zip(image_ids, per_unit.tolist(), strict=True):
        if value is not None and np.isfinite(value):
            groups.setdefault(image_id, []).append(float(value))
    per_image = np.array([np.mean(v) for v in groups.values()], dtype=np.float64)
    ci = bootstrap_interval(per_image, seed=seed)
    return {"mean": ci.mean, "low": ci.low, "high": ci.high, "n": ci.n,
            "n_values": int(np.isfinite(per_unit).sum())}  # fmt: skip


__all__ = ["CONTROL_PREFIX", "METHODS", "EvaluationSettings", "ModelEvaluation", "Unit", "model_evaluate",
           "summary_interval"]
