"""Sanity checks by model-parameter randomization (Adebayo et al. 2018).

A faithful explanation must depend on the model's weights. Two protocols:

* **cascading**: randomize the layers one after another from the top (the logits layer) down to
  the first layer, keeping earlier randomizations; explain after each step.
* **independent**: randomize each layer alone (all other layers as trained).

"Layers" are the modules with a ``weight`` parameter that are convolutions (``nn.Conv1d/2d/3d``
and transposed variants) or ``nn.Linear``, in registration order (normally the forward order);
cascading walks them in reverse. BatchNorm layers are *not* randomized: their affine parameters
and running statistics stay as trained, so a randomized convolution's output is still
standardised the way the next layer expects (Quantus, by contrast, also resets BatchNorm,
which sets gamma = 1, beta = 0 and running mean/var to 0/1). Randomization is the module's own
``reset_parameters()`` (PyTorch's default init, Kaiming-uniform for conv/linear) under a seeded
RNG (step ``i`` uses the ``i``-th of a list of 62-bit seeds drawn from ``seed``, so a small
``seed`` never replays the seed that built the model); pass ``randomize_layer`` for another scheme (e.g. Adebayo's truncated
normal). The user's model is never touched: all work happens on a ``copy.deepcopy``.

Similarity between the original map ``a`` and the randomized map ``b`` of the same image and
target (``explain_fn`` output; gradient maps ``[B, C, H, W]`` are reduced by sum of absolute
values over channels for SSIM/HOG/abs-Spearman and by plain sum for signed Spearman):

* ``spearman``: Spearman's rho of the signed maps;
* ``spearman_abs``: Spearman's rho of ``|a|`` and ``|b|``;
* ``ssim``: SSIM (scikit-image, 7x7 window, data range 1) of ``|a| / max|a|`` and ``|b| / max|b|``;
* ``hog``: Pearson correlation of the HOG descriptors (scikit-image, 9 orientations, cells of
  ``max(4, min(H, W) // 8)`` px, 2x2 blocks) of the same normalised maps.

A constant map shares no ranking or structure with another map: its correlations count as 0.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import Tensor, nn

from explainers.metrics._common import as_saliency, as_targets, check_images
from explainers.metrics.correlation import pearson, spearman

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ExplainFn = Callable[[nn.Module, Tensor, Tensor], Tensor]
RandomizeFn = Callable[[nn.Module, int], None]
SanityOrder = Literal["cascading", "independent"]
SIMILARITY_MEASURES: tuple[str, ...] = ("spearman", "spearman_abs", "ssim", "hog")
_LAYER_TYPES = (nn.modules.conv._ConvNd, nn.Linear)


def randomizable_layers(model: nn.Module) -> list[str]:
    """Dotted names of the conv / linear modules with a weight, in registration order."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, _LAYER_TYPES) and isinstance(getattr(module, "weight", None), nn.Parameter)
    ]


def reset_layer(module: nn.Module, seed: int) -> None:
    """Re-initialise ``module`` with its own ``reset_parameters()`` under ``torch.manual_seed(seed)``.

    The global RNG state (CPU and CUDA) is restored afterwards.
    """
    devices = sorted({p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        with torch.no_grad():
            module.reset_parameters()


def _normalised_abs(maps: Tensor) -> np.ndarray:
    a = maps.abs().double()
    peak = a.flatten(1).amax(1).clamp_min(1e-30)
    return (a / peak[:, None, None]).cpu().numpy()


def _ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from skimage.metrics import structural_similarity

    win = min(7, min(a.shape[1:]) - (1 - min(a.shape[1:]) % 2))
    return np.array([structural_similarity(x, y, data_range=1.0, win_size=win) for x, y in zip(a, b)])


def _hog(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from skimage.feature import hog

    cell = max(4, min(a.shape[1:]) // 8)
    kwargs = {
        "orientations": 9,
        "pixels_per_cell": (cell, cell),
        "cells_per_block": (2, 2),
        "feature_vector": True,
    }
    ha = np.stack([hog(x, **kwargs) for x in a])
    hb = np.stack([hog(y, **kwargs) for y in b])
    return pearson(torch.from_numpy(ha), torch.from_numpy(hb)).double().numpy()


def map_similarity(
    original: Tensor, randomized: Tensor, *, measures: Sequence[str] = SIMILARITY_MEASURES
) -> dict[str, Tensor]:
    """Per-image similarity of two batches of maps (see the module docstring): ``{measure: [B]}``."""
    unknown = set(measures) - set(SIMILARITY_MEASURES)
    if unknown:
        raise ValueError(f"unknown similarity measures {sorted(unknown)}; use {SIMILARITY_MEASURES}")
    signed_a = as_saliency(original, reduction="sum", name="original")
    signed_b = as_saliency(randomized, reduction="sum", name="randomized").to(signed_a.device)
    abs_a = as_saliency(original, reduction="abs_sum", name="original").abs()
    abs_b = as_saliency(randomized, reduction="abs_sum", name="randomized").to(abs_a.device).abs()
    if abs_a.shape != abs_b.shape:
        raise ValueError(f"map shapes differ: {tuple(abs_a.shape)} vs {tuple(abs_b.shape)}")
    out: dict[str, Tensor] = {}
    if "spearman" in measures:
        out["spearman"] = spearman(signed_a, signed_b).cpu()
    if "spearman_abs" in measures:
        out["spearman_abs"] = spearman(abs_a, abs_b).cpu()
    if "ssim" in measures or "hog" in measures:
        na, nb = _normalised_abs(abs_a), _normalised_abs(abs_b)
        if "ssim" in measures:
            out["ssim"] = torch.from_numpy(_ssim(na, nb)).float()
        if "hog" in measures:
            out["hog"] = torch.from_numpy(_hog(na, nb)).float()
    return {k: torch.nan_to_num(v.float(), nan=0.0) for k, v in out.items()}


@dataclass(frozen=True)
class SanityResult:
    """Similarity of randomized-model maps to the original maps, per step and image.

    Attributes:
        order: ``"cascading"`` or ``"independent"``.
        layers: the layer randomized at each step (cascading: in addition to all earlier ones).
        similarity: ``{measure: [L, B] tensor}``.
        original: ``[B, H, W]`` or ``[B, C, H, W]`` maps of the unmodified model.
        randomized: ``[L, B, ...]`` maps after each step when ``keep_maps=True``, else None.
    """

    order: str
    layers: tuple[str, ...]
    similarity: dict[str, Tensor]
    original: Tensor
    randomized: Tensor | None = field(default=None, repr=False)

    def curve(self, measure: str = "spearman_abs") -> Tensor:
        """Mean similarity over images at each step: ``[L]``."""
        return self.similarity[measure].nanmean(1)


def sanity_cascade(
    model: nn.Module,
    images: Tensor,
    targets: Tensor | Sequence[int],
    explain_fn: ExplainFn,
    *,
    order: SanityOrder = "cascading",
    seed: int = 0,
    layers: Sequence[str] | None = None,
    measures: Sequence[str] = SIMILARITY_MEASURES,
    randomize_layer: RandomizeFn | None = None,
    keep_maps: bool = False,
) -> SanityResult:
    """Model-parameter randomization test (Adebayo et al. 2018) for one explanation method.

    Args:
        model: the trained classifier (never modified; a deep copy is randomized).
        images: ``[B, C, H, W]`` preprocessed images.
        targets: ``[B]`` classes to explain (the same before and after randomization).
        explain_fn: ``explain_fn(model, images, targets) -> [B, H, W]`` or ``[B, C, H, W]``;
            e.g. ``lambda m, x, t: explainers.explain(m, x, t, ["gradcam"])["gradcam"]``.
        order: ``"cascading"`` (top layer first, cumulative) or ``"independent"``.
        seed: seeds the list of per-step seeds (step ``i`` re-initialises its layer under the
            ``i``-th of ``torch.randint(2**62, (L,), generator=Generator().manual_seed(seed))``).
        layers: layer names in bottom-to-top order; default :func:`randomizable_layers`.
        measures: similarity measures to compute (subset of ``SIMILARITY_MEASURES``).
        randomize_layer: ``fn(module, step)`` replacing the default :func:`reset_layer`.
        keep_maps: also return every randomized map.

    Returns:
        A :class:`SanityResult`; judge it with :func:`sanity_verdict`.
    """
    check_images(images)
    target = as_targets(targets, images.shape[0], images.device)
    if order not in ("cascading", "independent"):
        raise ValueError(f"order must be 'cascading' or 'independent', got {order!r}")
    work = copy.deepcopy(model)
    modules = dict(work.named_modules())
    names = list(layers) if layers is not None else randomizable_layers(work)
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"unknown layers {missing}; candidates: {randomizable_layers(work)}")
    if not names:
        raise ValueError("the model has no conv or linear layer to randomize")
    steps = names[::-1] if order == "cascading" else names
    original_state = copy.deepcopy(work.state_dict()) if order == "independent" else None

    step_seeds = torch.randint(2**62, (len(steps),), generator=torch.Generator().manual_seed(seed)).tolist()
    original = explain_fn(work, images, target).detach()
    sims: dict[str, list[Tensor]] = {m: [] for m in measures}
    kept: list[Tensor] = []
    for step, name in enumerate(steps):
        if original_state is not None:
            work.load_state_dict(original_state)
        if randomize_layer is None:
            reset_layer(modules[name], step_seeds[step])
        else:
            randomize_layer(modules[name], step)
        randomized = explain_fn(work, images, target).detach()
        for measure, values in map_similarity(original, randomized, measures=measures).items():
            sims[measure].append(values)
        if keep_maps:
            kept.append(randomized.cpu())
    return SanityResult(
        order=order,
        layers=tuple(steps),
        similarity={m: torch.stack(v) for m, v in sims.items()},
        original=original.cpu(),
        randomized=torch.stack(kept) if keep_maps else None,
    )


@dataclass(frozen=True)
class SanityVerdict:
    """Pass/fail of one method's sanity check, with the numbers behind it."""

    passed: bool
    measure: str
    final: float
    largest_rise: float
    rule: str


def sanity_verdict(
    result: SanityResult, *, measure: str = "spearman_abs", threshold: float = 0.5
) -> SanityVerdict:
    """Decide whether the map falls as layers are randomized.

    Rule (cascading): pass iff (i) the mean similarity over images after the *last* step (all
    layers random) is below ``threshold``, and (ii) the fall is monotone-ish: once the curve has
    gone below ``threshold`` it never comes back above it (before any randomization the
    similarity is 1 by definition). ``largest_rise`` (the largest increase over an earlier step,
    measured on ``max(curve, 0)`` since any negative value already means "no resemblance") is
    reported for information. Rule (independent): pass iff the mean over layers of the mean
    similarity is below ``threshold`` (on average, each layer's weights matter).
    """
    curve = result.curve(measure).double().numpy()
    floor = np.clip(curve, 0.0, None)
    rises = [floor[j] - floor[:j].min() for j in range(1, len(floor))]
    largest_rise = max(0.0, float(max(rises))) if rises else 0.0
    if result.order == "cascading":
        final = float(curve[-1])
        below = np.flatnonzero(curve < threshold)
        recovers = bool(below.size) and bool((curve[below[0] :] >= threshold).any())
        passed = final < threshold and not recovers
        rule = f"mean {measure} after the last step < {threshold}, never back above it once below"
    else:
        final = float(np.mean(curve))
        passed = final < threshold
        rule = f"mean over layers of mean {measure} < {threshold}"
    return SanityVerdict(
        passed=bool(passed) and not math.isnan(final),
        measure=measure,
        final=final,
        largest_rise=largest_rise,
        rule=rule,
    )


def cascade_data(result: SanityResult, measure: str = "spearman_abs") -> dict[str, list]:
    """Plot-ready cascade: step labels (``"original"`` first) with mean and quartiles over images."""
    values = result.similarity[measure].double()
    q = torch.nanquantile(values, torch.tensor([0.25, 0.75], dtype=torch.float64), dim=1)
    return {
        "steps": ["original", *result.layers],
        "mean": [1.0, *values.nanmean(1).tolist()],
        "low": [1.0, *q[0].tolist()],
        "high": [1.0, *q[1].tolist()],
    }


def cascade_figure(
    results: Mapping[str, SanityResult] | SanityResult, *, measure: str = "spearman_abs"
) -> Figure:
    """Matplotlib ``Figure`` (object API, no pyplot) of the cascade per method: mean and quartiles."""
    from matplotlib.figure import Figure

    if isinstance(results, SanityResult):
        results = {"method": results}
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    labels: list[str] = []
    for method, result in results.items():
        data = cascade_data(result, measure)
        x = list(range(len(data["steps"])))
        ax.plot(x, data["mean"], marker="o", label=method)
        ax.fill_between(x, data["low"], data["high"], alpha=0.2)
        labels = data["steps"]
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(f"{measure} similarity to original")
    ax.set_xlabel(
        "randomized (cumulative from the top)"
        if all(r.order == "cascading" for r in results.values())
        else "randomized layer"
    )
    ax.set_ylim(-1.05 if measure.startswith("spearman") or measure == "hog" else -0.05, 1.05)
    ax.axhline(0.0, color="gray", linewidth=0.5)
    ax.legend(fontsize=8)
    return fig
