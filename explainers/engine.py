"""``explain()``: many explanation methods for a batch, with planned passes.

The plan is derived from the method registry (:data:`explainers.registry.METHODS`), the one
place that says, for each method, which pass family runs it (``MethodSpec.family``), the rule of
each backward (``backward_rule``), the maps a product multiplies (``requires``) and the function
called (``function``); no method is named here.

Plan for the methods that use the model's gradient at the images themselves
(families ``gradient``, ``cam`` and ``product``: saliency, input x gradient, guided backprop,
deconvnet, the gradient CAMs and their products):

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

SmoothGrad and Integrated Gradients (``sampled``), DeepLIFT and LRP (``rule``) run their own
batched forward/backward passes; occlusion, RISE and LIME (``perturbation``) run batched forwards
under ``torch.inference_mode()``; the forward-only CAMs (``activation``) share one forward under
inference mode; excitation backprop (``rule`` with the CAM layer) runs on the layer. All maps are
float32 on the images' device.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

from explainers.fast import FastModel, fast_model
from explainers.layers import Reshape, layer_reader, layout, resolve_layer
from explainers.methods.cam import upsample
from explainers.methods.cam_family import forward_with_activation
from explainers.methods.common import (
    autocast_context,
    check_activations,
    check_differentiable,
    check_output,
    fresh_input,
    grad_enabled_session,
    model_session,
    one_hot,
)
from explainers.registry import METHODS, SHARED_FAMILIES, STIMULUS_FAMILIES, MethodSpec, get_spec
from explainers.rules import RULES, Rule, RuleState, rectifier_rules

Pass = Literal["shared", "activation", "layer", "per_target", "all_targets", "stimulus"]


def pass_of(spec: MethodSpec) -> Pass:
    """Which routine of :func:`explain` runs a method, from its registry family:

    ``shared`` (families ``gradient``, ``cam``, ``product``: :func:`_shared_pass`), ``activation``
    (:func:`_activation_cams`), ``layer`` (family ``rule`` with ``needs_layer``:
    :func:`_layer_rule_maps`), ``all_targets`` (``perturbation``: one call for every target) and
    ``per_target`` (``sampled`` and ``rule`` without the layer: one call per target column);
    ``stimulus`` (:data:`~explainers.registry.STIMULUS_FAMILIES`: no map, which :func:`explain` refuses).
    """
    if spec.family in STIMULUS_FAMILIES:
        return "stimulus"
    if spec.family in SHARED_FAMILIES:
        return "shared"
    if spec.family == "activation":
        return "activation"
    if spec.family == "rule" and spec.needs_layer:
        return "layer"
    if spec.family == "perturbation":
        return "all_targets"
    return "per_target"


@functools.cache
def _load(path: str) -> Callable[..., Any]:
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


def method_function(name: str) -> Callable[..., Any]:
    """The function the registry names for ``name`` (``MethodSpec.function``, ``"module:attribute"``)."""
    spec = METHODS[name]
    if spec.function is None:
        raise ValueError(f"method {name!r} ({spec.family}) is computed by the shared pass, not a function")
    return _load(spec.function)


for _spec in METHODS.values():  # every implementation imported (and its path checked) with the engine
    if _spec.function is not None:
        _load(_spec.function)


def _layer_rule_maps(
    model: nn.Module, images: torch.Tensor, classes: torch.Tensor, names: list[str],
    layer: str | nn.Module | None, kwargs: Mapping[str, dict], autocast_dtype: torch.dtype | None,
    layer_maps: bool, fast: bool,
) -> dict[str, torch.Tensor]:
    """Maps ``[B, K, H, W]`` (and ``"<name>@layer"`` when ``to="layer"``) of the ``rule`` methods that
    use the CAM layer (excitation backprop): one call per target column, on the fast copy with the
    CAM layer kept (its BatchNorms folded, which the rule does too), upsampled like a CAM. Their
    option ``to`` (default ``"layer"``) says whether the CAM layer is used at all."""
    wanted = [name for name in names if pass_of(METHODS[name]) == "layer"]
    if not wanted:
        return {}
    size = tuple(images.shape[-2:])
    out: dict[str, torch.Tensor] = {}
    for name in wanted:
        function = method_function(name)
        to_layer = kwargs[name].get("to", "layer") == "layer"
        module = resolve_layer(model, layer, example=images)[1] if to_layer else None
        runner = fast_model(model, keep=module, example=images) if fast else model
        hooked = (runner.hook_module(module) if isinstance(runner, FastModel) else module) if to_layer else None
        low = torch.stack([function(runner, images, classes[:, k], hooked, autocast_dtype=autocast_dtype,
                                    **kwargs[name]) for k in range(classes.shape[1])], dim=1)
        out[name] = upsample(low, size) if low.shape[-2:] != size else low
        if layer_maps and to_layer:
            out[name + "@layer"] = low
    return out


def _activation_cams(
    model: nn.Module, images: torch.Tensor, classes: torch.Tensor, names: list[str],
    layer: str | nn.Module | None, kwargs: Mapping[str, dict], autocast_dtype: torch.dtype | None,
    layer_maps: bool, fast: bool, reshape: Reshape | None,
) -> dict[str, torch.Tensor]:
    """Maps ``[B, K, H, W]`` (and ``"<name>@layer"``) of the forward-only CAM family members
    (family ``activation``): one forward under inference mode keeps the CAM layer's activation and
    the logits, then each computes its own channel weights; the batched forwards of a method whose
    ``perturbs`` is ``"input"`` run on a fast copy that need not keep the layer."""
    wanted = [name for name in names if pass_of(METHODS[name]) == "activation"]
    if not wanted:
        return {}
    layer_name, module = resolve_layer(model, layer, example=images)
    runner = fast_model(model, keep=module, example=images) if fast else model
    hooked = runner.hook_module(module) if isinstance(runner, FastModel) else module
    size = tuple(images.shape[-2:])
    lows: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        output, raw = forward_with_activation(runner, images, hooked, layer_name, autocast_dtype)
        logits = check_output(output, images.shape[0], classes).float()
        activation = layer_reader(layer_name, raw, size, reshape)(raw).float().contiguous()
        for name in wanted:
            perturbs = METHODS[name].perturbs
            if perturbs == "layer" and (reshape is not None or layout(raw, size) != "nchw"):
                raise ValueError(f"{name} needs a [B, C, h, w] CAM layer output; {layer_name!r} "
                                 f"gives {tuple(raw.shape)}")
            forwards = fast_model(model, example=images) if fast and perturbs == "input" else runner
            lows[name] = method_function(name)(forwards, images, classes, activation, logits, model, hooked,
                                               autocast_dtype=autocast_dtype, **kwargs[name])
    out: dict[str, torch.Tensor] = {}
    for name, low in lows.items():
        low = low.clone()  # a normal tensor, usable outside inference mode
        out[name] = upsample(low, size)
        if layer_maps:
            out[name + "@layer"] = low
    return out


def _model_dtype(model: nn.Module) -> torch.dtype | None:
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return None


def _check_images(model: nn.Module, images: Any) -> torch.Tensor:
    """The one image check of every path: a non-empty, finite float ``[B, C, H, W]`` tensor,
    cast to the model's floating dtype (the first floating parameter's or buffer's)."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        shape = (f"{tuple(images.shape)} {images.dtype}" if isinstance(images, torch.Tensor)
                 else type(images).__name__)
        raise ValueError(f"images must be a float tensor [B, C, H, W], got {shape}")
    if images.shape[0] == 0 or images.numel() == 0:
        raise ValueError(f"images is an empty batch (shape {tuple(images.shape)}); nothing to explain")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("images contain NaN or Inf values; every pixel must be finite")
    dtype = _model_dtype(model)
    if dtype is not None and images.dtype != dtype:
        images = images.to(dtype)
    return images


def _classes(targets: torch.Tensor | Sequence[int], batch: int, device: torch.device) -> tuple[torch.Tensor, bool]:
    tensor = torch.as_tensor(targets)
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"targets must be integer class indices, got dtype {tensor.dtype}")
    if tensor.numel() and int(tensor.min()) < 0:
        raise ValueError(f"target classes must be >= 0, got {tensor.flatten().tolist()[:16]}")
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


def _with_factors(names: Sequence[str]) -> list[str]:
    """``names`` followed by the maps their products multiply (``MethodSpec.requires``) not already in it."""
    needed = list(names)
    for name in names:
        needed += [factor for factor in METHODS[name].requires if factor not in needed]
    return needed


def _input_rules(names: Sequence[str]) -> list[Rule]:
    """The rules of the shared pass's backwards to the input: ``backward_rule`` of the requested
    ``gradient`` and ``product`` methods, in request order."""
    rules: list[Rule] = []
    for name in names:
        spec = METHODS[name]
        if spec.family in ("gradient", "product") and spec.backward_rule not in rules:
            rules.append(spec.backward_rule)
    return rules


def _cams_needed(names: Sequence[str]) -> list[str]:
    """The CAM maps to compute: the requested ones, plus the CAM factors of the products."""
    return [n for n in _with_factors(names) if METHODS[n].family == "cam"]


def _shared_pass(
    model: nn.Module,
    images: torch.Tensor,
    classes: torch.Tensor,
    names: list[str],
    cam_layer: tuple[str, nn.Module] | None,
    autocast_dtype: torch.dtype | None,
    layer_maps: bool,
    reshape: Reshape | None = None,
) -> dict[str, torch.Tensor]:
    """One forward, one backward per (rule, target): every gradient/CAM/product map.

    ``cam_layer`` is the resolved ``(name, module)`` of the CAM layer, a module that ``model``
    calls (``None`` when no CAM map is wanted).
    """
    needed = _with_factors(names)
    gradients = [n for n in needed if METHODS[n].family == "gradient"]
    products = [n for n in names if METHODS[n].family == "product"]
    input_rules = _input_rules(names)
    cams = _cams_needed(names)
    layer_rules = {METHODS[cam].backward_rule for cam in cams}
    need_layer = bool(cams)
    cut = need_layer and not input_rules  # CAM only: no autograd before the layer
    backward_rules: list[Rule] = [r for r in RULES if r in input_rules or r in layer_rules]
    ruled = any(r != "plain" for r in backward_rules)

    x = fresh_input(images) if input_rules else images.detach()
    captured: dict[str, Any] = {}
    handle = None
    if need_layer:
        assert cam_layer is not None, "CAM maps need the resolved CAM layer"
        layer_name, module = cam_layer

        def keep_activation(mod: nn.Module, inputs: Any, output: Any) -> torch.Tensor:
            # [B, C, h, w], channels-last or tokens, read by the layer's reader; else refused
            captured["reader"] = layer_reader(layer_name, output, tuple(images.shape[-2:]), reshape)
            activation = output
            if cut and not output.requires_grad:
                torch.set_grad_enabled(True)  # restored when the forward's no_grad block exits
                activation = output.detach().requires_grad_(True)
            captured["activation"] = activation
            return activation.clone()

        target = model.hook_module(module) if isinstance(model, FastModel) else module
        handle = target.register_forward_hook(keep_activation)
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
    check_output(logits, images.shape[0], classes)
    for rule in input_rules:
        check_activations(state, rule)
    check_differentiable(logits, "gradient and CAM methods")

    size = tuple(images.shape[-2:])
    per_target: dict[str, list[torch.Tensor]] = {}

    def add(key: str, value: torch.Tensor) -> None:
        per_target.setdefault(key, []).append(value)

    steps = [(k, rule) for k in range(classes.shape[1]) for rule in backward_rules]
    for index, (k, rule) in enumerate(steps):
        vector = one_hot(logits, classes[:, k])
        wrt = ([x] if rule in input_rules else []) + ([activation] if rule in layer_rules else [])
        state.set(rule)
        grads = torch.autograd.grad(logits, wrt, vector, retain_graph=index < len(steps) - 1)
        if rule in input_rules:
            grad_x = grads[0].float()
            for name in gradients:
                if METHODS[name].backward_rule == rule:
                    add(name, x.detach() * grad_x if METHODS[name].times_input else grad_x)
        if rule in layer_rules:
            read = captured["reader"]
            grad_a, maps_a = read(grads[-1]), read(activation.detach())
            for cam in cams:
                if METHODS[cam].backward_rule == rule:
                    low = method_function(cam)(maps_a, grad_a)
                    add(cam + "@layer", low)
                    add(cam, upsample(low, size))
    for k in range(classes.shape[1]):
        for name in products:
            channel_map, spatial_map = METHODS[name].requires
            add(name, per_target[channel_map][k] * per_target[spatial_map][k].unsqueeze(1))
    wanted = set(names) | ({c + "@layer" for c in cams if c in names} if layer_maps else set())
    return {key: torch.stack(maps, dim=1) for key, maps in per_target.items() if key in wanted}


def explain(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor | Sequence[int],
    methods: Sequence[str] | str,
    layer: str | nn.Module | None = None,
    *,
    reshape: Reshape | None = None,
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
        methods: names from :data:`explainers.registry.METHODS` (one name as a string is
            one method).
        layer: CAM layer (dotted path or module); ``None`` = default, see
            :func:`explainers.layers.resolve_layer`.
        reshape: how to read the CAM layer's output as ``[B, K, h, w]`` when it is neither
            that, channels-last ``[B, h, w, K]`` nor tokens ``[B, 1+N, K]`` (recognised
            without it; :func:`explainers.layers.layer_reader`).
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
            float rounding (~1e-6 relative). The copy is checked against the model first;
            when it cannot be trusted the model runs as given, with one ``RuntimeWarning``.
            ``False`` runs the model exactly as given.

    Returns:
        ``{method: map}``; ``[B, (K,) C, H, W]`` signed for channel methods,
        ``[B, (K,) H, W]`` for CAM, occlusion and RISE maps (``MethodSpec.output``).

    Raises:
        ValueError: unknown method or option, option out of range, bad image/target shapes
            or values, a model output that is not ``[B, classes]`` logits, unknown or
            uninterpretable layer, guided/deconvnet rules on a non-ReLU net, a model with no
            gradient to its input for gradient methods.
    """
    images = _check_images(model, images)
    if isinstance(methods, str):
        methods = [methods]
    names = list(dict.fromkeys(methods))
    if not names:
        raise ValueError("methods is empty; known: " + ", ".join(METHODS))
    specs = {name: get_spec(name) for name in names}
    stimuli = [name for name in names if pass_of(specs[name]) == "stimulus"]
    if stimuli:
        raise ValueError(
            f"{stimuli} are no attribution maps (family {specs[stimuli[0]].family!r}): explain() does not compute "
            f"them; their functions ({', '.join(str(specs[n].function) for n in stimuli)}) give what the stimulus "
            f"shows, and the studies pipeline draws it")
    options = dict(options or {})
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ValueError(f"options given for methods not requested: {unknown}")
    kwargs = {  # the shared pass's methods take no options
        name: _method_options(name, options, None if pass_of(specs[name]) == "shared" else method_function(name))
        for name in names
    }
    classes, single = _classes(targets, images.shape[0], images.device)
    shared = [n for n in names if pass_of(specs[n]) == "shared"]
    results: dict[str, torch.Tensor] = {}
    with model_session(model), grad_enabled_session():
        if shared:
            cam_layer = resolve_layer(model, layer, example=images) if _cams_needed(shared) else None
            runner = (fast_model(model, keep=cam_layer[1] if cam_layer else None, example=images)
                      if fast else model)
            results.update(_shared_pass(runner, images, classes, shared, cam_layer, autocast_dtype,
                                        layer_maps, reshape))
        results.update(_activation_cams(model, images, classes, names, layer, kwargs, autocast_dtype,
                                        layer_maps, fast, reshape))
        results.update(_layer_rule_maps(model, images, classes, names, layer, kwargs, autocast_dtype,
                                        layer_maps, fast))
        own_passes = [name for name in names if pass_of(specs[name]) in ("per_target", "all_targets")]
        runner = fast_model(model, example=images) if fast and own_passes else model  # built only when used
        for name in own_passes:
            function = method_function(name)
            if pass_of(specs[name]) == "per_target":
                results[name] = torch.stack([
                    function(runner, images, classes[:, k], autocast_dtype=autocast_dtype, **kwargs[name])
                    for k in range(classes.shape[1])
                ], dim=1)
            else:
                results[name] = function(runner, images, classes, autocast_dtype=autocast_dtype, **kwargs[name])
    ordered = {name: results[name].float().contiguous() for name in names}
    ordered.update({k: v.float().contiguous() for k, v in results.items() if k.endswith("@layer")})
    if single:
        ordered = {k: v.squeeze(1) for k, v in ordered.items()}
    return ordered
