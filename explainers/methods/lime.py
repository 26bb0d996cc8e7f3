"""LIME on superpixels (Ribeiro et al., 2016), batched forwards under inference mode.

Per image: SLIC superpixels (scikit-image, fixed parameters), ``samples`` binary masks over the
superpixels from a CPU generator seeded ``seed`` (the same masks for a given image whatever else is
in the batch), the masked-out superpixels set to ``baseline``, every perturbed image scored in
batched forwards under :func:`torch.inference_mode`, each sample weighted by Captum's exponential
kernel on the cosine distance between the image and the perturbed image, and a weighted ridge
regression (closed form) of the scores on the masks. Each pixel gets its superpixel's coefficient.
Every target of an image is served by the same forwards.

Options and defaults, and why:

- ``baseline=0.0``: Captum ``Lime``'s default. The engine receives normalised images, where 0 is
  the normalisation mean colour (for ImageNet statistics, the dataset's mean colour), so it is the
  "grey" of the original ``lime_image``'s ``hide_color``; ``"mean"`` uses each image's own
  per-channel mean, a float or a tensor broadcastable to the images any other value.
- ``kernel_width=1.0`` and the cosine distance: Captum's ``get_exp_kernel_similarity_function()``.
- ``alpha=1.0``: the ridge penalty of the ``lime`` package's default ``Ridge(alpha=1)``.
- ``score="softmax"``: the class probability, as the paper explains a classifier's probabilities;
  ``"logit"`` regresses the logit.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from explainers.methods.common import autocast_context, check_output

SLIC = {"compactness": 10.0, "sigma": 1.0, "start_label": 0, "enforce_connectivity": True}


def superpixels(images: torch.Tensor, segments: int = 50) -> torch.Tensor:
    """SLIC superpixels ``[B, H, W]`` (long, labels ``0 .. F_b - 1`` contiguous per image).

    Each image is min-max scaled to ``[0, 1]`` first (the engine's images are normalised), then
    ``skimage.segmentation.slic(image, n_segments=segments, compactness=10, sigma=1,
    start_label=0, channel_axis=-1)`` (converted to Lab for 3 channels, as scikit-image does).
    """
    from skimage.segmentation import slic  # imported here: only LIME needs scikit-image

    if isinstance(segments, bool) or not isinstance(segments, int) or segments < 1:
        raise ValueError(f"lime segments must be an integer >= 1, got {segments!r}")
    out = []
    for image in images.detach().float().cpu():
        low, high = image.amin(), image.amax()
        scaled = ((image - low) / (high - low)) if high > low else torch.zeros_like(image)
        labels = slic(scaled.permute(1, 2, 0).double().numpy(), n_segments=segments, channel_axis=-1,
                      convert2lab=image.shape[0] == 3, **SLIC)
        _, dense = np.unique(labels, return_inverse=True)
        out.append(torch.from_numpy(dense.reshape(labels.shape).astype(np.int64)))
    return torch.stack(out).to(images.device)


def lime_samples(features: int, samples: int, seed: int) -> torch.Tensor:
    """The binary masks ``[samples, features]`` (float, 1 = superpixel kept) of one image: each
    superpixel kept with probability 1/2, from ``torch.Generator().manual_seed(seed)``."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(samples, features, generator=generator) < 0.5).float()


def exp_kernel_rows(originals: torch.Tensor, perturbed: torch.Tensor, kernel_width: float) -> torch.Tensor:
    """``exp(-d^2 / (2 w^2))`` with ``d = 1 - cos(x, x_i)`` on the flattened images, row by row
    (``[N, ...]`` each; Captum's default similarity, ``get_exp_kernel_similarity_function()``)."""
    cos = F.cosine_similarity(originals.float().flatten(1), perturbed.float().flatten(1), dim=1)
    distance = 1 - cos
    return torch.exp(-(distance ** 2) / (2 * kernel_width ** 2))


def ridge(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted ridge with an unpenalised intercept, closed form (float64):
    ``min_{b, beta} sum_i w_i (y_i - b - x_i beta)^2 + alpha |beta|^2`` (the objective of
    scikit-learn's ``Ridge(alpha, fit_intercept=True).fit(x, y, sample_weight=w)``):
    with weighted means ``x_bar, y_bar``, ``beta = (X_c^T W X_c + alpha I)^-1 X_c^T W y_c`` and
    ``b = y_bar - x_bar beta``.

    Args:
        x: ``[N, F]``; y: ``[N]`` or ``[N, K]``; weights: ``[N]``.

    Returns:
        ``(beta [F] or [F, K], b [] or [K])`` in float32.
    """
    xd, yd, wd = x.double(), y.double(), weights.double().reshape(-1)
    squeeze = yd.dim() == 1
    yd = yd.unsqueeze(1) if squeeze else yd
    total = wd.sum()
    if not total > 0:
        raise ValueError("lime: every sample has zero kernel weight")
    x_bar = (wd @ xd) / total
    y_bar = (wd @ yd) / total
    xc, yc = xd - x_bar, yd - y_bar
    gram = xc.T @ (wd[:, None] * xc) + alpha * torch.eye(xd.shape[1], dtype=torch.float64, device=xd.device)
    beta = torch.linalg.solve(gram, xc.T @ (wd[:, None] * yc))
    bias = y_bar - x_bar @ beta
    if squeeze:
        beta, bias = beta[:, 0], bias[0]
    return beta.float(), bias.float()


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be an integer >= 1, got {value!r}")
    return value


def _baseline(x: torch.Tensor, baseline: float | str | torch.Tensor) -> torch.Tensor:
    if isinstance(baseline, str):
        if baseline != "mean":
            raise ValueError(f"lime baseline must be a float, a tensor or 'mean', got {baseline!r}")
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    try:
        base = base.expand_as(x)
    except RuntimeError:
        raise ValueError(f"lime baseline of shape {tuple(base.shape)} does not broadcast to the images "
                         f"{tuple(x.shape)}") from None
    if not bool(torch.isfinite(base).all()):
        raise ValueError("lime baseline must be finite")
    return base


def lime(
    model: nn.Module,
    images: torch.Tensor,
    classes: torch.Tensor,
    *,
    samples: int = 1000,
    segments: int = 50,
    seed: int = 0,
    baseline: float | str | torch.Tensor = 0.0,
    kernel_width: float = 1.0,
    alpha: float = 1.0,
    score: str = "softmax",
    batch_size: int = 64,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """LIME with superpixel features (Ribeiro et al., 2016, "Why Should I Trust You?", sec. 3).

    For image ``x`` with superpixels ``s(p)`` (:func:`superpixels`) and binary masks
    ``z_i in {0,1}^F`` (:func:`lime_samples`): ``x_i = z_i[s] * x + (1 - z_i[s]) * x'``,
    ``pi_i = exp(-(1 - cos(x, x_i))^2 / (2 w^2))``, ``f_i = f_c(x_i)``; ``beta`` minimises
    ``sum_i pi_i (f_i - b - z_i beta)^2 + alpha |beta|^2`` (:func:`ridge`), and pixel ``p`` gets
    ``beta_{s(p)}``. Equals Captum ``Lime`` given the same ``feature_mask``, the same binary
    samples, its default similarity function and this ridge as ``interpretable_model``.

    Args:
        classes: ``[B, K]`` target classes (all served by the same forwards).
        samples: masks per image; segments: SLIC's ``n_segments``; seed: the masks' seed.
        baseline: ``0.0`` (default), another float, a tensor broadcastable to the images, or
            ``"mean"`` (each image's per-channel mean).
        kernel_width: ``w`` of the exponential kernel; alpha: ridge penalty.
        score: ``"softmax"`` (class probability) or ``"logit"``.
        batch_size: perturbed images per forward (memory knob).

    Returns:
        float32 ``[B, K, H, W]``.
    """
    _positive_int(samples, "lime samples")
    _positive_int(batch_size, "lime batch_size")
    if score not in ("softmax", "logit"):
        raise ValueError(f"lime score must be 'softmax' or 'logit', got {score!r}")
    if not (isinstance(kernel_width, int | float) and kernel_width > 0):
        raise ValueError(f"lime kernel_width must be > 0, got {kernel_width!r}")
    if not (isinstance(alpha, int | float) and alpha >= 0):
        raise ValueError(f"lime alpha must be >= 0, got {alpha!r}")
    batch, _, height, width = images.shape
    x = images.detach()
    base = _baseline(x, baseline)
    segmentation = superpixels(x, segments)
    classes = classes.to(x.device)
    counts = [int(seg.max()) + 1 for seg in segmentation]
    masks = [lime_samples(f, samples, seed).to(x.device) for f in counts]
    padded = torch.zeros(batch, samples, max(counts), device=x.device)
    for bi, m in enumerate(masks):
        padded[bi, :, : m.shape[1]] = m
    flat_segments = segmentation.flatten(1)
    scores = torch.empty(batch, samples, classes.shape[1], device=x.device)
    weights = torch.empty(batch, samples, device=x.device)
    total = batch * samples
    with torch.inference_mode(), autocast_context(x.device, autocast_dtype):
        for start in range(0, total, batch_size):
            index = torch.arange(start, min(total, start + batch_size), device=x.device)
            b, s = index // samples, index % samples  # image-major: one image's samples together
            keep = padded[b, s].gather(1, flat_segments[b]).view(-1, 1, height, width)
            perturbed = torch.where(keep.bool(), x[b], base[b])
            output = model(perturbed)
            if start == 0:
                check_output(output, index.shape[0], classes)
            logits = output.float()
            if score == "softmax":
                logits = logits.softmax(dim=1)
            scores[b, s] = logits.gather(1, classes[b])
            weights[b, s] = exp_kernel_rows(x[b], perturbed, kernel_width)
    out = torch.empty(batch, classes.shape[1], height, width, device=x.device)
    for bi in range(batch):
        beta, _ = ridge(masks[bi], scores[bi], weights[bi], float(alpha))  # [F, K]
        out[bi] = beta.T[:, segmentation[bi]]
    return out
