"""Layer-wise relevance propagation (Bach et al., 2015) with Zennit's two standard composites.

The model is read as a chain of its layers: a ``torch.fx`` trace (the engine's fast copy already is
one) in which every node takes the previous node's output and nothing else reads it. That covers
``nn.Sequential`` models (nested too), torchvision VGG / AlexNet (``features -> avgpool -> flatten
-> classifier``) and any module whose forward calls its layers one after another. A node that joins
or splits branches (ResNet's residual ``add``, a concatenation, a layer whose output is read twice)
or a layer without a rule is refused with a ``ValueError`` naming it: never a silently wrong map.

One forward keeps every layer's input; then relevance is propagated layer by layer, from
``R = e_c`` (the one-hot target, as Zennit's ``Gradient`` attributor with a one-hot output), each
rule computed explicitly with the layer's own function on detached tensors (modified forwards and
their vector-Jacobian products, as Zennit's ``BasicHook``). No hook is registered, no parameter is
modified or receives ``.grad``, and the model's flags are not touched.

Rules (Zennit 0.5.1 ``composites.py``, ``rules.py``; ``stab(z) = z + e * sign(z)``, ``sign(0) = 1``):

============================  =================================  ==================================
layer                          ``lrp_epsilon_plus``               ``lrp_epsilon_gamma_box``
============================  =================================  ==================================
first convolution (chain)      z+ (as every convolution)          ZBox with ``low``, ``high``
other convolutions             z+ : ``x+ W+^T s + x- W-^T s``,    Gamma (generalised, ``gamma``)
                               ``s = R / stab(W+ x+ + b+ + W- x-)``
linear                         epsilon: ``x W^T (R / stab_eps(z))``   epsilon
avg / adaptive-avg pooling     Norm: ``x * P^T (R / stab(P x))``  Norm
activations, unmerged BN       pass (``R`` unchanged)             pass
max pooling, flatten, dropout  gradient (to the argmax / reshape) gradient
============================  =================================  ==================================

BatchNorm canonized like Zennit's ``SequentialMergeBatchNorm``: a BatchNorm directly after a
convolution or linear layer is folded into it (``W' = W s``, ``b' = (b - mu) s + beta``,
``s = gamma / (var + eps) ** 0.5``); any other BatchNorm passes relevance through.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from explainers.methods.common import autocast_context, check_output, one_hot

STABILIZER = 1e-6  # Zennit's ``stabilizer`` default for every rule other than Epsilon
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_AVGPOOL = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
            nn.AdaptiveAvgPool3d)
_GRADIENT = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
             nn.AdaptiveMaxPool3d, nn.Flatten, nn.Unflatten, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
             nn.Dropout3d, nn.AlphaDropout, nn.Identity)
# Zennit's ``types.Activation`` (its composites give them the Pass rule), minus MultiheadAttention
_ACTIVATION = (nn.ELU, nn.Hardshrink, nn.Hardsigmoid, nn.Hardtanh, nn.Hardswish, nn.LeakyReLU,
               nn.LogSigmoid, nn.PReLU, nn.ReLU, nn.ReLU6, nn.RReLU, nn.SELU, nn.CELU, nn.GELU,
               nn.Sigmoid, nn.SiLU, nn.Softplus, nn.Softshrink, nn.Softsign, nn.Tanh, nn.Tanhshrink,
               nn.Threshold)
_FLATTEN_FUNCTIONS = {torch.flatten}
_FLATTEN_METHODS = {"flatten"}
SUPPORTED = ("Conv1d/2d/3d, Linear, BatchNorm (folded after a convolution/linear layer, else pass), "
             "avg/adaptive-avg pooling, max pooling, Flatten/torch.flatten, Dropout, Identity and "
             "elementwise activations")


def stabilize(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Zennit's ``stabilize``: ``z + epsilon * sign(z)`` with ``sign(0) = +1``."""
    return z + ((z == 0.0).to(z) + z.sign()) * epsilon


@dataclass
class _Step:
    """One layer of the chain: ``kind`` names its rule; ``fn(x, weight, bias)`` its forward."""

    name: str
    kind: str  # "conv", "linear", "norm", "pass", "gradient"
    fn: Callable[..., torch.Tensor]
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    module: nn.Module | None = None
    folded: bool = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind in ("conv", "linear"):
            return self.fn(x, self.weight, self.bias)
        return self.fn(x)


def _graph(model: nn.Module) -> tuple[nn.Module, fx.Graph, str]:
    """The root module, its fx graph and a display name (the engine's fast copy is traced)."""
    from explainers.fast import FastModel

    name = type(model).__name__
    if isinstance(model, FastModel):
        root = model.net
        if model.traced and isinstance(root, fx.GraphModule):
            return root, root.graph, type(root).__name__.removesuffix("Fast")
        model = root
        name = type(model).__name__
    if isinstance(model, fx.GraphModule):
        return model, model.graph, name
    try:
        graph = fx.Tracer().trace(model)
    except Exception as error:
        raise ValueError(f"lrp cannot read {name} as a chain of layers: torch.fx could not trace it "
                         f"({type(error).__name__}: {error})") from None
    return model, graph, name


def _nodes_chain(model: nn.Module, method: str) -> tuple[nn.Module, list[fx.Node]]:
    """The graph's nodes from input to output, checked to form one unbranched chain."""
    root, graph, name = _graph(model)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ValueError(f"{method} needs a model with one input; {name} takes {len(placeholders)}")
    chain: list[fx.Node] = []
    previous = placeholders[0]
    for node in graph.nodes:
        if node.op == "placeholder":
            continue
        inputs = list(node.all_input_nodes)
        if node.op == "output":
            if inputs != [previous]:
                raise ValueError(f"{method} cannot propagate through {name}: its output is not the "
                                 "last layer's output")
            break
        where = f"{node.target}" if node.op == "call_module" else f"{node.op} {getattr(node.target, '__name__', node.target)}"
        if node.op == "get_attr" or inputs != [previous]:
            raise ValueError(
                f"{method} cannot propagate through {name}: {where!r} (node {node.name}) reads "
                f"{', '.join(a.name for a in inputs) or 'a model attribute'} instead of only the previous "
                "layer's output (a residual / branching block, e.g. ResNet's add); only chains of layers "
                "(nn.Sequential, torchvision VGG/AlexNet) are supported"
            )
        if len(previous.users) != 1:
            users = ", ".join(str(u.target) for u in previous.users)
            raise ValueError(
                f"{method} cannot propagate through {name}: the output of {previous.name!r} feeds "
                f"{len(previous.users)} layers ({users}), a residual / branching block (e.g. ResNet); "
                "only chains of layers (nn.Sequential, torchvision VGG/AlexNet) are supported"
            )
        chain.append(node)
        previous = node
    return root, chain


def _fold(weight: torch.Tensor, bias: torch.Tensor | None, norm: nn.Module, transposed: bool = False
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Zennit's ``MergeBatchNorm.merge_batch_norm`` on detached copies."""
    denominator = (norm.running_var + norm.eps) ** 0.5
    gamma = norm.weight.detach() if norm.weight is not None else torch.ones_like(denominator)
    beta = norm.bias.detach() if norm.bias is not None else torch.zeros_like(denominator)
    scale = gamma / denominator
    index = (slice(None), *((None,) * (weight.ndim - 1)))
    if bias is None:
        bias = torch.zeros(1, dtype=weight.dtype, device=weight.device)
    return weight * scale[index], (bias - norm.running_mean) * scale + beta


def _identity_norm(norm: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    eps = float(norm.eps)

    def forward(x: torch.Tensor) -> torch.Tensor:
        shape = x.shape[1]
        zeros, ones = x.new_zeros(shape), x.new_ones(shape)
        return F.batch_norm(x, zeros, ones, ones, zeros, False, 0.0, eps)

    return forward


def build_steps(model: nn.Module, method: str) -> list[_Step]:
    """The chain of ``model`` as rule-tagged steps, BatchNorm folded; ``ValueError`` otherwise."""
    root, nodes = _nodes_chain(model, method)
    modules = dict(root.named_modules())
    # the fast copy's folded convolutions: refold from the model's own tensors as Zennit does
    folds = {id(fold.folded_weight): fold for fold in getattr(model, "folds", [])}
    steps: list[_Step] = []
    for node in nodes:
        if node.op == "call_module":
            module = modules[str(node.target)]
            label = str(node.target)
            if node.kwargs or len(node.args) != 1:
                raise ValueError(f"{method} cannot handle the call of layer {label!r} with extra arguments")
            if getattr(module, "training", False) and isinstance(module, _BATCHNORM + _GRADIENT):
                raise ValueError(f"{method} needs the model in eval mode; layer {label!r} is training")
            if isinstance(module, _CONV) and id(module.weight) in folds:
                fold = folds[id(module.weight)]
                weight, bias = _fold(fold.weight.detach(), None if fold.bias is None else fold.bias.detach(),
                                     fold.norm)
                steps.append(_Step(label, "conv", module._conv_forward, weight, bias, module, folded=True))
                steps.append(_Step(label + ".bn", "pass", _identity_norm(fold.norm)))
            elif isinstance(module, _CONV):
                steps.append(_Step(label, "conv", module._conv_forward, module.weight.detach(),
                                   None if module.bias is None else module.bias.detach(), module))
            elif isinstance(module, nn.Linear):
                steps.append(_Step(label, "linear", F.linear, module.weight.detach(),
                                   None if module.bias is None else module.bias.detach(), module))
            elif isinstance(module, _BATCHNORM):
                last = steps[-1] if steps else None
                if last is not None and last.kind in ("conv", "linear") and not last.folded:
                    if module.running_mean is None or module.running_var is None:
                        raise ValueError(f"{method} cannot fold BatchNorm {label!r} without running statistics")
                    last.weight, last.bias = _fold(last.weight, last.bias, module)
                    last.name, last.folded = f"{last.name}+{label}", True
                    # what the canonized BatchNorm still computes in Zennit: mean 0, variance 1,
                    # weight 1, bias 0, i.e. ``y / sqrt(1 + eps)`` (pass rule)
                    steps.append(_Step(label, "pass", _identity_norm(module)))
                else:
                    steps.append(_Step(label, "pass", module, module=module))
            elif isinstance(module, _AVGPOOL):
                steps.append(_Step(label, "norm", module, module=module))
            elif isinstance(module, _ACTIVATION):
                steps.append(_Step(label, "pass", module, module=module))
            elif isinstance(module, _GRADIENT):
                steps.append(_Step(label, "gradient", module, module=module))
            else:
                raise ValueError(f"{method} cannot handle layer {label!r} of type {type(module).__name__}; "
                                 f"supported leaf layers: {SUPPORTED}")
        elif (node.op == "call_function" and node.target in _FLATTEN_FUNCTIONS) or (
                node.op == "call_method" and node.target in _FLATTEN_METHODS):
            args = node.args[1:]
            kwargs = dict(node.kwargs)
            steps.append(_Step(node.name, "gradient", lambda x, a=args, k=kwargs: torch.flatten(x, *a, **k)))
        else:
            target = getattr(node.target, "__name__", node.target)
            raise ValueError(f"{method} cannot handle the operation {target!r} (node {node.name}); "
                             f"supported: {SUPPORTED}")
    return steps


def _vjp(fn: Callable[[torch.Tensor], torch.Tensor | tuple[torch.Tensor, ...]], x: torch.Tensor,
         grad: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """``J_fn(x)^T grad`` by autograd on a detached copy of ``x`` (no parameter takes part)."""
    with torch.enable_grad():
        xi = x.detach().requires_grad_(True)
        out = fn(xi)
        outs = out if isinstance(out, tuple) else (out,)
        grads = grad if isinstance(grad, tuple) else (grad,)
        (result,) = torch.autograd.grad(outs, xi, grads)
    return result


def _zplus(step: _Step, x: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    w = step.weight
    wp, wn = w.clamp(min=0.0), w.clamp(max=0.0)
    bp = None if step.bias is None else step.bias.clamp(min=0.0)
    xp, xn = x.clamp(min=0.0), x.clamp(max=0.0)
    with torch.enable_grad():
        ip, in_ = xp.requires_grad_(True), xn.requires_grad_(True)
        op, on = step.fn(ip, wp, bp), step.fn(in_, wn, None)
        s = relevance / stabilize(op + on, STABILIZER)
        gp, gn = torch.autograd.grad((op, on), (ip, in_), (s, s))
    return xp.detach() * gp + xn.detach() * gn


def _gamma(step: _Step, x: torch.Tensor, output: torch.Tensor, relevance: torch.Tensor, gamma: float
           ) -> torch.Tensor:
    """Zennit's generalised Gamma: positive outputs take ``W + gamma W+`` on ``x+`` and
    ``W + gamma W-`` on ``x-``, negative outputs the other two pairings."""
    w, b = step.weight, step.bias
    w_up, w_down = w + gamma * w.clamp(min=0.0), w + gamma * w.clamp(max=0.0)
    rows = x.shape[0]
    both = torch.cat([x.clamp(min=0.0), x.clamp(max=0.0)])
    with torch.enable_grad():
        inp = both.requires_grad_(True)
        out_up, out_down = step.fn(inp, w_up, None), step.fn(inp, w_down, None)
        o0, o3 = out_up[:rows], out_up[rows:]
        o2, o1 = out_down[:rows], out_down[rows:]
        if b is not None:
            shape = (1, -1) + (1,) * (o0.dim() - 2)
            o0 = o0 + (b + gamma * b.clamp(min=0.0)).view(shape)
            o2 = o2 + (b + gamma * b.clamp(max=0.0)).view(shape)
        g_pos = (output > 0.0).to(relevance) * relevance / stabilize(o0 + o1, STABILIZER)
        g_neg = (output < 0.0).to(relevance) * relevance / stabilize(o2 + o3, STABILIZER)
        (grad,) = torch.autograd.grad((out_up, out_down), inp,
                                      (torch.cat([g_pos, g_neg]), torch.cat([g_neg, g_pos])))
    return both[:rows].detach() * grad[:rows] + both[rows:].detach() * grad[rows:]


def _zbox(step: _Step, x: torch.Tensor, relevance: torch.Tensor, low: torch.Tensor, high: torch.Tensor
          ) -> torch.Tensor:
    w, b = step.weight, step.bias
    wp, wn = w.clamp(min=0.0), w.clamp(max=0.0)
    bp = None if b is None else b.clamp(min=0.0)
    bn = None if b is None else b.clamp(max=0.0)
    lo, hi = low.expand_as(x).to(x), high.expand_as(x).to(x)
    with torch.enable_grad():
        xi, li, hi_ = x.detach().requires_grad_(True), lo.clone().requires_grad_(True), hi.clone().requires_grad_(True)
        o0, o1, o2 = step.fn(xi, w, b), step.fn(li, wp, bp), step.fn(hi_, wn, bn)
        s = relevance / stabilize(o0 - (o1 + o2), STABILIZER)
        g0, g1, g2 = torch.autograd.grad((o0, o1, o2), (xi, li, hi_), (s, s, s))
    return x * g0 - (lo * g1 + hi * g2)


def _bounds(value: float | torch.Tensor | None, images: torch.Tensor, which: str) -> torch.Tensor:
    if value is None:
        if images.shape[1] != 3:
            raise ValueError(f"lrp_epsilon_gamma_box needs the option {which!r} for {images.shape[1]}-channel "
                             "images (the default is the ImageNet-normalised bound of [0, 1] pixels)")
        pixel = 0.0 if which == "low" else 1.0
        value = torch.tensor([(pixel - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]).view(1, 3, 1, 1)
    tensor = torch.as_tensor(value, dtype=torch.float32, device=images.device)
    try:
        tensor = torch.broadcast_to(tensor, (1, *images.shape[1:])) if tensor.dim() < 4 or tensor.shape[0] == 1 \
            else torch.broadcast_to(tensor, images.shape)
    except RuntimeError:
        raise ValueError(f"lrp_epsilon_gamma_box option {which!r} of shape {tuple(tensor.shape)} does not "
                         f"broadcast to the images {tuple(images.shape)}") from None
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"lrp_epsilon_gamma_box option {which!r} must be finite")
    return tensor


def _propagate(model: nn.Module, images: torch.Tensor, classes: torch.Tensor, method: str, *,
               epsilon: float, first: Callable[..., torch.Tensor] | None,
               conv_rule: Callable[..., torch.Tensor], autocast_dtype: torch.dtype | None) -> torch.Tensor:
    steps = build_steps(model, method)
    x = images.detach()
    inputs: list[torch.Tensor] = []
    with torch.no_grad(), autocast_context(x.device, autocast_dtype):
        for step in steps:
            inputs.append(x)
            x = step(x)
    logits = check_output(x, images.shape[0], classes)
    relevance = one_hot(logits.float(), classes)
    first_conv = next((i for i, s in enumerate(steps) if s.kind == "conv"), None)
    for index in range(len(steps) - 1, -1, -1):
        step, x_in = steps[index], inputs[index].float()
        output = inputs[index + 1] if index + 1 < len(steps) else logits
        if step.kind == "pass":
            continue
        if step.kind == "gradient":
            relevance = _vjp(step, x_in, relevance)
        elif step.kind == "norm":
            s = relevance / stabilize(output.float(), STABILIZER)
            relevance = x_in * _vjp(step, x_in, s)
        elif step.kind == "linear":
            s = relevance / stabilize(output.float(), epsilon)
            relevance = x_in * (s @ step.weight.to(s))
        elif index == first_conv and first is not None:
            relevance = first(step, x_in, relevance)
        else:
            relevance = conv_rule(step, x_in, output.float(), relevance)
    return relevance.float().contiguous()


def _check(epsilon: float, gamma: float = 0.0) -> None:
    if not (isinstance(epsilon, int | float) and epsilon > 0 and epsilon == epsilon):
        raise ValueError(f"lrp option epsilon must be a positive number, got {epsilon!r}")
    if not (isinstance(gamma, int | float) and gamma >= 0 and gamma != float("inf")):
        raise ValueError(f"lrp option gamma must be a finite number >= 0, got {gamma!r}")


def lrp_epsilon_plus(
    model: nn.Module,
    images: torch.Tensor,
    classes: torch.Tensor,
    *,
    epsilon: float = 1e-6,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """LRP, Zennit's ``EpsilonPlus`` composite (Bach et al., 2015; Montavon et al., 2019, "Layer-wise
    relevance propagation: an overview").

    From ``R = e_c`` at the logits, every convolution uses z+ (``alpha=1, beta=0``):
    ``R_x = x+ * W+^T s + x- * W-^T s`` with ``s = R / stab(W+ x+ + b+ + W- x-)``; every linear
    layer epsilon: ``R_x = x * W^T (R / (z + epsilon sign z))``; average pooling Norm (epsilon with
    ``1e-6`` and no weights); activations and unmerged BatchNorms pass ``R`` unchanged; max pooling,
    flatten and dropout use their gradient. BatchNorm after a convolution / linear layer is folded
    into it first (Zennit's ``SequentialMergeBatchNorm``). The map sums to about ``1`` on bias-free
    nets (conservation; biases and the stabiliser absorb the rest).

    Raises:
        ValueError: the model is not a chain of layers (residual / branching blocks: ResNet,
            DenseNet, Inception) or has a layer without a rule; the message names it.

    Returns:
        float32 ``[B, C, H, W]``.
    """
    _check(epsilon)
    return _propagate(model, images, classes, "lrp_epsilon_plus", epsilon=epsilon, first=None,
                      conv_rule=lambda step, x, out, r: _zplus(step, x, r), autocast_dtype=autocast_dtype)


def lrp_epsilon_gamma_box(
    model: nn.Module,
    images: torch.Tensor,
    classes: torch.Tensor,
    *,
    low: float | torch.Tensor | None = None,
    high: float | torch.Tensor | None = None,
    epsilon: float = 1e-6,
    gamma: float = 0.25,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """LRP, Zennit's ``EpsilonGammaBox`` composite (Montavon et al., 2017 for ZBox; 2019 for Gamma).

    The first convolution of the chain uses ZBox with the input bounds ``l = low``, ``h = high``:
    ``R_x = x W^T s - l W+^T s - h W-^T s``, ``s = R / stab(W x - W+ l - W- h)``; every other
    convolution the generalised Gamma rule: with ``W^+_gamma = W + gamma W+``,
    ``W^-_gamma = W + gamma W-``, outputs ``z > 0`` send ``R / stab(W^+_g x+ + W^-_g x- + b + gamma b+)``
    back through ``W^+_g`` to ``x+`` and ``W^-_g`` to ``x-``, outputs ``z < 0`` send
    ``R / stab(W^-_g x+ + W^+_g x- + b + gamma b-)`` back through ``W^-_g`` to ``x+`` and ``W^+_g``
    to ``x-``; linear layers epsilon; the rest as :func:`lrp_epsilon_plus`.

    Args:
        low, high: the lowest / highest possible input values, floats or tensors broadcastable to
            one image (e.g. ``[1, 3, 1, 1]``). ``None``: the bounds of ``[0, 1]`` pixels after
            ImageNet normalisation (3-channel images only).
        epsilon: the epsilon rule's stabiliser; gamma: the Gamma rule's ``gamma``.

    Raises:
        ValueError: as :func:`lrp_epsilon_plus`; bad options.

    Returns:
        float32 ``[B, C, H, W]``.
    """
    _check(epsilon, gamma)
    lo, hi = _bounds(low, images, "low"), _bounds(high, images, "high")
    if bool((lo > hi).any()):
        raise ValueError("lrp_epsilon_gamma_box option low must not exceed high")
    return _propagate(
        model, images, classes, "lrp_epsilon_gamma_box", epsilon=epsilon,
        first=lambda step, x, r: _zbox(step, x, r, lo, hi),
        conv_rule=lambda step, x, out, r: _gamma(step, x, out, r, float(gamma)),
        autocast_dtype=autocast_dtype,
    )
