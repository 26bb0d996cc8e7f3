"""xaistudy explainers: pure-PyTorch visual explanations, planned and batched.

Public surface: :func:`explain`, :data:`METHODS` / :class:`MethodSpec`,
:func:`resolve_layer`, the rectifier rules in :mod:`explainers.rules`.

Imports are lazy (PEP 562): ``import explainers.registry`` (the method names and their
descriptions) does not import torch, so the web process can validate a study's methods against
the registry; ``explainers.explain`` and ``explainers.resolve_layer`` import the engine on first use.
"""

from __future__ import annotations

from typing import Any

from explainers.registry import METHODS, MethodSpec

__all__ = ["METHODS", "MethodSpec", "explain", "resolve_layer"]


def __getattr__(name: str) -> Any:
    if name == "explain":
        from explainers.engine import explain

        return explain
    if name == "resolve_layer":
        from explainers.layers import resolve_layer

        return resolve_layer
    raise AttributeError(f"module 'explainers' has no attribute {name!r}")
