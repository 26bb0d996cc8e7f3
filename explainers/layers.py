"""Resolve the CAM layer of a model and read its output as ``[B, K, h, w]`` maps.

**Default rule** (``layer=None``; :mod:`explainers.zoo` uses the same function): the output
the classifier reads. A probing forward on ``example`` records every module's output in
completion order; the layer is the *last module to complete* (containers included) whose
output is a spatial map -- ``[B, C, h, w]`` with ``h * w > 1`` -- that is not the output of a
pooling layer; it is named by the outermost module returning that very tensor. So a
``torch.cat`` block is chosen whole (GoogLeNet ``inception5b``, Inception-v3 ``Mixed_7c``),
ResNet gives ``layer4``, DenseNet / EfficientNet / ConvNeXt ``features``, VGG-16
``features.29`` (its ``features`` ends with a max-pool), Swin ``permute`` (the ``[B, C, h, w]``
view its head pools).

For token models (no spatial map after the last token output ``[B, 1+N, C]`` / ``[B, N, C]``,
``N`` a square: ViT) the rule is the last token output whose *patch tokens* still reach the
logits: one backward of the probing forward is taken, and the last token module with a
non-zero patch gradient wins (torchvision ViT-B/16: ``encoder.layers.encoder_layer_11.ln_1``,
the recipe of pytorch-grad-cam; later outputs only feed the class token).

**Layouts** (:func:`layer_reader`): ``[B, C, h, w]`` is read as is, channels-last
``[B, h, w, C]`` (Swin, ConvNeXt blocks) is permuted, tokens ``[B, 1+N, C]`` (class token
dropped) or ``[B, N, C]`` are laid on the ``sqrt(N) x sqrt(N)`` grid. ``[B, C, h, w]`` and
``[B, h, w, C]`` are told apart by the input's aspect ratio (``h / w`` of the map against
``H / W`` of the input); a shape that fits both or neither, a 1x1 map (its CAM is a constant)
and anything else are refused with a ``ValueError`` naming the layer and the shape -- pass
``reshape=`` (a callable ``output -> [B, K, h, w]``) to say how to read it.
"""

from __future__ import annotations

import difflib
import math
import weakref
from collections.abc import Callable

import torch
from torch import nn

_POOLING = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)

Reshape = Callable[[torch.Tensor], torch.Tensor]


def _aspect_fits(h: int, w: int, size: tuple[int, int]) -> bool:
    """``h x w`` has the input's aspect ratio, within a factor 1.5 (odd strides round)."""
    if h < 1 or w < 1:
        return False
    ratio = (h / w) / (size[0] / size[1])
    return 1 / 1.5 <= ratio <= 1.5


def _grid(tokens: int) -> tuple[int, bool] | None:
    """``(n, has_class_token)`` when ``tokens`` is ``n*n`` or ``1 + n*n`` with ``n > 1``."""
    for extra in (1, 0):
        n = math.isqrt(tokens - extra) if tokens - extra > 0 else 0
        if n > 1 and n * n == tokens - extra:
            return n, bool(extra)
    return None


def layout(output: object, size: tuple[int, int], batch: int | None = None) -> str | None:
    """``"nchw"``, ``"nhwc"``, ``"tokens"`` or ``None`` (not interpretable) for a layer output."""
    if not isinstance(output, torch.Tensor) or (batch is not None and output.shape[0] != batch):
        return None
    if output.dim() == 4:
        nchw = _aspect_fits(output.shape[2], output.shape[3], size)
        nhwc = _aspect_fits(output.shape[1], output.shape[2], size)
        if nchw and nhwc:  # e.g. [B, 7, 7, 7]: C == h == w, or a layout both could be
            nchw = output.shape[1] > output.shape[3]
            nhwc = output.shape[3] > output.shape[1]
        if nchw != nhwc:
            return "nchw" if nchw else "nhwc"
        return None
    if output.dim() == 3 and size[0] == size[1] and _grid(output.shape[1]) is not None:
        return "tokens"
    return None


def to_maps(output: torch.Tensor, kind: str) -> torch.Tensor:
    """``output`` of layout ``kind`` as ``[B, K, h, w]`` (a view or a permuted view)."""
    if kind == "nchw":
        return output
    if kind == "nhwc":
        return output.permute(0, 3, 1, 2)
    grid = _grid(output.shape[1])
    assert grid is not None
    n, cls = grid
    tokens = output[:, 1:] if cls else output
    return tokens.reshape(output.shape[0], n, n, output.shape[2]).permute(0, 3, 1, 2)


def layer_reader(name: str, output: object, size: tuple[int, int], reshape: Reshape | None = None) -> Reshape:
    """A function reading this layer's output as ``[B, K, h, w]``, or a ``ValueError``.

    Args:
        name: the layer's dotted name (for messages).
        output: one output of the layer (its shape decides the layout).
        size: the input's ``(H, W)``.
        reshape: the caller's explicit reader; its result is checked like any other.
    """
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"CAM layer {name!r} returns {type(output).__name__}, not a tensor")
    shape = tuple(output.shape)
    if reshape is not None:
        reader = reshape
    else:
        kind = layout(output, size)
        if kind is None:
            raise ValueError(
                f"CAM layer {name!r} output has shape {shape}, which is not [B, C, h, w], channels-last "
                "[B, h, w, C] or tokens [B, 1+N, C] with N a square (and a square input); pass "
                "reshape=<callable returning [B, C, h, w]> or choose another layer"
            )
        reader = lambda t, kind=kind: to_maps(t, kind)  # noqa: E731
    maps = reader(output)
    if not isinstance(maps, torch.Tensor) or maps.dim() != 4 or maps.shape[0] != shape[0]:
        got = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise ValueError(f"reshape of CAM layer {name!r} output {shape} must give [B, C, h, w], got {got}")
    if maps.shape[-1] * maps.shape[-2] <= 1:
        raise ValueError(
            f"CAM layer {name!r} has a 1x1 spatial map (output {shape}): a CAM there is a constant; "
            "choose a layer before the global pooling"
        )
    return reader


def _is_spatial(t: object, size: tuple[int, int]) -> bool:
    return layout(t, size) == "nchw" and t.shape[-1] * t.shape[-2] > 1  # type: ignore[union-attr]


def _probe(model: nn.Module, example: torch.Tensor, grad: bool = False) -> tuple[list[tuple[str, nn.Module, torch.Tensor]], torch.Tensor]:
    """(name, module, output) of every module returning a tensor, in completion order, and
    the model output. Runs one forward (under ``torch.no_grad()`` unless ``grad``) with
    temporary hooks removed in ``finally``; the model's flags are left untouched."""
    order: list[tuple[str, nn.Module, torch.Tensor]] = []
    reads: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(name: str):
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            if isinstance(output, torch.Tensor):
                order.append((name, module, output))
                if grad and inputs and isinstance(inputs[0], torch.Tensor):  # type: ignore[index]
                    reads[name] = inputs[0]  # type: ignore[index]

        return hook

    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(make_hook(name)))
        with torch.set_grad_enabled(grad):
            x = example.detach().clone().requires_grad_(grad)
            out = model(x)
    finally:
        for handle in handles:
            handle.remove()
    if grad and isinstance(out, torch.Tensor):
        # what the classifier reads: the input of the deepest module returning the output
        heads = [name for name, _, output in order if output is out and name in reads]
        if heads:
            feature = reads[max(heads, key=len)]
            if feature.requires_grad:
                out = feature
    return order, out


def spatial_layers(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of modules returning spatial ``[B, C, h, w]`` maps on ``example``, in completion order."""
    size = tuple(example.shape[-2:])
    records, _ = _probe(model, example)
    return list(dict.fromkeys(name for name, _, out in records if _is_spatial(out, size)))


_DEFAULTS: weakref.WeakKeyDictionary[nn.Module, dict[tuple, str]] = weakref.WeakKeyDictionary()


def _outermost(records, leaf_name: str, tensor: torch.Tensor) -> str:
    enclosing = [
        name for name, _, output in records
        if output is tensor and (leaf_name == name or leaf_name.startswith(name + "."))
    ]
    return min(enclosing, key=len) if enclosing else leaf_name


def default_layer(model: nn.Module, example: torch.Tensor) -> str:
    """Dotted name of the default CAM layer (see the module docstring). Cached per model,
    module structure and input shape."""
    key = (tuple(example.shape[1:]), tuple(id(m) for m in model.modules()))
    cached = _DEFAULTS.get(model, {}).get(key)
    if cached is not None:
        return cached
    size = tuple(example.shape[-2:])
    records, _ = _probe(model, example[:1])
    pooled = {id(out) for _, module, out in records if isinstance(module, _POOLING)}
    last_map = last_tokens = -1
    for index, (_name, _module, output) in enumerate(records):
        if _is_spatial(output, size) and id(output) not in pooled:
            last_map = index
        elif layout(output, size) == "tokens" and output.shape[0] == 1:
            last_tokens = index
    if last_tokens > last_map:
        chosen = _token_layer(model, example[:1], size)
    elif last_map >= 0:
        name, _, tensor = records[last_map]
        chosen = _outermost(records, name, tensor)
    else:
        raise ValueError(
            f"no module of {type(model).__name__} returns a spatial [B, C, h, w] map or a token "
            "grid [B, 1+N, C]; pass layer= (and reshape=) explicitly"
        )
    _DEFAULTS.setdefault(model, {})[key] = chosen
    return chosen


def _token_layer(model: nn.Module, example: torch.Tensor, size: tuple[int, int]) -> str:
    """The last token output whose patch tokens have a non-zero gradient of the top logit."""
    with torch.inference_mode(False):
        records, out = _probe(model, example, grad=True)
        if not isinstance(out, torch.Tensor) or not out.requires_grad:
            raise ValueError(f"{type(model).__name__}: no gradient reaches the token layers; pass layer=")
        tokens = [(name, output) for name, _m, output in records
                  if layout(output, size) == "tokens" and output.requires_grad]
        grads = torch.autograd.grad(out.flatten(1).max(dim=1).values.sum(), [t for _, t in tokens],
                                    allow_unused=True) if tokens else ()
    chosen = None
    for (name, output), grad in zip(tokens, grads, strict=True):
        if grad is not None and bool(to_maps(grad, "tokens").abs().amax() > 0):
            chosen = (name, output)
    if chosen is None:
        raise ValueError(f"{type(model).__name__}: no token layer's patch tokens reach the logits; pass layer=")
    return _outermost(records, *chosen)


def resolve_layer(
    model: nn.Module,
    layer: str | nn.Module | None = None,
    *,
    example: torch.Tensor | None = None,
) -> tuple[str, nn.Module]:
    """Return ``(dotted_name, module)`` of the CAM layer.

    Args:
        model: the network.
        layer: a dotted path (``"layer4"``, ``"features.29"``,
            ``"encoder.layers.encoder_layer_11.ln_1"``, ``"blocks.-1"``), a submodule of
            ``model``, or ``None`` for the default (needs ``example``).
        example: an input batch used for the probing forward when ``layer`` is None.

    Raises:
        ValueError: unknown name (the message lists close matches and the spatial
            candidates), a module that is not part of ``model``, or ``layer=None``
            without ``example``.
    """
    modules = dict(model.named_modules())
    if isinstance(layer, nn.Module):
        for name, module in modules.items():
            if module is layer and name:
                return name, module
        raise ValueError(
            f"layer module {type(layer).__name__} is not a submodule of {type(model).__name__}"
        )
    if layer is None:
        if example is None:
            raise ValueError("layer=None needs an example input to find the default CAM layer")
        name = default_layer(model, example)
        return name, modules[name]
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a dotted name, a module or None, not {type(layer).__name__}")
    if layer in modules and layer:
        return layer, modules[layer]
    found = _walk(model, layer)
    if found is not None:
        return resolve_layer(model, found)
    names = [name for name in modules if name]
    close = difflib.get_close_matches(layer, names, n=5, cutoff=0.5)
    convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)][-5:]
    top = [n for n, _ in model.named_children()]
    raise ValueError(
        f"layer {layer!r} not found in {type(model).__name__}; "
        f"close matches: {close or 'none'}; top-level modules: {top}; "
        f"last conv layers: {convs}"
    )


def _walk(model: nn.Module, path: str) -> nn.Module | None:
    """Follow a dotted path whose parts may be indices (``features[3]``, ``blocks.-1``)."""
    module: nn.Module = model
    for part in path.replace("[", ".").replace("]", "").split("."):
        if not part:
            continue
        children = dict(module.named_children())
        if part in children:
            module = children[part]
        elif part.lstrip("-").isdigit() and children:
            items = list(children.values())
            index = int(part)
            if not -len(items) <= index < len(items):
                return None
            module = items[index]
        else:
            return None
    return module if module is not model else None
