"""SmoothGrad over any gradient method, with batched, chunked noisy samples."""

from __future__ import annotations

import torch
from torch import nn

from explainers.methods.common import input_gradients
from explainers.rules import Rule

SMOOTHGRAD_BASES: dict[str, Rule] = {
    "saliency": "plain",
    "input_x_gradient": "plain",
    "guided_backprop": "guided",
    "deconvnet": "deconvnet",
}


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

    Samples are evaluated ``batch_size`` rows at a time (``None``: all ``B * samples``
    rows in one pass); each chunk holds whole samples, ordered image-major
    (``x.repeat_interleave(s)``) and draws its noise as one ``randn`` of the chunk's
    shape from a generator seeded with ``seed`` -- the layout of Captum ``NoiseTunnel``
    with ``nt_samples_batch_size = s``, so the same seed gives the same noise.

    Returns:
        float32 ``[B, C, H, W]``.
    """
    if base not in SMOOTHGRAD_BASES:
        raise ValueError(f"smoothgrad base {base!r} not one of {tuple(SMOOTHGRAD_BASES)}")
    if samples < 1:
        raise ValueError(f"smoothgrad samples must be >= 1, got {samples}")
    rule = SMOOTHGRAD_BASES[base]
    batch = images.shape[0]
    per_chunk = samples if batch_size is None else max(1, min(samples, batch_size // batch))
    sigma = noise_sigma(images, noise)
    generator = torch.Generator(device=images.device).manual_seed(seed)
    total = torch.zeros(images.shape, dtype=torch.float32, device=images.device)
    done = 0
    while done < samples:
        s = min(per_chunk, samples - done)
        expanded = images.detach().float().repeat_interleave(s, dim=0)
        eps = torch.randn(expanded.shape, generator=generator, device=images.device)
        noisy = expanded + eps * sigma.repeat_interleave(s).view(-1, 1, 1, 1)
        grads = input_gradients(
            model, noisy, classes.repeat_interleave(s), rule, autocast_dtype=autocast_dtype
        )
        if base == "input_x_gradient":
            grads = grads * noisy
        total += grads.view(batch, s, *images.shape[1:]).sum(dim=1)
        done += s
    return total / samples
