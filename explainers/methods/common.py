"""Shared plumbing: model-state guard, autocast forward, target vectors, input gradients."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from explainers.rules import Rule, RuleState, rectifier_rules


@contextlib.contextmanager
def model_session(model: nn.Module) -> Iterator[None]:
    """Evaluate ``model`` in eval mode and restore every module's ``training`` flag and
    every parameter's ``requires_grad`` on exit (also on error). Gradients are never
    accumulated into parameters because all backward passes use ``torch.autograd.grad``
    with respect to inputs or activations only; parameters are also frozen
    (``requires_grad=False``) for the session, so the forward records no weight-gradient
    inputs and the backward graph only spans what depends on the input."""
    training = [(module, module.training) for module in model.modules()]
    requires = [(param, param.requires_grad) for param in model.parameters()]
    try:
        model.eval()
        for param, _ in requires:
            param.requires_grad_(False)
        yield
    finally:
        for module, flag in training:
            module.training = flag
        for param, flag in requires:
            if param.requires_grad != flag:
                param.requires_grad_(flag)


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for the forward when ``dtype`` is given, else a no-op."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def check_output(output: object, rows: int, classes: torch.Tensor | None = None) -> torch.Tensor:
    """The model output as ``[rows, num_classes]`` logits, or a ``ValueError`` saying what it is.

    Every path (shared pass, sampled, perturbation) calls this on its first forward, so a model
    returning a tuple / dict / ``[B]`` / ``[B, C, h, w]`` and out-of-range ``classes`` fail with
    the same message everywhere.
    """
    if not isinstance(output, torch.Tensor):
        kind = type(output).__name__
        if isinstance(output, tuple | list) and output:
            kind += " of " + ", ".join(type(o).__name__ for o in output[:3])
        raise ValueError(
            f"the model must return a [B, num_classes] tensor of logits, got a {kind}; wrap it so "
            "that forward returns the logits tensor only"
        )
    if output.dim() != 2 or output.shape[0] != rows:
        raise ValueError(
            f"the model must return [B, num_classes] logits with B={rows}, got shape {tuple(output.shape)}"
        )
    if classes is not None and classes.numel():
        low, high = int(classes.min()), int(classes.max())
        if low < 0 or high >= output.shape[1]:
            raise ValueError(
                f"target class out of range [0, {output.shape[1]}) for a model with "
                f"{output.shape[1]} outputs: {classes.flatten().tolist()[:16]}"
            )
    return output


def check_differentiable(logits: torch.Tensor, what: str = "gradient methods") -> None:
    """Refuse when the model as run has no gradient path from the input to its logits
    (e.g. its forward runs under ``torch.no_grad()``): never an invented map."""
    if not logits.requires_grad:
        raise ValueError(
            f"the model's output does not depend differentiably on its input (its forward cuts "
            f"the graph, e.g. a torch.no_grad() block or .detach()); {what} have no gradient to show"
        )


def check_activations(state: RuleState, rule: Rule) -> None:
    """Refuse guided/deconvnet rules on a forward that called a non-ReLU activation."""
    if rule != "plain" and state.other_activations:
        names = ", ".join(a.upper() if len(a) <= 4 else a for a in state.other_activations)
        raise ValueError(
            f"the {rule} backward rule is defined for ReLU-family rectifiers only, but the model "
            f"uses {names}; guided backprop, deconvnet, guided/deconv Grad-CAM and SmoothGrad on "
            "them are refused on such nets (see docs/explainers.md, 'Rules on activations other "
            "than ReLU'); use saliency, input_x_gradient or a CAM method"
        )


def one_hot(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Backward vector ``e_{c_b}`` per row: ``[B, num_classes]`` in the logits' dtype.

    Using it as ``grad_outputs`` gives ``d y_{b, c_b} / d input_b`` for every image in
    one backward (images are independent in eval mode)."""
    check_output(logits, logits.shape[0] if isinstance(logits, torch.Tensor) and logits.dim() else -1, classes)
    vec = torch.zeros_like(logits)
    vec.scatter_(1, classes.view(-1, 1).to(logits.device), 1.0)
    return vec


def fresh_input(images: torch.Tensor) -> torch.Tensor:
    """A leaf copy of ``images`` (same dtype) that requires grad (works for inference tensors)."""
    return images.detach().clone().requires_grad_(True)


def input_gradients(
    model: nn.Module,
    inputs: torch.Tensor,
    classes: torch.Tensor,
    rule: Rule = "plain",
    *,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``d y_c / d x`` for a batch under a rectifier ``rule``: one forward, one backward.

    The caller is responsible for :func:`model_session` and for enabling grad.
    Returns float32 ``[N, C, H, W]``.
    """
    x = fresh_input(inputs)
    state = RuleState(rule)
    rules = rectifier_rules(model, state) if rule != "plain" else contextlib.nullcontext()
    with rules as ruled, autocast_context(x.device, autocast_dtype):
        logits = model(x)
    check_output(logits, x.shape[0], classes)
    if ruled is not None:
        check_activations(ruled, rule)
    check_differentiable(logits)
    (grad,) = torch.autograd.grad(logits, x, one_hot(logits, classes))
    return grad.float().contiguous()  # a channels-last model hands back a channels-last gradient


def grad_enabled_session() -> contextlib.ExitStack:
    """Leave inference mode / no_grad for a gradient computation."""
    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode(False))
    stack.enter_context(torch.enable_grad())
    return stack
