"""Resolve the CAM layer of a model: by dotted name, by module, or by default.

Default rule (``layer=None``): run a probing forward on ``example`` and take the last
*leaf* module, in execution order, that returns a 4-D tensor with more than one spatial
position and is not a pooling layer (Grad-CAM uses the last convolutional feature maps);
it is reported under the outermost enclosing module that returns that very tensor
(torchvision ResNet -> ``layer4``, VGG-16 -> ``features.29``).
"""

from __future__ import annotations

import difflib

import torch
from torch import nn

_POOLING = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)


def _is_spatial(t: object) -> bool:
    return isinstance(t, torch.Tensor) and t.dim() == 4 and t.shape[-1] * t.shape[-2] > 1


def _probe(model: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Module, torch.Tensor]]:
    """(name, module, output) of every module returning a spatial map, in completion order.

    Runs one forward under ``torch.no_grad()`` with temporary hooks (removed in
    ``finally``); the model's train/eval flags are left untouched.
    """
    order: list[tuple[str, nn.Module, torch.Tensor]] = []
    handles = []

    def make_hook(name: str):
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            if _is_spatial(output):
                order.append((name, module, output))  # type: ignore[arg-type]

        return hook

    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(make_hook(name)))
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return order


def spatial_layers(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of modules returning spatial 4-D maps on ``example``, in completion order."""
    return list(dict.fromkeys(name for name, _, _ in _probe(model, example)))


def default_layer(model: nn.Module, example: torch.Tensor) -> str:
    """Dotted name of the default CAM layer (see module docstring)."""
    records = _probe(model, example[:1])
    chosen: tuple[str, torch.Tensor] | None = None
    for name, module, output in records:
        if len(list(module.children())) == 0 and not isinstance(module, _POOLING):
            chosen = (name, output)
    if chosen is None:
        raise ValueError(
            f"no module of {type(model).__name__} returns a spatial 4-D feature map; "
            "pass layer= explicitly"
        )
    leaf_name, tensor = chosen
    enclosing = [
        name for name, _, output in records
        if output is tensor and (leaf_name == name or leaf_name.startswith(name + "."))
    ]
    return min(enclosing, key=len) if enclosing else leaf_name


def resolve_layer(
    model: nn.Module,
    layer: str | nn.Module | None = None,
    *,
    example: torch.Tensor | None = None,
) -> tuple[str, nn.Module]:
    """Return ``(dotted_name, module)`` of the CAM layer.

    Args:
        model: the network.
        layer: a dotted name (``"layer4"``, ``"features.29"``, ``"_blocks.15"``), a
            submodule of ``model``, or ``None`` for the default (needs ``example``).
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
    names = [name for name in modules if name]
    close = difflib.get_close_matches(layer, names, n=5, cutoff=0.5)
    convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)][-5:]
    top = [n for n, _ in model.named_children()]
    raise ValueError(
        f"layer {layer!r} not found in {type(model).__name__}; "
        f"close matches: {close or 'none'}; top-level modules: {top}; "
        f"last conv layers: {convs}"
    )
