"""Integrated Gradients with Riemann or Gauss-Legendre quadrature, chunked over steps."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from explainers.methods.common import input_gradients

QUADRATURES = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def quadrature(method: str, steps: int) -> tuple[list[float], list[float]]:
    """Weights and nodes in [0, 1] of the rule ``method`` with ``steps`` nodes (the
    same values as Captum's ``approximation_parameters``)."""
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return (0.5 * weights).tolist(), (0.5 * (1 + nodes)).tolist()
    if method not in QUADRATURES:
        raise ValueError(f"integrated_gradients method {method!r} not one of {QUADRATURES}")
    if steps < 2:
        raise ValueError("Riemann integrated gradients need steps >= 2")
    weights = [1 / steps] * steps
    kind = method.split("_")[1]
    if kind == "trapezoid":
        weights[0] /= 2
        weights[-1] /= 2
        alphas = torch.linspace(0, 1, steps)
    elif kind == "left":
        alphas = torch.linspace(0, 1 - 1 / steps, steps)
    elif kind == "middle":
        alphas = torch.linspace(1 / (2 * steps), 1 - 1 / (2 * steps), steps)
    else:
        alphas = torch.linspace(1 / steps, 1, steps)
    return weights, alphas.tolist()


def integrated_gradients(
    model: nn.Module,
    images: torch.Tensor,
    classes: torch.Tensor,
    *,
    steps: int = 32,
    method: str = "gausslegendre",
    baseline: float | torch.Tensor | None = None,
    batch_size: int | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Integrated Gradients (Sundararajan et al., 2017, "Axiomatic Attribution for Deep
    Networks", eq. 1 and its Riemann approximation).

    ``IG(x) = (x - x') * integral_0^1 dy_c/dx (x' + a (x - x')) da``
    ``      ~ (x - x') * sum_j w_j dy_c/dx (x' + a_j (x - x'))``
    with nodes/weights from :func:`quadrature`. ``baseline`` ``x'`` is 0 by default
    (in the model's input space), a float, or a tensor broadcastable to the images.
    Steps run ``batch_size`` rows per pass (``None``: all ``B * steps`` rows at once),
    step-major as in Captum ``IntegratedGradients``.

    Returns:
        float32 ``[B, C, H, W]``.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"integrated_gradients steps must be an integer >= 1, got {steps!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise ValueError(f"integrated_gradients batch_size must be None or an integer >= 1, got {batch_size!r}")
    weights, alphas = quadrature(method, steps)
    x = images.detach()
    if baseline is None:
        base = torch.zeros_like(x)
    else:
        base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
        if not bool(torch.isfinite(base).all()):
            raise ValueError("integrated_gradients baseline must be finite")
    delta = x - base
    batch = x.shape[0]
    per_chunk = steps if batch_size is None else max(1, min(steps, batch_size // batch))
    total = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    for start in range(0, steps, per_chunk):
        a = alphas[start:start + per_chunk]
        w = torch.tensor(weights[start:start + per_chunk], dtype=torch.float32, device=x.device)
        scaled = torch.cat([base + alpha * delta for alpha in a], dim=0)
        grads = input_gradients(
            model, scaled, classes.repeat(len(a)), "plain", autocast_dtype=autocast_dtype
        )
        total += (grads.view(len(a), batch, -1) * w.view(-1, 1, 1)).sum(dim=0).view_as(x)
    return total * delta.float()
