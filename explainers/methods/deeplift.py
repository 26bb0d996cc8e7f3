"""DeepLIFT with the rescale rule (Shrikumar et al., 2017), batched with its baseline.

One forward of ``[x; x']`` (``2B`` rows) runs inside a :class:`torch.overrides.TorchFunctionMode`
that routes every elementwise nonlinearity (ReLU in all its spellings, ReLU6/hardtanh, clamp at 0,
sigmoid, tanh) and every 2-d max pooling through an autograd function whose backward multiplies by
the rescale multiplier instead of the local derivative; one backward of the one-hot target (on both
halves, as Captum) then gives the multipliers ``m = dC/dx`` of the input, and the map is
``(x - x') * m``. Linear layers (convolutions, linear, eval BatchNorm, average pooling, sums,
concatenations) keep their gradient, which is their exact multiplier. Leaf modules of any other
type are refused with a ``ValueError`` naming the type, so no map is silently wrong because a
nonlinearity went through as a gradient. Nothing is left on the model: the mode ends in ``finally``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from explainers.methods.common import autocast_context, fresh_input, one_hot
from explainers.rules import _RECTIFIERS

EPS = 1e-10  # Captum DeepLift's default: below |x - x'| < eps the ordinary derivative is used

# Leaf module types whose DeepLIFT multiplier is handled: linear ones (gradient = multiplier) and
# the nonlinear ones that the function mode intercepts.
LINEAR_MODULES: tuple[type[nn.Module], ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d, nn.Dropout, nn.Dropout2d, nn.Flatten, nn.Identity,
)
NONLINEAR_MODULES: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Sigmoid, nn.Tanh,
                                                  nn.MaxPool2d)


def check_modules(model: nn.Module, allowed: tuple[type[nn.Module], ...], method: str) -> None:
    """Raise ``ValueError`` naming the first leaf module whose type is not in ``allowed``."""
    for name, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue  # containers: their own code only adds, concatenates and reshapes (assumed)
        if type(module).__module__.startswith("torch.fx"):
            continue
        if not isinstance(module, allowed):
            raise ValueError(
                f"{method} cannot handle layer {name!r} of type {type(module).__name__}; supported "
                f"leaf layers: {', '.join(sorted({t.__name__ for t in allowed}))}"
            )


class _Rescale(torch.autograd.Function):
    """``y = fn(z)`` on ``[x-rows; x'-rows]``; backward multiplies by the rescale multiplier
    ``m = (fn(z) - fn(z')) / (z - z')`` (both halves), or ``fn'`` where ``|z - z'| < eps``."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, fn: Callable, deriv: Callable, inplace: bool,  # type: ignore[override]
                eps: float) -> torch.Tensor:
        y = fn(z)
        zx, zr = z.chunk(2)
        yx, yr = y.chunk(2)
        dz = zx - zr
        ratio = (yx - yr) / dz
        ratio = torch.cat([ratio, ratio])
        dz = torch.cat([dz, dz])
        multiplier = torch.where(dz.abs() < eps, deriv(z, y), ratio)
        ctx.save_for_backward(multiplier)
        if inplace:
            z.copy_(y)
            ctx.mark_dirty(z)
            return z
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (multiplier,) = ctx.saved_tensors
        return grad * multiplier, None, None, None, None


def _unpool(values: torch.Tensor, indices: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Scatter-add ``values`` to the flat argmax ``indices`` of a max pooling (the pooling's
    gradient; overlapping windows add up)."""
    out = torch.zeros(shape[0], shape[1], math.prod(shape[2:]), dtype=values.dtype, device=values.device)
    out.scatter_add_(2, indices.flatten(2), values.flatten(2))
    return out.view(shape)


class _RescaleMaxPool(torch.autograd.Function):
    """DeepLIFT's max-pool rule, as Captum's ``maxpool``: with ``u = max(y, y')``, the input's
    argmax receives ``g (u - y')`` and the baseline's argmax ``g (y - u)``; their sum over both
    argmaxes is divided by ``z - z'`` (ordinary gradient where ``|z - z'| < eps``). Captum
    scatters with ``max_unpool2d``, which keeps one of several windows that share an argmax;
    this scatter-adds (the pooling's own gradient). The two agree for non-overlapping pools."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, kernel: Any, stride: Any, padding: Any, dilation: Any,  # type: ignore[override]
                ceil_mode: bool, eps: float) -> torch.Tensor:
        y, indices = F.max_pool2d(z, kernel, stride, padding, dilation, ceil_mode, return_indices=True)
        zx, zr = z.chunk(2)
        ctx.save_for_backward(zx - zr, y, indices)
        ctx.shape, ctx.eps = z.shape, eps
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        dz, y, indices = ctx.saved_tensors
        yx, yr = y.chunk(2)
        top = torch.max(yx, yr)
        delta_out = torch.cat([top - yr, yx - top])
        ux, ur = _unpool(grad * delta_out, indices, ctx.shape).chunk(2)
        spread = ux + ur
        ratio = torch.cat([spread / dz, spread / dz])
        dz = torch.cat([dz, dz])
        ordinary = _unpool(grad, indices, ctx.shape)
        return torch.where(dz.abs() < ctx.eps, ordinary, ratio), None, None, None, None, None, None


def _clamp_fns(lo: float, hi: float, closed: bool) -> tuple[Callable, Callable]:
    cap = None if math.isinf(hi) else hi

    def fn(z: torch.Tensor) -> torch.Tensor:
        return z.clamp(lo, cap)

    def deriv(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        mask = (z >= lo) & (z <= hi) if closed else (z > lo) & (z < hi)
        return mask.to(z.dtype)

    return fn, deriv


_SMOOTH: dict[Callable, tuple[Callable, Callable]] = {}
for _f in (torch.sigmoid, torch.Tensor.sigmoid, F.sigmoid, torch.special.expit):
    _SMOOTH[_f] = (torch.sigmoid, lambda z, y: y * (1 - y))
for _f in (torch.tanh, torch.Tensor.tanh, F.tanh):
    _SMOOTH[_f] = (torch.tanh, lambda z, y: 1 - y * y)
_MAXPOOL = {F.max_pool2d, torch.max_pool2d}


class _DeepLiftMode(TorchFunctionMode):
    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        x = args[0] if args else kwargs.get("input", kwargs.get("self"))
        if not (isinstance(x, torch.Tensor) and x.requires_grad and torch.is_grad_enabled()):
            return func(*args, **kwargs)
        parse = _RECTIFIERS.get(func)
        if parse is not None:
            spec = parse(args, kwargs)
            if spec is None:  # hardtanh / clamp with other bounds: still elementwise
                raise ValueError(f"deeplift cannot handle {getattr(func, '__name__', func)} with these "
                                 "bounds (only rectifiers with a lower bound of 0)")
            lo, hi, inplace, closed = spec
            fn, deriv = _clamp_fns(lo, hi, closed)
            self.calls += 1
            return _Rescale.apply(x, fn, deriv, inplace, self.eps)
        if func in _SMOOTH:
            fn, deriv = _SMOOTH[func]
            self.calls += 1
            return _Rescale.apply(x, fn, deriv, False, self.eps)
        if func in _MAXPOOL:
            names = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
            defaults = (None, None, None, 0, 1, False, False)
            values = [args[i] if i < len(args) else kwargs.get(n, d) for i, (n, d) in enumerate(zip(names, defaults))]
            _, kernel, stride, padding, dilation, ceil_mode, return_indices = values
            if return_indices:
                raise ValueError("deeplift cannot handle max_pool2d(..., return_indices=True)")
            stride = kernel if stride is None or stride == [] or stride == () else stride
            self.calls += 1
            return _RescaleMaxPool.apply(x, kernel, stride, padding, dilation, ceil_mode, self.eps)
        return func(*args, **kwargs)


def deeplift(
    model: nn.Module,
    images: torch.Tensor,
    classes: torch.Tensor,
    *,
    baseline: float | torch.Tensor | None = None,
    eps: float = EPS,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """DeepLIFT, rescale rule (Shrikumar et al., 2017, "Learning Important Features Through
    Propagating Activation Differences", sec. 3.3 and 3.5.1).

    With ``Δx = x - x'``, every nonlinearity ``y = f(z)`` gets the multiplier
    ``m = (f(z) - f(z')) / (z - z')`` (``f'(z)`` where ``|z - z'| < eps``), max pooling the
    rule of Captum's ``maxpool`` (see :class:`_RescaleMaxPool`), linear layers their weights;
    the chain rule over multipliers gives ``m_x = dC/dx`` and the map is
    ``DL_c(x) = (x - x') * m_x``, which sums to ``y_c(x) - y_c(x')`` (summation-to-delta).
    Identical to Captum ``DeepLift(model).attribute(x, baselines=x', target=c)``
    (``multiply_by_inputs=True``) on nets without reused nonlinearity modules and overlapping
    max pools (Captum keeps one per-module state, and scatters pools without adding).

    Args:
        baseline: ``x'``: ``None`` (zeros), a float, or a tensor broadcastable to the images.
        eps: below ``|z - z'| < eps`` a nonlinearity uses its ordinary derivative.

    Raises:
        ValueError: a leaf layer of a type other than the supported ones (named in the message).

    Returns:
        float32 ``[B, C, H, W]``.
    """
    check_modules(model, LINEAR_MODULES + NONLINEAR_MODULES, "deeplift")
    x = images.detach().float()
    if baseline is None:
        base = torch.zeros_like(x)
    else:
        base = torch.as_tensor(baseline, dtype=torch.float32, device=x.device).expand_as(x)
    if not torch.isfinite(base).all():
        raise ValueError("deeplift baseline must be finite")
    both = fresh_input(torch.cat([x, base]))
    mode = _DeepLiftMode(eps)
    with torch.enable_grad():
        with mode, autocast_context(x.device, autocast_dtype):
            logits = model(both)
        (grad,) = torch.autograd.grad(logits, both, one_hot(logits, classes.repeat(2)))
    return ((x - base) * grad[: x.shape[0]].float()).contiguous()
