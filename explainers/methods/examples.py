"""Stimuli that are no attribution map (registry family ``example``; issue #16).

* :func:`image_only`: the picture itself (a "no explanation" or "confidence only" arm).
* :func:`nearest_examples`: an example-based explanation, the ``k`` reference images nearest to
  the query in the model's penultimate feature space (Nguyen et al., 2021, "3 nearest training
  examples").

The **penultimate features** of a model are the input of its final linear layer: the last
``nn.Linear`` registered in the model (:func:`penultimate_layer`), read by a forward hook, and
accepted only when that layer's output is the model's logits (so it is the classifier head). A
model without one is refused with a ``ValueError`` naming it.

**Neighbour rule** (:func:`nearest_indices`): cosine similarity ``<q, r> / (|q| |r|)`` (norms
floored at 1e-12) in float64; a reference that is the query itself (``exclude``) is never a
candidate; candidates labelled with the target class come first (nearest first), then the others
(nearest first), ties broken by the lower reference index. So the ``k`` neighbours are all of the
target class whenever at least ``k`` such references exist, and are filled up with the nearest
other references otherwise. Fewer than ``k`` candidates in all is a ``ValueError``.

:func:`explainers.explain` refuses these methods; the studies pipeline calls the functions below
(named by the registry's ``function`` field) and draws their result.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from contextlib import nullcontext

import numpy as np
import torch
from torch import nn

__all__ = ["image_only", "nearest_examples", "nearest_indices", "penultimate_features", "penultimate_layer"]


def image_only(model: nn.Module | None, images: torch.Tensor, classes: torch.Tensor, *,
               autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """The pictures themselves for every target: ``[B, K, C, H, W]`` (``images`` ``[B, C, H, W]``,
    ``classes`` ``[B, K]``); the model is not run."""
    del model, autocast_dtype
    k = classes.shape[1] if classes.dim() == 2 else 1
    return images.unsqueeze(1).expand(-1, k, *images.shape[1:])


def penultimate_layer(model: nn.Module) -> tuple[str, nn.Linear]:
    """``(name, module)`` of the last ``nn.Linear`` registered in ``model`` (its classifier head).

    Raises:
        ValueError: the model has no ``nn.Linear``.
    """
    found = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not found:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer: its penultimate features (the input of "
                         "the final linear classifier) cannot be read")
    return found[-1]


def penultimate_features(model: nn.Module, images: torch.Tensor, *, batch_size: int = 64,
                         autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """The input of the model's final linear layer for ``images`` (preprocessed, ``[B, C, H, W]``),
    ``[B, D]`` float32 on the CPU, in eval mode under ``torch.inference_mode`` (the model's
    train/eval flag is restored).

    Raises:
        ValueError: no ``nn.Linear``; the last one is not called, or its output is not the logits
            (so it is not the classifier head).
    """
    name, head = penultimate_layer(model)
    seen: list[torch.Tensor] = []
    outputs: list[torch.Tensor] = []

    def keep(_module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        seen.append(inputs[0].detach())
        outputs.append(output.detach())

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    handle = head.register_forward_hook(keep)
    features = []
    try:
        model.eval()
        autocast = (torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype is not None
                    else nullcontext())
        with torch.inference_mode(), autocast:
            for start in range(0, images.shape[0], batch_size):
                seen.clear()
                outputs.clear()
                logits = model(images[start:start + batch_size].to(device))
                if not seen:
                    raise ValueError(f"the last nn.Linear {name!r} of {type(model).__name__} was not called in the "
                                     "forward pass: no penultimate features")
                if outputs[-1].shape != logits.shape or not torch.equal(outputs[-1], logits):
                    raise ValueError(f"the last nn.Linear {name!r} of {type(model).__name__} does not give the "
                                     f"logits (its output {tuple(outputs[-1].shape)}, the model's "
                                     f"{tuple(logits.shape)}): it is not the classifier head")
                features.append(seen[-1].flatten(1).float().cpu())
    finally:
        handle.remove()
        model.train(was_training)
    return torch.cat(features) if features else torch.zeros(0, head.in_features)


def nearest_indices(query: torch.Tensor | np.ndarray, reference: torch.Tensor | np.ndarray,
                    classes: torch.Tensor | np.ndarray, *, k: int,
                    reference_labels: Sequence[Collection[int]] | None = None,
                    exclude: torch.Tensor | np.ndarray | None = None) -> np.ndarray:
    """Indices ``[B, K, k]`` into ``reference`` ``[N, D]`` of the neighbours of ``query`` ``[B, D]``
    for each target class ``classes`` ``[B, K]``, by the module's neighbour rule.

    ``reference_labels``: per reference, the classes it is labelled with (``None``: no labels,
    plain nearest neighbours); ``exclude``: ``[B, N]`` bool, references never chosen for that
    query (the query itself).
    """
    q = np.asarray(query, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    cls = np.asarray(classes).reshape(q.shape[0], -1)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    r = r / np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-12)
    similarity = q @ r.T  # [B, N]
    n = r.shape[0]
    banned = np.zeros((q.shape[0], n), dtype=bool) if exclude is None else np.asarray(exclude, dtype=bool)
    order = np.arange(n)
    out = np.zeros((q.shape[0], cls.shape[1], k), dtype=np.int64)
    for b in range(q.shape[0]):
        candidates = order[~banned[b]]
        if candidates.size < k:
            raise ValueError(f"the reference set has {candidates.size} images besides the query; k={k} needs at least {k}")
        for j, target in enumerate(cls[b]):
            labelled = (np.array([int(target) in set(reference_labels[i]) for i in candidates])
                        if reference_labels is not None else np.zeros(candidates.size, dtype=bool))
            # lexsort: the last key is the primary one
            ranked = np.lexsort((candidates, -similarity[b, candidates], ~labelled))
            out[b, j] = candidates[ranked[:k]]
    return out


def nearest_examples(model: nn.Module, images: torch.Tensor, classes: torch.Tensor, *,
                     reference_features: torch.Tensor, reference_labels: Sequence[Collection[int]] | None = None,
                     exclude: torch.Tensor | None = None, k: int = 3,
                     autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Indices ``[B, K, k]`` (long) into the reference set of each query's ``k`` nearest examples
    for each target (``classes`` ``[B, K]``): the queries' penultimate features
    (:func:`penultimate_features` of ``images``, preprocessed) against ``reference_features``
    ``[N, D]`` (computed the same way), by :func:`nearest_indices`."""
    query = penultimate_features(model, images, autocast_dtype=autocast_dtype)
    classes = classes if classes.dim() == 2 else classes.unsqueeze(1)
    return torch.from_numpy(nearest_indices(query, reference_features, classes.cpu(), k=k,
                                            reference_labels=reference_labels,
                                            exclude=None if exclude is None else exclude.cpu()))
