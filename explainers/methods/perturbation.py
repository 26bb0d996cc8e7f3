"""Forward-only perturbation methods (occlusion, RISE), batched under inference mode.

Both evaluate many perturbed copies per forward (``batch_size`` rows, the memory knob)
and serve every target of an image from the same forwards. Outputs are float32
spatial maps ``[B, K, H, W]`` (the engine drops ``K`` for ``[B]`` targets).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from explainers.methods.common import autocast_context, check_output


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be an integer >= 1, got {value!r}")
    return value


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"occlusion {name} must be a positive int or (h, w), got {value!r}")
    return int(pair[0]), int(pair[1])


def occlusion_windows(
    size: tuple[int, int], window: int | tuple[int, int], stride: int | tuple[int, int]
) -> torch.Tensor:
    """Boolean masks ``[P, H, W]`` of the sliding windows, row-major over positions
    ``0, stride, ..., ceil((H - h) / stride) * stride``; the last window is clipped at the
    border when the stride does not divide ``H - h`` (Captum ``Occlusion``'s positions)."""
    (height, width), (wh, ww), (sh, sw) = size, _pair(window, "window"), _pair(stride, "stride")
    if wh > height or ww > width:
        raise ValueError(f"occlusion window {(wh, ww)} larger than the image {(height, width)}")
    masks = []
    rows = math.ceil((height - wh) / sh) + 1
    cols = math.ceil((width - ww) / sw) + 1
    for y in range(0, rows * sh, sh):
        for x in range(0, cols * sw, sw):
            mask = torch.zeros(height, width, dtype=torch.bool)
            mask[y:y + wh, x:x + ww] = True
            masks.append(mask)
    return torch.stack(masks)


def _scores(model: nn.Module, batch: torch.Tensor, classes: torch.Tensor, softmax: bool,
            check: bool = False) -> torch.Tensor:
    logits = model(batch)
    if check:
        check_output(logits, batch.shape[0], classes)
    logits = logits.float()
    if softmax:
        logits = logits.softmax(dim=1)
    return logits.gather(1, classes)


def occlusion(
    model: nn.Module,
    images: torch.Tensor,
    classes: torch.Tensor,
    *,
    window: int | tuple[int, int] = 32,
    stride: int | tuple[int, int] = 16,
    baseline: float | torch.Tensor = 0.0,
    batch_size: int = 16,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Occlusion sensitivity (Zeiler & Fergus, 2014, "Visualizing and Understanding
    Convolutional Networks", sec. 4.2).

    For each window ``W_p`` (all channels) the image is set to ``baseline`` inside it:
    ``d_p = y_c(x) - y_c(x with W_p := baseline)``; a pixel's attribution is the mean of
    ``d_p`` over the windows covering it (0 if none), as Captum ``Occlusion`` with
    ``sliding_window_shapes=(C, h, w)`` and ``strides=(C, s, s)``.

    Args:
        classes: ``[B, K]`` target classes (all served by the same forwards).
        batch_size: perturbed images per forward (memory knob). The default 16 measured
            fastest on CPU (ResNet-18, 224x224: 8-16 rows beat 64 by ~25%, larger
            batches fall out of cache); on a GPU pass a larger value.

    Returns:
        float32 ``[B, K, H, W]``.
    """
    _positive_int(batch_size, "occlusion batch_size")
    batch, _, height, width = images.shape
    x = images.detach()
    masks = occlusion_windows((height, width), window, stride).to(x.device)
    count = masks.shape[0]
    base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
    classes = classes.to(x.device)
    diffs = torch.empty(batch, classes.shape[1], count, device=x.device)
    rows = batch_size if batch_size >= 1 else 1
    with torch.inference_mode(), autocast_context(x.device, autocast_dtype):
        reference = _scores(model, x, classes, softmax=False, check=True)
        total = count * batch
        buffer = torch.empty((min(rows, total), *x.shape[1:]), dtype=x.dtype, device=x.device)
        for start in range(0, total, rows):
            stop = min(total, start + rows)
            index = torch.arange(start, stop, device=x.device)
            p, b = index // batch, index % batch  # perturbation-major, as Captum
            chunk = buffer[: stop - start]
            torch.where(masks[p].unsqueeze(1), base[b], x[b], out=chunk)
            diffs[b, :, p] = reference[b] - _scores(model, chunk, classes[b], softmax=False)
    flat = masks.view(count, -1).float()
    covered = flat.sum(dim=0).clamp(min=1)
    attribution = (diffs @ flat) / covered
    return attribution.view(batch, classes.shape[1], height, width)


def rise_grids(
    count: int, *, cells: int, p: float, size: tuple[int, int], seed: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random RISE grids ``[N, cells, cells]`` (1 with probability ``p``) and crop
    shifts ``[N, 2]`` in ``[0, cell_size)``, drawn from a CPU generator seeded ``seed``."""
    if not 0.0 < p <= 1.0:
        raise ValueError(f"rise p must be in (0, 1], got {p}")
    generator = torch.Generator().manual_seed(seed)
    grids = (torch.rand(count, cells, cells, generator=generator) < p).float()
    cell = (math.ceil(size[0] / cells), math.ceil(size[1] / cells))
    shifts = torch.stack(
        [torch.randint(0, cell[0], (count,), generator=generator),
         torch.randint(0, cell[1], (count,), generator=generator)], dim=1)
    return grids.to(device), shifts.to(device)


def rise_masks_from(grids: torch.Tensor, shifts: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Soft masks ``[n, H, W]``: each grid upsampled bilinearly to
    ``(cells + 1) * cell_size`` and cropped at its shift (Petsiuk et al., 2018, sec. 3.2)."""
    cells = grids.shape[-1]
    cell = (math.ceil(size[0] / cells), math.ceil(size[1] / cells))
    up = F.interpolate(grids.unsqueeze(1), size=((cells + 1) * cell[0], (cells + 1) * cell[1]),
                       mode="bilinear", align_corners=False)[:, 0]
    rows = shifts[:, 0:1] + torch.arange(size[0], device=grids.device)
    cols = shifts[:, 1:2] + torch.arange(size[1], device=grids.device)
    n = torch.arange(grids.shape[0], device=grids.device).view(-1, 1, 1)
    return up[n, rows[:, :, None], cols[:, None, :]]


def rise_masks(
    count: int, *, cells: int = 7, p: float = 0.5, size: tuple[int, int], seed: int = 0,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """All ``count`` RISE masks ``[N, H, W]`` for a seed (what :func:`rise` uses)."""
    grids, shifts = rise_grids(count, cells=cells, p=p, size=size, seed=seed, device=device)
    return rise_masks_from(grids, shifts, size)


def rise(
    model: nn.Module,
    images: torch.Tensor,
    classes: torch.Tensor,
    *,
    masks: int = 2000,
    cells: int = 7,
    p: float = 0.5,
    seed: int = 0,
    batch_size: int = 64,
    score: str = "softmax",
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """RISE (Petsiuk et al., 2018, "RISE: Randomized Input Sampling for Explanation of
    Black-box Models", eq. 6).

    ``S_c(x) = 1 / (N p) * sum_i f_c(x * M_i) M_i`` with ``N`` random soft masks
    (:func:`rise_masks`) and ``f_c`` the class probability (``score="softmax"``, as
    the paper) or the logit (``score="logit"``). Masks are generated chunk by chunk
    from small grids, so memory is ``O(batch_size * C * H * W)``.

    Returns:
        float32 ``[B, K, H, W]``.
    """
    if score not in ("softmax", "logit"):
        raise ValueError(f"rise score must be 'softmax' or 'logit', got {score!r}")
    _positive_int(masks, "rise masks")
    _positive_int(cells, "rise cells")
    _positive_int(batch_size, "rise batch_size")
    if not 0.0 < p <= 1.0:
        raise ValueError(f"rise p must be in (0, 1], got {p}")
    batch, _, height, width = images.shape
    x = images.detach()
    grids, shifts = rise_grids(masks, cells=cells, p=p, size=(height, width), seed=seed, device=x.device)
    classes = classes.to(x.device)
    per_chunk = max(1, batch_size // batch)
    saliency = torch.zeros(batch, classes.shape[1], height * width, device=x.device)
    with torch.inference_mode(), autocast_context(x.device, autocast_dtype):
        for start in range(0, masks, per_chunk):
            chunk = rise_masks_from(grids[start:start + per_chunk], shifts[start:start + per_chunk],
                                    (height, width))
            n = chunk.shape[0]
            perturbed = (x.unsqueeze(1) * chunk.unsqueeze(1).unsqueeze(0).to(x.dtype)).flatten(0, 1)
            scores = _scores(model, perturbed, classes.repeat_interleave(n, dim=0), score == "softmax",
                             check=start == 0)
            saliency += scores.view(batch, n, -1).transpose(1, 2) @ chunk.view(n, -1).float()
    return (saliency / (masks * p)).view(batch, classes.shape[1], height, width)
