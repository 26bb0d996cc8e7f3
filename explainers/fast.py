"""Fast execution copies of a model: BatchNorm folded into convolutions, channels-last.

Every method of the engine runs many passes through the same network in eval mode, so the
network is worth preparing once:

* **BatchNorm folding.** An eval-mode ``Conv2d`` followed by a ``BatchNorm2d`` that reads only
  its output is one affine map, so it becomes one convolution with
  ``W' = W * s`` and ``b' = (b - mu) * s + beta``, ``s = gamma / sqrt(var + eps)`` per output
  channel (:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`). Forward values and gradients are
  the same function; only float rounding differs (about 1e-6 relative on ResNet-18 logits).
* **Channels-last.** Folded convolutions keep their weights in ``channels_last`` and the copy
  converts its input to it, so oneDNN (CPU) and cuDNN (GPU) run their NHWC kernels without
  converting layouts at every layer.

The copy is a :func:`torch.fx.symbolic_trace` of the model that *shares* every module it does
not fold (ReLUs, pooling, linear layers, the CAM layer), so rectifier rules, CAM hooks and
memory behave as on the original; only folded convolutions are new tensors. The CAM layer,
when given, is kept as one leaf module so that a forward hook on it still fires. A model that
``torch.fx`` cannot trace (data-dependent control flow) runs as it is, with channels-last
input only.

Copies are cached per model (weakly: the cache never keeps a model alive). A copy is traced
again when a module or parameter object of the model is replaced; when only values change
(every parameter's and buffer's storage address and version counter are compared, so
``load_state_dict``, ``reset_parameters()``, optimizer steps and any other in-place update
through the tensors themselves count) its folded weights are recomputed in place, which costs
far less than a trace (the sanity checks randomise a model layer by layer). Writes through
``tensor.data`` bypass the version counter: call :func:`forget` after such an edit, or pass
``fast=False`` to :func:`explainers.explain`.
"""

from __future__ import annotations

import inspect
import itertools
import re
import warnings
import weakref
from dataclasses import dataclass, field

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_conv_bn_weights

from explainers.rules import is_rectifier_module


class FastModel(nn.Module):
    """A prepared copy: ``forward(x) = net(x in channels_last)``; see the module docstring."""

    def __init__(self, net: nn.Module, *, folds: list[_Fold] | None = None, traced: bool,
                 tap: nn.Module | None = None) -> None:
        super().__init__()
        self.net = net
        self.folds = folds or []
        self.traced = traced
        self.tap = tap  # identity module placed on the CAM layer's output inside the trace

    def hook_module(self, layer: nn.Module) -> nn.Module:
        """The module whose forward hook sees ``layer``'s output in this copy: the tap when the
        layer was traced through (its inner BatchNorms folded), else ``layer`` itself."""
        return self.tap if self.tap is not None else layer

    @property
    def folded(self) -> int:
        """How many convolution + BatchNorm pairs this copy folded."""
        return len(self.folds)

    def refresh(self) -> None:
        """Recompute every folded weight from the model's current convolution and BatchNorm
        tensors, in place (after ``load_state_dict``, ``reset_parameters()``, ...)."""
        with torch.inference_mode(False), torch.no_grad():
            for fold in self.folds:
                fold.refresh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)


@dataclass
class _Fold:
    """One folded pair: the model's own tensors (sources) and the copy's folded ones."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    norm: nn.BatchNorm2d
    folded_weight: torch.Tensor
    folded_bias: torch.Tensor

    def refresh(self) -> None:
        norm = self.norm
        weight, bias = fuse_conv_bn_weights(
            self.weight, self.bias, norm.running_mean, norm.running_var, norm.eps, norm.weight, norm.bias
        )
        self.folded_weight.copy_(weight)
        self.folded_bias.copy_(bias)


class _Tap(nn.Module):
    """Identity on the CAM layer's output, so a forward hook sees it in a traced-through copy."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _LeafTracer(fx.Tracer):
    """The default tracer, except that every rectifier module (including subclasses, so the
    rules' guard hooks still see them) stays one ``call_module``. ``keep`` (the CAM layer) stays
    one ``call_module`` when ``keep_leaf``; otherwise it is traced through (its convolution +
    BatchNorm pairs fold) and the node of its output is recorded in ``keep_outputs``."""

    def __init__(self, keep: nn.Module | None, keep_leaf: bool) -> None:
        super().__init__()
        self.keep = keep
        self.keep_leaf = keep_leaf
        self.keep_outputs: list[object] = []

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return (
            (module is self.keep and self.keep_leaf)
            or is_rectifier_module(module)
            or super().is_leaf_module(module, qualified_name)
        )

    def call_module(self, m, forward, args, kwargs):  # type: ignore[no-untyped-def]
        out = super().call_module(m, forward, args, kwargs)
        if m is self.keep and self.keep is not None:
            self.keep_outputs.append(out)
        return out


def _attribute_tensor(graph_module: fx.GraphModule, node: object) -> torch.Tensor | None:
    """The tensor a ``get_attr`` node reads (a parameter or a buffer), else ``None``."""
    if not (isinstance(node, fx.Node) and node.op == "get_attr"):
        return None
    value: object = graph_module
    for part in str(node.target).split("."):
        value = getattr(value, part, None)
    return value if isinstance(value, torch.Tensor) else None


def _conv_weights(graph_module: fx.GraphModule, node: fx.Node) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """``(weight, bias)`` tensors of a functional ``conv2d`` that reads them from attributes,
    or ``None`` when either is computed in the forward (then the pair is not folded)."""
    weight_node = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
    bias_node = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
    weight = _attribute_tensor(graph_module, weight_node)
    bias = None if bias_node is None else _attribute_tensor(graph_module, bias_node)
    if weight is None or (bias_node is not None and bias is None):
        return None
    return weight, bias


def _set_conv_weight_args(node: fx.Node, weight: fx.Node, bias: fx.Node) -> None:
    args, kwargs = list(node.args), dict(node.kwargs)
    for index, name, value in ((1, "weight", weight), (2, "bias", bias)):
        if len(args) > index:
            args[index] = value
        else:
            kwargs[name] = value
    node.args, node.kwargs = tuple(args), kwargs


def _fold_batchnorms(graph_module: fx.GraphModule, keep: nn.Module | None,
                     cam_output: fx.Node | None = None) -> list[_Fold]:
    """Fold every eval ``conv -> BatchNorm2d`` pair of the graph in place; return the folds.

    The convolution is an ``nn.Conv2d`` module call or a functional ``conv2d`` on attribute
    weights (how ``Conv2d`` subclasses such as EfficientNet's static-padding convolution trace).
    A pair folds when the BatchNorm's only input is the convolution's output, nothing else reads
    that output, and neither is ``keep``. Folded weights are new tensors (the model is untouched):
    ``W' = W * s``, ``b' = (b - mu) * s + beta``, ``s = gamma / sqrt(var + eps)``.
    """
    graph = graph_module.graph
    modules = dict(graph_module.named_modules())
    folds: list[_Fold] = []
    for node in list(graph.nodes):
        norm = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(norm, nn.BatchNorm2d) or norm is keep or len(node.args) != 1 or node.kwargs:
            continue
        if node is cam_output:  # the CAM layer's own output stays a BatchNorm output
            continue
        if norm.training or not norm.track_running_stats or norm.running_mean is None:
            continue
        producer = node.args[0]
        if not isinstance(producer, fx.Node) or len(producer.users) != 1:
            continue
        conv = modules.get(producer.target) if producer.op == "call_module" else None
        if type(conv) is nn.Conv2d and conv is not keep and not conv.training:
            merged = fuse_conv_bn_eval(conv, norm).to(memory_format=torch.channels_last)
            for parameter in merged.parameters():
                parameter.requires_grad_(False)
            name = f"folded_{len(folds)}_{str(producer.target).replace('.', '_')}"
            graph_module.add_submodule(name, merged)
            producer.target = name
            folds.append(_Fold(conv.weight, conv.bias, norm, merged.weight, merged.bias))
        elif producer.op == "call_function" and producer.target is torch.conv2d:
            tensors = _conv_weights(graph_module, producer)
            if tensors is None:
                continue
            weight, bias = tensors
            new_weight, new_bias = fuse_conv_bn_weights(
                weight, bias, norm.running_mean, norm.running_var, norm.eps, norm.weight, norm.bias
            )
            prefix = f"folded_{len(folds)}"
            folded_weight = nn.Parameter(
                new_weight.detach().contiguous(memory_format=torch.channels_last), requires_grad=False
            )
            folded_bias = nn.Parameter(new_bias.detach(), requires_grad=False)
            graph_module.register_parameter(prefix + "_weight", folded_weight)
            graph_module.register_parameter(prefix + "_bias", folded_bias)
            with graph.inserting_before(producer):
                _set_conv_weight_args(producer, graph.get_attr(prefix + "_weight"), graph.get_attr(prefix + "_bias"))
            folds.append(_Fold(weight, bias, norm, folded_weight, folded_bias))
        else:
            continue
        node.replace_all_uses_with(producer)
        graph.erase_node(node)
    # No general dead-code elimination: it would drop in-place calls whose result is unused.
    for node in list(graph.nodes):
        if node.op == "get_attr" and not node.users:
            graph.erase_node(node)
    graph.lint()
    graph_module.recompile()
    graph_module.delete_all_unused_submodules()
    return folds


_GRAD_MODE = re.compile(r"\b(no_grad|inference_mode|set_grad_enabled|enable_grad)\b")


def untraceable_reason(model: nn.Module) -> str | None:
    """Why a ``torch.fx`` trace of ``model`` would not compute what the model computes, read
    from its modules' ``forward`` sources: a grad-mode block (``torch.no_grad()``,
    ``inference_mode``, ``set_grad_enabled``: the trace drops it, so a frozen backbone would get a
    gradient it does not have). ``None`` when nothing is found (the logits check still runs)."""
    seen: set[type] = set()
    for name, module in model.named_modules():
        kind = type(module)
        if kind in seen or kind.__module__.startswith("torch.nn."):
            continue
        seen.add(kind)
        try:
            source = inspect.getsource(kind.forward)
        except (OSError, TypeError):
            continue
        match = _GRAD_MODE.search(source)
        if match:
            where = f"{name!r} ({kind.__name__})" if name else kind.__name__
            return f"the forward of {where} uses torch.{match.group(1)}, which a torch.fx trace drops"
    return None


def _concrete_args(model: nn.Module) -> dict[str, object] | None:
    """Defaults of ``forward``'s arguments after the input (``forward(x, extra=None)``), which
    the engine never passes: traced as constants so ``if extra is not None`` keeps its branch.
    ``None`` when a further argument has no default (it cannot be called with the input only)."""
    try:
        parameters = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    concrete: dict[str, object] = {}
    for parameter in parameters[1:]:
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        if parameter.default is inspect.Parameter.empty:
            return None
        concrete[parameter.name] = parameter.default
    return concrete


def build_fast_model(model: nn.Module, keep: nn.Module | None = None) -> FastModel:
    """Trace ``model`` (eval mode), fold its BatchNorms, wrap it.

    ``keep`` (the CAM layer) is traced through when it is called once, so the BatchNorms
    inside a container CAM layer (torchvision DenseNet / EfficientNet ``features``) fold too;
    an identity tap on its output carries the CAM hook (:meth:`FastModel.hook_module`). A layer
    called several times stays one ``call_module``. Falls back to ``FastModel(model)``
    (channels-last input only) when tracing fails, when ``forward`` needs more than the input,
    or when a forward uses a grad-mode block (:func:`untraceable_reason`). The folded weights
    are made outside inference mode (an inference tensor could not serve a later gradient
    pass) and without autograd history.
    """
    concrete = _concrete_args(model)
    reason = untraceable_reason(model)
    if concrete is None or reason is not None:
        return FastModel(model, traced=False)
    tracer: _LeafTracer | None = None
    graph = None
    for keep_leaf in ((False, True) if keep is not None and not is_rectifier_module(keep) else (True,)):
        tracer = _LeafTracer(keep, keep_leaf)
        try:
            graph = tracer.trace(model, concrete_args=concrete or None)
        except Exception:  # any tracing failure means "run the model as it is"
            graph = None
            continue
        if keep is None or keep_leaf or (
            len(tracer.keep_outputs) == 1 and isinstance(tracer.keep_outputs[0], fx.Proxy)
        ):
            break
        graph = None
    if graph is None or tracer is None:
        return FastModel(model, traced=False)
    with torch.inference_mode(False), torch.no_grad():
        graph_module = fx.GraphModule(model, graph, class_name=type(model).__name__ + "Fast")
        tap_module = None
        cam_output = None
        if keep is not None and not tracer.keep_leaf:
            cam_output = tracer.keep_outputs[0].node  # type: ignore[union-attr]
            cam_output = next(n for n in graph_module.graph.nodes if n.name == cam_output.name)
            tap_module = _Tap()
            graph_module.add_submodule("cam_tap", tap_module)
            with graph_module.graph.inserting_after(cam_output):
                tap = graph_module.graph.call_module("cam_tap", (cam_output,))
            cam_output.replace_all_uses_with(tap, delete_user_cb=lambda user: user is not tap)
        folds = _fold_batchnorms(graph_module, keep, cam_output)
    return FastModel(graph_module, folds=folds, traced=True, tap=tap_module)


@dataclass
class _Entry:
    structure: tuple
    state: tuple
    fast: FastModel
    checked: dict = field(default_factory=dict)  # (state, input signature) -> problem or None


_WARNED: weakref.WeakKeyDictionary[nn.Module, set[str]] = weakref.WeakKeyDictionary()


def _warn_once(model: nn.Module, reason: str) -> None:
    told = _WARNED.setdefault(model, set())
    if reason not in told:
        told.add(reason)
        warnings.warn(
            f"explainers: the fast copy of {type(model).__name__} cannot be trusted ({reason}); "
            "running the model as given (fast=False) for it",
            RuntimeWarning,
            stacklevel=4,
        )


def _agree(model: nn.Module, copy: FastModel, example: torch.Tensor) -> str | None:
    """Compare the copy with the model on ``example``: logits (relative max error 1e-3; 3e-2
    for 16-bit dtypes) and whether the input's gradient reaches them. ``None`` if they agree."""
    with torch.inference_mode(False), torch.enable_grad():
        x = example.detach().clone().requires_grad_(True)
        want = model(x)
        got = copy(example.detach().clone().requires_grad_(True))
    if not isinstance(want, torch.Tensor) or not isinstance(got, torch.Tensor):
        return None if not isinstance(want, torch.Tensor) else "the copy returns no tensor"
    if want.shape != got.shape:
        return f"the copy's output has shape {tuple(got.shape)}, the model's {tuple(want.shape)}"
    if want.requires_grad != got.requires_grad:
        return "the model's output has no gradient to its input but the copy's has (grad mode)"
    want, got = want.detach().double(), got.detach().double()
    if not bool(torch.isfinite(want).all()):
        return None
    tol = 3e-2 if example.dtype in (torch.float16, torch.bfloat16) else 1e-3
    error = float((want - got).abs().max())
    scale = float(want.abs().max()) + 1e-12
    if error > tol * scale:
        return f"the copy's logits differ from the model's by {error / scale:.2e} (relative)"
    return None


_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[int, _Entry]] = weakref.WeakKeyDictionary()


def _structure_key(model: nn.Module) -> tuple:
    """Identity of every module and parameter object: a change means the trace is stale."""
    return tuple(id(m) for m in model.modules()) + tuple(id(p) for p in model.parameters())


def _state_key(model: nn.Module) -> tuple:
    """Storage address, version counter, shape and device of every parameter and buffer."""
    return tuple(
        (t.data_ptr(), t._version, tuple(t.shape), t.device.type, t.dtype)
        for t in itertools.chain(model.parameters(), model.buffers())
    )


def fast_model(model: nn.Module, keep: nn.Module | None = None,
               example: torch.Tensor | None = None) -> nn.Module:
    """The cached fast copy of ``model`` (in eval mode) with ``keep`` hookable; see module doc.

    With ``example`` (the engine passes the first image of each call), the copy is checked
    before it is trusted, once per model version and input shape/dtype: its logits must equal
    the model's and the input's gradient must reach them exactly when it reaches the model's.
    When the copy fails, ``model`` itself is returned and a ``RuntimeWarning`` with the reason
    is issued once per model.
    """
    if isinstance(model, FastModel):
        return model
    if any(module.training for module in model.modules()):
        return FastModel(model, traced=False)  # BatchNorm uses batch statistics: no folding
    reason = untraceable_reason(model)
    if reason is not None:
        _warn_once(model, reason)
        return model
    structure, state = _structure_key(model), _state_key(model)
    per_layer = _CACHE.setdefault(model, {})
    entry = per_layer.get(id(keep))
    if entry is None or entry.structure != structure:
        entry = _Entry(structure=structure, state=state, fast=build_fast_model(model, keep))
        per_layer[id(keep)] = entry
    elif entry.state != state:  # same modules, new values: refold without tracing again
        entry.fast.refresh()
        entry.state = state
    if example is not None and entry.fast.traced:
        signature = (state, tuple(example.shape[1:]), example.dtype, example.device.type)
        if signature not in entry.checked:
            entry.checked[signature] = _agree(model, entry.fast, example[:1])
        problem = entry.checked[signature]
        if problem is not None:
            _warn_once(model, problem)
            return model
    return entry.fast


def forget(model: nn.Module) -> None:
    """Drop the cached fast copies of ``model`` (after editing it through ``tensor.data``)."""
    _CACHE.pop(model, None)
