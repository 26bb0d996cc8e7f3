"""xaistudy explainers: pure-PyTorch visual explanations, planned and batched.

Public surface: :func:`explain`, :data:`METHODS` / :class:`MethodSpec`,
:func:`resolve_layer`, the rectifier rules in :mod:`explainers.rules`.
"""

from explainers.engine import explain
from explainers.layers import resolve_layer
from explainers.registry import METHODS, MethodSpec

__all__ = ["METHODS", "MethodSpec", "explain", "resolve_layer"]
