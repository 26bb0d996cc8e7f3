"""Backward rules for rectifiers (plain, guided, deconvnet) that share one forward graph.

Mechanism (chosen over module hooks, which miss functional calls):

* While the model runs its forward inside :func:`rectifier_rules`, a
  :class:`torch.overrides.TorchFunctionMode` intercepts every rectifier call,
  whatever its spelling: ``nn.ReLU`` / ``nn.ReLU6`` modules (their ``forward`` calls
  ``F.relu`` / ``F.hardtanh``), ``F.relu``, ``F.relu_``, ``F.relu6``, ``torch.relu``,
  ``torch.relu_``, ``Tensor.relu``, ``Tensor.relu_``, ``F.hardtanh`` with
  ``min_val == 0`` (a capped ReLU such as ReLU6), and ``clamp`` / ``clip`` / ``clamp_min``
  (function, method or in place) with a lower bound of exactly 0 and no upper bound or a
  positive one. In-place calls stay in place, so reused in-place modules (torchvision
  ResNet, EfficientNet-Lite) behave exactly as without the mode; the model is never edited.
* Each intercepted call runs :class:`_RuledRectifier`, an autograd function that
  saves its *output* (as PyTorch's own ``relu`` does; a ``clamp`` spelling saves its
  input's closed-interval mask, as ``clamp``'s own backward uses) and whose backward reads the
  mutable :class:`RuleState` **at backward time**. One forward graph can therefore
  serve a plain backward, then a guided one, then a deconvnet one
  (``retain_graph=True``) -- the Zennit "active flag" idea, applied to every
  rectifier rather than only to hooked modules.
* As a guard, forward hooks on ``nn.ReLU``/``nn.ReLU6``/``nn.Hardtanh`` modules
  check that each module output really went through the ruled function and raise
  otherwise (e.g. a subclass calling ``torch.ops.aten.relu`` directly). All hooks
  and the mode are removed in ``finally`` blocks, also when the forward raises.

Rules, with ``g`` the gradient arriving at the rectifier output ``y`` and
``m = 1[lo < y < hi]`` its forward derivative (``hi = inf`` for ReLU):

* plain:     ``g * m``                      (ordinary backpropagation)
* guided:    ``max(g, 0) * m``              (Springenberg et al., 2015, "Striving for
  simplicity: the all convolutional net"; identical to Captum ``GuidedBackprop``)
* deconvnet: ``max(g, 0)``                  (Zeiler & Fergus, 2014, "Visualizing and
  understanding convolutional networks"; identical to Captum ``Deconvolution``).
  For a capped rectifier (ReLU6) the deconvnet rule is also ``max(g, 0)``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

Rule = Literal["plain", "guided", "deconvnet"]
RULES: tuple[Rule, ...] = ("plain", "guided", "deconvnet")


class RuleState:
    """Mutable holder of the rule applied by every ruled rectifier on the next backward."""

    def __init__(self, rule: Rule = "plain") -> None:
        self.rule: Rule = rule
        self.calls = 0  # rectifier calls intercepted during the forward
        self.other_activations: list[str] = []  # non-ReLU activations seen (GELU, SiLU, ...)

    def set(self, rule: Rule) -> None:
        if rule not in RULES:
            raise ValueError(f"unknown backward rule {rule!r}; expected one of {RULES}")
        self.rule = rule


class _RuledRectifier(torch.autograd.Function):
    """y = clamp(x, lo, hi) with a backward chosen by ``state.rule`` at backward time.

    ``closed`` marks a ``clamp``/``clip`` spelling, whose PyTorch derivative is
    ``1[lo <= x <= hi]`` (closed interval) instead of ReLU's / hardtanh's open one; the mask is
    then saved from the input, so a plain backward stays bit-identical to autograd's.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, lo: float, hi: float, inplace: bool, state: RuleState, closed: bool
    ) -> torch.Tensor:
        if closed:
            mask = (x >= lo) & (x <= hi)
            cap = None if math.isinf(hi) else hi
            y = x.clamp_(lo, cap) if inplace else x.clamp(lo, cap)
            ctx.save_for_backward(mask)
        else:
            if math.isinf(hi):
                y = x.relu_() if inplace else torch.relu(x)
            else:
                y = F.hardtanh(x, lo, hi, inplace=inplace)
            ctx.save_for_backward(y)
        if inplace:
            ctx.mark_dirty(x)
        ctx.lo, ctx.hi, ctx.state, ctx.closed = lo, hi, state, closed
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (saved,) = ctx.saved_tensors
        rule = ctx.state.rule
        nothing = (None,) * 5
        if rule == "deconvnet":
            return grad.clamp(min=0), *nothing
        if ctx.closed:
            grad_in = torch.where(saved, grad, torch.zeros((), dtype=grad.dtype, device=grad.device))
        elif math.isinf(ctx.hi):
            grad_in = torch.ops.aten.threshold_backward(grad, saved, 0)
        else:  # y in (lo, hi) iff x in (lo, hi): same mask as hardtanh_backward(x)
            grad_in = torch.ops.aten.hardtanh_backward(grad, saved, ctx.lo, ctx.hi)
        if rule == "guided":  # max(g, 0) * m == max(g * m, 0), in place on our own buffer
            grad_in.clamp_(min=0)
        return grad_in, *nothing


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


# func -> (lo, hi, inplace, closed) parser; hardtanh and clamp entries return None when the
# call is not a rectifier (a lower bound other than 0, or a tensor bound).
Spec = tuple[float, float, bool, bool]


def _relu(inplace: bool) -> Callable[[tuple, dict], Spec]:
    return lambda a, k: (0.0, math.inf, inplace, False)


def _relu_maybe_inplace(a: tuple, k: dict) -> Spec:
    return 0.0, math.inf, bool(_arg(a, k, 1, "inplace", False)), False


def _relu6(a: tuple, k: dict) -> Spec:
    return 0.0, 6.0, bool(_arg(a, k, 1, "inplace", False)), False


def _hardtanh(inplace: bool | None) -> Callable[[tuple, dict], Spec | None]:
    def parse(a: tuple, k: dict) -> Spec | None:
        lo = float(_arg(a, k, 1, "min_val", -1.0))
        hi = float(_arg(a, k, 2, "max_val", 1.0))
        ip = bool(_arg(a, k, 3, "inplace", False)) if inplace is None else inplace
        return (lo, hi, ip, False) if lo == 0.0 and hi > 0.0 else None

    return parse


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _clamp(inplace: bool, *, has_max: bool = True) -> Callable[[tuple, dict], Spec | None]:
    """``clamp(x, min=0[, max=hi > 0])`` / ``clamp_min(x, 0)`` / ``clip``: a rectifier."""

    def parse(a: tuple, k: dict) -> Spec | None:
        lo = _arg(a, k, 1, "min", None)
        hi = _arg(a, k, 2, "max", None) if has_max else None
        if not (_number(lo) and lo == 0) or not (hi is None or (_number(hi) and hi > 0)):
            return None
        return 0.0, math.inf if hi is None else float(hi), inplace, True

    return parse


_RECTIFIERS: dict[Callable, Callable[[tuple, dict], Spec | None]] = {
    torch.relu: _relu(False),
    torch.relu_: _relu(True),
    torch.Tensor.relu: _relu(False),
    torch.Tensor.relu_: _relu(True),
    F.relu: _relu_maybe_inplace,
    F.relu_: _relu(True),
    F.relu6: _relu6,
    F.hardtanh: _hardtanh(None),
    F.hardtanh_: _hardtanh(True),
    torch._C._nn.relu6: _relu6,
    torch._C._nn.hardtanh: _hardtanh(False),
    torch._C._nn.hardtanh_: _hardtanh(True),
    torch.clamp: _clamp(False),
    torch.clamp_: _clamp(True),
    torch.clip: _clamp(False),
    torch.clip_: _clamp(True),
    torch.Tensor.clamp: _clamp(False),
    torch.Tensor.clamp_: _clamp(True),
    torch.Tensor.clip: _clamp(False),
    torch.Tensor.clip_: _clamp(True),
    torch.clamp_min: _clamp(False, has_max=False),
    torch.clamp_min_: _clamp(True, has_max=False),
    torch.Tensor.clamp_min: _clamp(False, has_max=False),
    torch.Tensor.clamp_min_: _clamp(True, has_max=False),
}


# Activations that take a rectifier's place but have no guided/deconvnet rule here: a forward
# that calls one of them is refused by the guided/deconvnet methods (docs/explainers.md,
# "Rules on activations other than ReLU"). Gates (sigmoid, hardsigmoid, tanh) are not listed.
OTHER_ACTIVATIONS: frozenset[str] = frozenset({
    "gelu", "silu", "silu_", "hardswish", "hardswish_", "elu", "elu_", "selu", "selu_", "celu",
    "celu_", "leaky_relu", "leaky_relu_", "prelu", "rrelu", "rrelu_", "mish", "mish_", "softplus",
    "glu", "logsigmoid",
})


class _RectifierMode(TorchFunctionMode):
    """Routes every rectifier call through :class:`_RuledRectifier`."""

    def __init__(self, state: RuleState) -> None:
        super().__init__()
        self.state = state

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        parse = _RECTIFIERS.get(func)
        if parse is not None:
            x = args[0] if args else kwargs.get("input", kwargs.get("self"))
            spec = parse(args, kwargs)
            if (
                spec is not None
                and isinstance(x, torch.Tensor)
                and torch.is_grad_enabled()
                and x.requires_grad
            ):
                self.state.calls += 1
                lo, hi, inplace, closed = spec
                return _RuledRectifier.apply(x, lo, hi, inplace, self.state, closed)
        else:
            name = getattr(func, "__name__", "")
            if name in OTHER_ACTIVATIONS and torch.is_grad_enabled() and any(
                isinstance(a, torch.Tensor) and a.requires_grad for a in args[:1]
            ) and name.rstrip("_") not in self.state.other_activations:
                self.state.other_activations.append(name.rstrip("_"))
        return func(*args, **kwargs)


def is_rectifier_module(module: nn.Module) -> bool:
    """``nn.ReLU`` (or a subclass), or an ``nn.Hardtanh`` with ``min_val == 0`` (ReLU6)."""
    if isinstance(module, nn.ReLU):
        return True
    return isinstance(module, nn.Hardtanh) and module.min_val == 0.0 and module.max_val > 0.0


def _check_ruled(name: str, state: RuleState, before: list[int]) -> Callable[[nn.Module, Any, Any], None]:
    """Forward hook: the module's call must have gone through :class:`_RuledRectifier`.

    Checked by the interception counter (``state.calls`` grew during the call, recorded by
    the pre-hook in ``before``), not by the output's ``grad_fn``: an in-place rectifier on a view
    (``relu_(fc(x).view(...))``) is ruled, yet its output's ``grad_fn`` is the view's rebased one.
    """

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        start = before.pop() if before else None
        if not (isinstance(output, torch.Tensor) and output.requires_grad):
            return
        if start is None or state.calls <= start:
            raise RuntimeError(
                f"rectifier module {name!r} ({type(module).__name__}) escaped the backward "
                "rule (its forward does not call torch.relu/F.relu/F.hardtanh); guided/"
                "deconvnet maps would silently be plain gradients"
            )

    return hook


@contextlib.contextmanager
def rectifier_rules(model: nn.Module, state: RuleState) -> Iterator[RuleState]:
    """Context manager: run the model's forward inside it to make its rectifiers ruled.

    Args:
        model: the network; only used to install temporary guard hooks on its
            rectifier modules. The model is not edited.
        state: the rule holder; change ``state.rule`` between backward passes.

    Yields:
        ``state`` (``state.calls`` counts intercepted rectifier calls).
    """
    handles = []
    try:
        for name, module in model.named_modules():
            if is_rectifier_module(module):
                before: list[int] = []
                handles.append(module.register_forward_pre_hook(
                    lambda _m, _i, before=before: before.append(state.calls), prepend=True))
                handles.append(module.register_forward_hook(_check_ruled(name, state, before), prepend=True))
        with _RectifierMode(state):
            yield state
    finally:
        for handle in handles:
            handle.remove()
