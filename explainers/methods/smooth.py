"""SmoothGrad over any gradient method, with batched, chunked noisy samples."""

from __future__ import annotations

import torch
from torch import nn

from explainers.methods.common import input_gradients
from explainers.registry import METHODS, MethodSpec

CPU_ROWS = 16
"""Default rows per SmoothGrad pass on CPU (``batch_size=None``)."""


def smoothgrad_bases() -> dict[str, MethodSpec]:
    """The base methods SmoothGrad averages, read from the registry: its ``gradient`` family, each an
    input gradient with its spec's ``backward_rule``, times the (noisy) input when the spec has
    ``times_input``."""
    return {name: spec for name, spec in METHODS.items() if spec.family == "gradient"}


def noise_sigma(images: torch.Tensor, noise: float) -> torch.Tensor:
    """Per-image standard deviation ``noise * (max(x_b) - min(x_b))`` as ``[B]``
    (Smilkov et al., 2017, sec. 3: sigma relative to the input range)."""
    flat = images.detach().flatten(1).float()
    return noise * (flat.max(dim=1).values - flat.min(dim=1).values)


def smoothgrad(
    model: nn.Module,
    images: torch.Tensor,
    classes: torch.Tensor,
    *,
    base: str = "saliency",
    samples: int = 8,
    noise: float = 0.15,
    seed: int = 0,
    batch_size: int | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """SmoothGrad (Smilkov et al., 2017, "SmoothGrad: removing noise by adding noise").

    ``M(x) = 1/n sum_{i=1..n} E(x + eps_i)``, ``eps_i ~ N(0, sigma_b^2)``,
    ``sigma_b = noise * (max(x_b) - min(x_b))``, where ``E`` is ``base``
    (``saliency``, ``input_x_gradient`` (noisy input times its gradient),
    ``guided_backprop`` or ``deconvnet``).

    The noise for all ``B * samples`` rows is drawn first, as one ``randn`` of shape
    ``[B * samples, C, H, W]`` ordered image-major (``x.repeat_interleave(samples)``)
    from a generator seeded with ``seed`` -- the layout of Captum ``NoiseTunnel`` with
    its default ``nt_samples_batch_size=None``, so the same seed gives the same noise.
    The rows are then evaluated ``batch_size`` at a time (the memory knob; the result
    does not depend on it). ``None`` picks :data:`CPU_ROWS` rows on CPU (smaller passes
    stay in cache and measured faster there) and all rows in one pass elsewhere.

    Returns:
        float32 ``[B, C, H, W]``.
    """
    bases = smoothgrad_bases()
    if base not in bases:
        raise ValueError(f"smoothgrad base {base!r} not one of {tuple(bases)}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"smoothgrad samples must be an integer >= 1, got {samples!r}")
    if not isinstance(noise, int | float) or isinstance(noise, bool) or not 0.0 <= noise < float("inf"):
        raise ValueError(f"smoothgrad noise must be a finite number >= 0, got {noise!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise ValueError(f"smoothgrad batch_size must be None or an integer >= 1, got {batch_size!r}")
    spec = bases[base]
    batch = images.shape[0]
    rows_total = batch * samples
    if batch_size is None:
        batch_size = CPU_ROWS if images.device.type == "cpu" else rows_total
    rows = max(1, int(batch_size))
    sigma = noise_sigma(images, noise)
    generator = torch.Generator(device=images.device).manual_seed(seed)
    noisy = images.detach().float().repeat_interleave(samples, dim=0)
    eps = torch.randn(noisy.shape, generator=generator, device=images.device)
    noisy.add_(eps.mul_(sigma.repeat_interleave(samples).view(-1, 1, 1, 1)))
    noisy = noisy.to(images.dtype)  # the model's dtype (the engine casts images to it)
    del eps
    row_classes = classes.repeat_interleave(samples)
    owner = torch.arange(batch, device=images.device).repeat_interleave(samples)
    total = torch.zeros(images.shape, dtype=torch.float32, device=images.device)
    for start in range(0, rows_total, rows):
        chunk = noisy[start:start + rows]
        grads = input_gradients(
            model, chunk, row_classes[start:start + rows], spec.backward_rule, autocast_dtype=autocast_dtype
        )
        if spec.times_input:
            grads = grads * chunk.float()
        total.index_add_(0, owner[start:start + rows], grads)
    return total / samples
