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

import itertools
import weakref
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_conv_bn_weights

from explainers.rules import is_rectifier_module


class FastModel(nn.Module):
    """A prepared copy: ``forward(x) = net(x in channels_last)``; see the module docstring."""

    def __init__(self, net: nn.Module, *, folds: list[_Fold] | None = None, traced: bool) -> None:
        super().__init__()
        self.net = net
        self.folds = folds or []
        self.traced = traced

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


class _LeafTracer(fx.Tracer):
    """The default tracer, except that ``keep`` (the CAM layer) and every rectifier module
    (including subclasses, so the rules' guard hooks still see them) stay one ``call_module``."""

    def __init__(self, keep: nn.Module | None) -> None:
        super().__init__()
        self.keep = keep

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return (
            module is self.keep
            or is_rectifier_module(module)
            or super().is_leaf_module(module, qualified_name)
        )


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


def _fold_batchnorms(graph_module: fx.GraphModule, keep: nn.Module | None) -> list[_Fold]:
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


def build_fast_model(model: nn.Module, keep: nn.Module | None = None) -> FastModel:
    """Trace ``model`` (eval mode) keeping ``keep`` whole, fold its BatchNorms, wrap it.

    Falls back to ``FastModel(model)`` (channels-last input only) when tracing fails. The
    folded weights are made outside inference mode (an inference tensor could not serve a
    later gradient pass) and without autograd history.
    """
    try:
        graph = _LeafTracer(keep).trace(model)
    except Exception:  # any tracing failure means "run the model as it is"
        return FastModel(model, traced=False)
    with torch.inference_mode(False), torch.no_grad():
        graph_module = fx.GraphModule(model, graph, class_name=type(model).__name__ + "Fast")
        folds = _fold_batchnorms(graph_module, keep)
    return FastModel(graph_module, folds=folds, traced=True)


@dataclass
class _Entry:
    structure: tuple
    state: tuple
    fast: FastModel


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


def fast_model(model: nn.Module, keep: nn.Module | None = None) -> FastModel:
    """The cached fast copy of ``model`` (in eval mode) keeping ``keep`` whole; see module doc."""
    if isinstance(model, FastModel):
        return model
    if any(module.training for module in model.modules()):
        return FastModel(model, traced=False)  # BatchNorm uses batch statistics: no folding
    structure, state = _structure_key(model), _state_key(model)
    per_layer = _CACHE.setdefault(model, {})
    entry = per_layer.get(id(keep))
    if entry is None or entry.structure != structure:
        entry = _Entry(structure=structure, state=state, fast=build_fast_model(model, keep))
        per_layer[id(keep)] = entry
    elif entry.state != state:  # same modules, new values: refold without tracing again
        entry.fast.refresh()
        entry.state = state
    return entry.fast


def forget(model: nn.Module) -> None:
    """Drop the cached fast copies of ``model`` (after editing it through ``tensor.data``)."""
    _CACHE.pop(model, None)
