"""Excitation backprop and contrastive excitation backprop (c-MWP), Zhang et al., "Top-down Neural
Attention by Excitation Backprop" (ECCV 2016; IJCV 2018), by the modified-gradient trick.

Marginal winning probabilities (MWP) go top-down from a probability 1 at the target logit. For a
layer ``z_i = sum_j w_ji a_j + b_i`` on non-negative inputs ``a_j`` (sec. 3.2, eq. 6-7)::

    P(a_j) = sum_i P(a_j | a_i) P(a_i),   P(a_j | a_i) = a_j w+_ji / Z_i,   Z_i = sum_k a_k w+_ki

with ``w+ = max(w, 0)``; biases take no mass, so the mass that reaches a layer equals the mass
above it minus what falls on units with ``Z_i = 0``. In autograd terms ``P_in = a * W+^T (P_out /
Z)``, which is one backward of ``Z = W+ a`` after dividing the incoming gradient by ``Z`` and
multiplying the outgoing one by ``a``. One forward of the model inside a
:class:`torch.overrides.TorchFunctionMode` computes the real values and, beside them, these
positive-weight nodes; no hook or weight is left on the model and no parameter gets a ``.grad``.

- convolutions and linear layers: the rule above; an eval BatchNorm right after one is folded into
  it first (``W' = W gamma / sqrt(var + eps)``: conv+BN is one affine layer), a BatchNorm elsewhere
  is a per-channel layer with weight ``gamma / sqrt(var + eps)``;
- average pooling (also adaptive): the rule with the pooling's own (positive) weights;
- ReLU and max pooling pass ``P`` unchanged (their gradient: max pooling is winner-take-all);
- anything else that mixes activations (residual additions, products, attention) or bends them
  (sigmoid, tanh, GELU, SiLU, softmax, ...) is refused with a ``ValueError`` naming it, as is any
  leaf module of another type.

Contrastive MWP (sec. 3.3): the target's output weights negated give a dual unit; c-MWP at the
layer is ``max(MWP_c - MWP_dual, 0)``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from explainers.methods.common import autocast_context, check_output, fresh_input, one_hot
from explainers.rules import _RECTIFIERS

MODULES: tuple[type[nn.Module], ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.ReLU, nn.Dropout, nn.Dropout2d,
    nn.Flatten, nn.Identity,
)


def check_modules(model: nn.Module) -> None:
    """Raise ``ValueError`` naming the first leaf module whose type is not in :data:`MODULES`
    (the fast copy's own CAM-layer tap, an identity, is skipped)."""
    for name, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue
        if type(module).__module__.startswith("torch.fx") or type(module).__module__ == "explainers.fast":
            continue
        if not isinstance(module, MODULES):
            raise ValueError(
                f"excitation backprop cannot handle layer {name!r} of type {type(module).__name__}; "
                f"supported leaf layers: {', '.join(sorted({t.__name__ for t in MODULES}))}")


class _TimesInput(torch.autograd.Function):
    """Identity forward; backward ``g * a`` (the ``a_j`` of the excitation rule)."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(a)
        return a.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (a,) = ctx.saved_tensors
        return grad * a


class _Normalise(torch.autograd.Function):
    """Forward: the layer's real output; backward: ``g / Z`` into the positive-weight node
    (0 where ``Z = 0``: no unit below excites it, its mass is dropped)."""

    @staticmethod
    def forward(ctx: Any, z_plus: torch.Tensor, real: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(z_plus)
        return real.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (z_plus,) = ctx.saved_tensors
        positive = z_plus > 0
        return torch.where(positive, grad / torch.where(positive, z_plus, 1.0), 0.0), None


_REFUSED_NAMES = {
    "add", "add_", "__add__", "__iadd__", "__radd__", "sub", "sub_", "__sub__", "__isub__", "__rsub__",
    "mul", "mul_", "__mul__", "__imul__", "__rmul__", "div", "__truediv__", "matmul", "__matmul__", "bmm",
    "einsum", "baddbmm", "addmm", "sigmoid", "tanh", "gelu", "silu", "hardswish", "softmax", "log_softmax",
    "elu", "leaky_relu", "mish", "softplus", "hardsigmoid", "scaled_dot_product_attention", "layer_norm",
    "group_norm", "exp", "pow", "__pow__",
}
_CONV = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3}
_AVG = {F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
        F.adaptive_avg_pool3d, torch._C._nn.adaptive_avg_pool2d, torch._C._nn.adaptive_avg_pool3d}


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


class _ExcitationMode(TorchFunctionMode):
    """Builds the positive-weight nodes beside the real forward (see the module doc)."""

    def __init__(self) -> None:
        super().__init__()
        self.affine: dict[int, tuple] = {}  # id(output) -> (output, a, weight, bias, op, op kwargs)
        self.last: tuple | None = None

    def _node(self, a: torch.Tensor, weight: torch.Tensor, op: Any, extra: dict, real: torch.Tensor
              ) -> torch.Tensor:
        z_plus = op(_TimesInput.apply(a), weight.clamp(min=0), None, **extra)
        out = _Normalise.apply(z_plus, real.detach())
        self.affine[id(out)] = (out, a, weight, op, extra)
        self.last = (out, a, weight, op, extra)
        return out

    def dual(self, logits: torch.Tensor) -> torch.Tensor:
        """The dual unit's node: the top layer with its weights negated (sec. 3.3)."""
        if self.last is None or self.last[0] is not logits:
            raise ValueError("contrastive_excitation_backprop needs logits that are the output of a "
                             "linear (or convolution) layer, whose weights it negates")
        out, a, weight, op, extra = self.last
        z_plus = op(_TimesInput.apply(a), (-weight).clamp(min=0), None, **extra)
        return _Normalise.apply(z_plus, out.detach())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in list(args) + list(kwargs.values()) if isinstance(t, torch.Tensor)]
        if not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)):
            return func(*args, **kwargs)
        x = args[0] if args else kwargs.get("input")
        name = getattr(func, "__name__", str(func))
        if func in _CONV or func is F.linear:
            weight, bias = _arg(args, kwargs, 1, "weight"), _arg(args, kwargs, 2, "bias")
            if func is F.linear:
                extra: dict = {}
                op = F.linear
            else:
                keys = ("stride", "padding", "dilation", "groups")
                defaults = (1, 0, 1, 1)
                extra = {k: _arg(args, kwargs, 3 + i, k, d) for i, (k, d) in enumerate(zip(keys, defaults))}
                op = func
            with torch.no_grad():
                real = func(x.detach(), weight, bias, **extra)
            return self._node(x, weight.detach(), op, extra, real)
        if func is F.batch_norm:
            mean, var = _arg(args, kwargs, 1, "running_mean"), _arg(args, kwargs, 2, "running_var")
            gamma, beta = _arg(args, kwargs, 3, "weight"), _arg(args, kwargs, 4, "bias")
            if mean is None or var is None or _arg(args, kwargs, 5, "training", False):
                raise ValueError("excitation backprop needs BatchNorm with running statistics in eval mode")
            eps = _arg(args, kwargs, 7, "eps", 1e-5)
            scale = (var + eps).rsqrt() * (gamma if gamma is not None else 1.0)
            with torch.no_grad():
                real = func(x.detach(), mean, var, gamma, beta, False, 0.0, eps)
            entry = self.affine.get(id(x))
            if entry is not None and entry[0] is x:  # conv/linear then BatchNorm: one affine layer
                _, a, weight, op, extra = entry
                folded = weight * scale.detach().view(-1, *([1] * (weight.dim() - 1)))
                return self._node(a, folded, op, extra, real)
            shape = (1, -1) + (1,) * (x.dim() - 2)

            def diagonal(a, w, _bias, **_):
                return a * w.view(shape)

            return self._node(x, scale.detach(), diagonal, {}, real)
        if func in _AVG:
            with torch.no_grad():
                real = func(*[a.detach() if isinstance(a, torch.Tensor) else a for a in args], **kwargs)
            z_plus = func(_TimesInput.apply(x), *args[1:], **kwargs)
            return _Normalise.apply(z_plus, real)
        if func in _RECTIFIERS:
            spec = _RECTIFIERS[func](args, kwargs)
            if spec is None or spec[0] != 0.0 or spec[1] != float("inf"):
                raise ValueError(f"excitation backprop cannot propagate through {name} with these bounds "
                                 "(ReLU only)")
            return func(*args, **kwargs)
        if name in _REFUSED_NAMES or name.strip("_") in _REFUSED_NAMES:
            raise ValueError(
                f"excitation backprop cannot propagate through {name} (e.g. a residual addition or a smooth "
                "activation; only convolutions, linear layers, "
                "BatchNorm, average/max pooling, ReLU and reshapes/concatenations)")
        return func(*args, **kwargs)


def excitation_maps(
    model: nn.Module,
    images: torch.Tensor,
    classes: torch.Tensor,
    hooked: nn.Module | None,
    *,
    contrastive: bool = False,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """MWP (or c-MWP) summed over channels at ``hooked``'s output (``None``: at the input),
    ``[B, h, w]`` float32, before any upsampling: the MWP map sums to 1 per image when no mass
    falls on a unit with ``Z_i = 0``.

    Raises:
        ValueError: a leaf module or an operation the rule does not cover (named), a layer output
            (or input) with negative values (MWPs need non-negative activations).
    """
    check_modules(model)
    mode = _ExcitationMode()
    captured: dict[str, torch.Tensor] = {}
    handle = None
    if hooked is None:
        if bool((images < 0).any()):
            raise ValueError("excitation backprop to the input needs non-negative inputs (probabilities "
                             "are a_j w+_ji / Z_i); these images have negative values: use the CAM layer")
        leaf = fresh_input(images)
        start = leaf
    else:
        def cut(module: nn.Module, inputs: Any, output: Any) -> torch.Tensor:
            if not isinstance(output, torch.Tensor):
                raise ValueError("excitation backprop needs a layer whose output is one tensor")
            captured["leaf"] = output.detach().float().requires_grad_(True)
            return captured["leaf"].to(output.dtype)

        handle = hooked.register_forward_hook(cut)
        start = images.detach()
    try:
        with torch.enable_grad(), mode, autocast_context(images.device, autocast_dtype):
            logits = model(start)
    finally:
        if handle is not None:
            handle.remove()
    if hooked is not None:
        if "leaf" not in captured:
            raise RuntimeError("the excitation layer was not called during the forward pass")
        leaf = captured["leaf"]
        if bool((leaf < 0).any()):
            raise ValueError("excitation backprop needs a non-negative layer output (after a ReLU); "
                             "the chosen layer has negative values")
    check_output(logits, images.shape[0], classes)
    if not logits.requires_grad:
        raise ValueError("the model's output does not depend on the excitation layer")
    vector = one_hot(logits, classes)
    with torch.enable_grad():
        tops = [logits] + ([mode.dual(logits)] if contrastive else [])
        grads = [torch.autograd.grad(top, leaf, vector, retain_graph=i + 1 < len(tops))[0]
                 for i, top in enumerate(tops)]
    mwp = grads[0].float().sum(dim=1)
    if contrastive:
        mwp = (mwp - grads[1].float().sum(dim=1)).clamp(min=0)
    return mwp


def _where(to: str, hooked: nn.Module | None) -> nn.Module | None:
    if to not in ("layer", "input"):
        raise ValueError(f"excitation backprop 'to' must be 'layer' or 'input', got {to!r}")
    return hooked if to == "layer" else None


def excitation_backprop(model: nn.Module, images: torch.Tensor, classes: torch.Tensor, hooked: nn.Module | None,
                        *, to: str = "layer", autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """MWP map (Zhang et al., 2016, eq. 6-7): ``sum_channels P(a)`` at the CAM layer (``to="layer"``)
    or at the input (``to="input"``, non-negative images only), ``[B, h, w]``."""
    return excitation_maps(model, images, classes, _where(to, hooked), contrastive=False,
                           autocast_dtype=autocast_dtype)


def contrastive_excitation_backprop(model: nn.Module, images: torch.Tensor, classes: torch.Tensor,
                                    hooked: nn.Module | None, *, to: str = "layer",
                                    autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """c-MWP map (Zhang et al., 2016, sec. 3.3): ``max(sum_ch P_c(a) - sum_ch P_dual(a), 0)``."""
    return excitation_maps(model, images, classes, _where(to, hooked), contrastive=True,
                           autocast_dtype=autocast_dtype)

