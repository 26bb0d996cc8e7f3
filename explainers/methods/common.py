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


def one_hot(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Backward vector ``e_{c_b}`` per row: ``[B, num_classes]`` in the logits' dtype.

    Using it as ``grad_outputs`` gives ``d y_{b, c_b} / d input_b`` for every image in
    one backward (images are independent in eval mode)."""
    if logits.dim() != 2:
        raise ValueError(f"model output must be [B, num_classes] logits, got {tuple(logits.shape)}")
    if int(classes.max()) >= logits.shape[1] or int(classes.min()) < 0:
        raise ValueError(
            f"target class out of range [0, {logits.shape[1]}): {classes.tolist()}"
        )
    vec = torch.zeros_like(logits)
    vec.scatter_(1, classes.view(-1, 1).to(logits.device), 1.0)
    return vec


def fresh_input(images: torch.Tensor) -> torch.Tensor:
    """A float leaf copy of ``images`` that requires grad (works for inference tensors)."""
    return images.detach().clone().float().requires_grad_(True)


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
    with rules, autocast_context(x.device, autocast_dtype):
        logits = model(x)
    (grad,) = torch.autograd.grad(logits, x, one_hot(logits, classes))
    return grad.float().contiguous()  # a channels-last model hands back a channels-last gradient


def grad_enabled_session() -> contextlib.ExitStack:
    """Leave inference mode / no_grad for a gradient computation."""
    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode(False))
    stack.enter_context(torch.enable_grad())
    return stack
