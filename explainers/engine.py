"""``explain()``: many explanation methods for a batch, with planned passes.

Plan for the methods that use the model's gradient at the images themselves
(saliency, input x gradient, guided backprop, deconvnet, the CAMs and their products):

1. **One forward** for all of them. If guided/deconvnet maps are wanted the forward
   runs inside :func:`explainers.rules.rectifier_rules`, so every rectifier's backward
   can be switched between backward passes. A forward hook on the CAM layer keeps its
   activation ``A`` (and hands a clone to the rest of the network, so later in-place
   ops cannot touch it). When only CAMs are wanted, the forward runs without autograd
   up to the CAM layer and the backward stops there.
2. **One backward per (rule, target)** with ``torch.autograd.grad`` w.r.t. only what
   is needed: the plain backward gives ``dy/dx`` (saliency, input x gradient) and
   ``dy/dA`` (Grad-CAM, counterfactual Grad-CAM, Grad-CAM++) together; the guided and
   deconvnet backwards give ``dy/dx`` only. Targets are one-hot backward vectors, so
   each image has its own class in the same pass; ``[B, K]`` targets loop over ``K``
   on the retained graph.
3. Guided / Deconv Grad-CAM are products of maps already computed.

SmoothGrad and Integrated Gradients run their own batched forward/backward passes on
noisy / interpolated inputs; occlusion and RISE run batched forwards under
``torch.inference_mode()``. All maps are float32 on the images' device.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from explainers.fast import fast_model
from explainers.layers import resolve_layer
from explainers.methods.cam import CAM_FUNCTIONS, upsample
from explainers.methods.common import (
    autocast_context,
    fresh_input,
    grad_enabled_session,
    model_session,
    one_hot,
)
from explainers.methods.integrated import integrated_gradients
from explainers.methods.perturbation import occlusion, rise
from explainers.methods.smooth import smoothgrad
from explainers.registry import METHODS, get_spec
from explainers.rules import Rule, RuleState, rectifier_rules

_SAMPLED: dict[str, Callable[..., torch.Tensor]] = {
    "smoothgrad": smoothgrad,
    "integrated_gradients": integrated_gradients,
}
_PERTURBATION: dict[str, Callable[..., torch.Tensor]] = {"occlusion": occlusion, "rise": rise}
_INPUT_RULE: dict[str, Rule] = {
    "saliency": "plain",
    "input_x_gradient": "plain",
    "guided_backprop": "guided",
    "guided_gradcam": "guided",
    "deconvnet": "deconvnet",
    "deconv_gradcam": "deconvnet",
}
_CAMS_FOR_PRODUCTS = {"guided_gradcam", "deconv_gradcam"}


def _classes(targets: torch.Tensor | Sequence[int], batch: int, device: torch.device) -> tuple[torch.Tensor, bool]:
    tensor = torch.as_tensor(targets)
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"targets must be integer class indices, got dtype {tensor.dtype}")
    if tensor.dim() == 1 and tensor.shape[0] == batch:
        return tensor.view(batch, 1).long().to(device), True
    if tensor.dim() == 2 and tensor.shape[0] == batch and tensor.shape[1] >= 1:
        return tensor.long().to(device), False
    raise ValueError(
        f"targets must have shape [B] or [B, K] with B={batch}, got {tuple(tensor.shape)}"
    )


def _method_options(name: str, options: Mapping[str, Mapping[str, Any]], function: Callable | None) -> dict:
    given = dict(options.get(name, {}))
    if function is None:
        if given:
            raise ValueError(f"method {name!r} takes no options, got {sorted(given)}")
        return given
    allowed = {
        p.name for p in inspect.signature(function).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "autocast_dtype"
    }
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ValueError(f"unknown options {unknown} for method {name!r}; allowed: {sorted(allowed)}")
    return given


def _cams_needed(names: Sequence[str]) -> list[str]:
    """The CAM maps to compute: the requested ones, plus Grad-CAM for the products."""
    cams = [n for n in names if METHODS[n].family == "cam"]
    if any(n in _CAMS_FOR_PRODUCTS for n in names) and "gradcam" not in cams:
        cams.append("gradcam")
    return cams


def _shared_pass(
    model: nn.Module,
    images: torch.Tensor,
    classes: torch.Tensor,
    names: list[str],
    cam_layer: tuple[str, nn.Module] | None,
    autocast_dtype: torch.dtype | None,
    layer_maps: bool,
) -> dict[str, torch.Tensor]:
    """One forward, one backward per (rule, target): every gradient/CAM/product map.

    ``cam_layer`` is the resolved ``(name, module)`` of the CAM layer, a module that ``model``
    calls (``None`` when no CAM map is wanted).
    """
    input_rules: list[Rule] = []
    for name in names:
        rule = _INPUT_RULE.get(name)
        if rule is not None and rule not in input_rules:
            input_rules.append(rule)
    cams = _cams_needed(names)
    need_layer = bool(cams)
    cut = need_layer and not input_rules  # CAM only: no autograd before the layer
    backward_rules: list[Rule] = [r for r in ("plain", "guided", "deconvnet")
                                  if r in input_rules or (r == "plain" and need_layer)]
    ruled = any(r != "plain" for r in backward_rules)

    x = fresh_input(images) if input_rules else images.detach().float()
    captured: dict[str, torch.Tensor] = {}
    handle = None
    if need_layer:
        assert cam_layer is not None, "CAM maps need the resolved CAM layer"
        layer_name, module = cam_layer

        def keep_activation(mod: nn.Module, inputs: Any, output: Any) -> torch.Tensor:
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"CAM layer {layer_name!r} returns {type(output).__name__}, not a tensor")
            if output.dim() != 4:
                raise ValueError(f"CAM layer {layer_name!r} output has shape {tuple(output.shape)}, "
                                 "expected [B, K, h, w]")
            activation = output
            if cut and not output.requires_grad:
                torch.set_grad_enabled(True)  # restored when the forward's no_grad block exits
                activation = output.detach().requires_grad_(True)
            captured["activation"] = activation
            return activation.clone()

        handle = module.register_forward_hook(keep_activation)
    state = RuleState("plain")
    try:
        with torch.set_grad_enabled(not cut):
            if ruled:
                with rectifier_rules(model, state), autocast_context(x.device, autocast_dtype):
                    logits = model(x)
            else:
                with autocast_context(x.device, autocast_dtype):
                    logits = model(x)
    finally:
        if handle is not None:
            handle.remove()
    activation = captured.get("activation")
    if need_layer and activation is None:
        raise RuntimeError(f"CAM layer {layer_name!r} was not called during the forward pass")

    size = tuple(images.shape[-2:])
    per_target: dict[str, list[torch.Tensor]] = {}

    def add(key: str, value: torch.Tensor) -> None:
        per_target.setdefault(key, []).append(value)

    steps = [(k, rule) for k in range(classes.shape[1]) for rule in backward_rules]
    for index, (k, rule) in enumerate(steps):
        vector = one_hot(logits, classes[:, k])
        wrt = ([x] if rule in input_rules else []) + ([activation] if rule == "plain" and need_layer else [])
        state.set(rule)
        grads = torch.autograd.grad(logits, wrt, vector, retain_graph=index < len(steps) - 1)
        if rule in input_rules:
            grad_x = grads[0].float()
            if rule == "plain":
                add("saliency", grad_x)
                if "input_x_gradient" in names:
                    add("input_x_gradient", x.detach() * grad_x)
            else:
                add("guided_backprop" if rule == "guided" else "deconvnet", grad_x)
        if rule == "plain" and need_layer:
            grad_a = grads[-1]
            for cam in cams:
                low = CAM_FUNCTIONS[cam](activation.detach(), grad_a)
                add(cam + "@layer", low)
                add(cam, upsample(low, size))
    for k in range(classes.shape[1]):
        if "guided_gradcam" in names:
            add("guided_gradcam", per_target["guided_backprop"][k] * per_target["gradcam"][k].unsqueeze(1))
        if "deconv_gradcam" in names:
            add("deconv_gradcam", per_target["deconvnet"][k] * per_target["gradcam"][k].unsqueeze(1))
    wanted = set(names) | ({c + "@layer" for c in cams if c in names} if layer_maps else set())
    return {key: torch.stack(maps, dim=1) for key, maps in per_target.items() if key in wanted}


def explain(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor | Sequence[int],
    methods: Sequence[str],
    layer: str | nn.Module | None = None,
    *,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    autocast_dtype: torch.dtype | None = None,
    layer_maps: bool = False,
    fast: bool = True,
) -> dict[str, torch.Tensor]:
    """Explain ``model``'s scores for ``targets`` on ``images`` with several methods.

    Args:
        model: a classifier returning ``[B, num_classes]`` logits. It is run in eval
            mode; its train/eval flags and ``requires_grad`` are restored, no hook is
            left behind and no parameter ``.grad`` is filled (also inside
            ``torch.no_grad()`` / ``torch.inference_mode()`` and on errors).
        images: ``[B, C, H, W]`` preprocessed inputs, on the model's device.
        targets: ``[B]`` (one class per image) or ``[B, K]`` (adds a ``K`` axis after
            ``B`` to every output).
        methods: names from :data:`explainers.registry.METHODS`.
        layer: CAM layer (dotted name or module); ``None`` = default, see
            :func:`explainers.layers.resolve_layer`.
        options: per-method keyword options, e.g. ``{"occlusion": {"window": 32,
            "stride": 16, "baseline": 0.0, "batch_size": 16}, "smoothgrad": {"samples": 8,
            "noise": 0.15, "base": "saliency", "seed": 0, "batch_size": None},
            "integrated_gradients": {"steps": 32, "method": "gausslegendre",
            "baseline": None, "batch_size": None}, "rise": {"masks": 2000, "cells": 7,
            "p": 0.5, "seed": 0, "batch_size": 64, "score": "softmax"}}``.
        autocast_dtype: run forwards under ``torch.autocast`` with this dtype
            (e.g. ``torch.bfloat16``); maps are still float32.
        layer_maps: also return ``"<cam>@layer"`` maps ``[B, (K,) h, w]`` at layer
            resolution for the requested CAM methods.
        fast: run the passes on the cached fast copy of the model (BatchNorm folded into
            its convolutions, channels-last; :mod:`explainers.fast`): the same maps up to
            float rounding (~1e-6 relative). ``False`` runs the model exactly as given.

    Returns:
        ``{method: map}``; ``[B, (K,) C, H, W]`` signed for channel methods,
        ``[B, (K,) H, W]`` for CAM, occlusion and RISE maps (``MethodSpec.output``).

    Raises:
        ValueError: unknown method or option, bad image/target shapes, unknown layer.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a float tensor [B, C, H, W], got {shape}")
    names = list(dict.fromkeys(methods))
    if not names:
        raise ValueError("methods is empty; known: " + ", ".join(METHODS))
    specs = {name: get_spec(name) for name in names}
    options = dict(options or {})
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ValueError(f"options given for methods not requested: {unknown}")
    kwargs = {
        name: _method_options(name, options, _SAMPLED.get(name) or _PERTURBATION.get(name))
        for name in names
    }
    classes, single = _classes(targets, images.shape[0], images.device)
    shared = [n for n in names if specs[n].family in ("gradient", "cam", "product")]
    results: dict[str, torch.Tensor] = {}
    with model_session(model), grad_enabled_session():
        if shared:
            cam_layer = resolve_layer(model, layer, example=images) if _cams_needed(shared) else None
            runner = fast_model(model, keep=cam_layer[1] if cam_layer else None) if fast else model
            results.update(_shared_pass(runner, images, classes, shared, cam_layer, autocast_dtype, layer_maps))
        own_passes = [name for name in names if name in _SAMPLED or name in _PERTURBATION]
        runner = fast_model(model) if fast and own_passes else model  # built only when used
        for name in own_passes:
            if name in _SAMPLED:
                results[name] = torch.stack([
                    _SAMPLED[name](runner, images, classes[:, k], autocast_dtype=autocast_dtype, **kwargs[name])
                    for k in range(classes.shape[1])
                ], dim=1)
            else:
                results[name] = _PERTURBATION[name](
                    runner, images, classes, autocast_dtype=autocast_dtype, **kwargs[name]
                )
    ordered = {name: results[name].contiguous() for name in names}
    ordered.update({k: v.contiguous() for k, v in results.items() if k.endswith("@layer")})
    if single:
        ordered = {k: v.squeeze(1) for k, v in ordered.items()}
    return ordered
