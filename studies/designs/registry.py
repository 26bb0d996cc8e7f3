"""The design registry: one :class:`~studies.designs.base.Design` per study kind.

A *design* is one kind of human study ("What do you see?", "Which robot is more reasonable?",
...). Everything that differs between kinds is declared by the design, in its own module of this
package; nothing outside ``studies/designs/`` branches on ``Study.kind`` (checked by
``tests/test_architecture.py``).

This module is a leaf: it imports no model, so ``studies.models`` can take its ``kind`` choices
from :func:`kind_choices`. The design modules of the package (every module beside this one whose
name does not start with ``_`` and is not ``base``, ``options`` or ``registry``) are imported the first time a
design is asked for, and each registers itself with :func:`register`. A design kept elsewhere
(a test's, a plug-in's) registers the same way, by importing its module.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from studies.designs.base import Design

_DESIGNS: dict[str, Design] = {}
_discovered = False
_NOT_DESIGNS = {"base", "options", "registry"}


class UnknownDesign(LookupError):
    """A study kind no registered design declares."""


def register(design: Design) -> Design:
    """Add ``design`` under ``design.name`` (a second design of the same name replaces the first:
    re-importing a module is harmless). Returns it, so a module can write ``DESIGN = register(X())``."""
    if not design.name or not design.name.isidentifier():
        raise ValueError(f"a design's name must be an identifier, got {design.name!r}")
    _DESIGNS[design.name] = design
    return design


def unregister(name: str) -> None:
    """Remove a design (tests that register their own)."""
    _DESIGNS.pop(name, None)


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    package = importlib.import_module("studies.designs")
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_") and info.name not in _NOT_DESIGNS:
            importlib.import_module(f"studies.designs.{info.name}")


def designs() -> list[Design]:
    """Every registered design, in registration order (the package's modules alphabetically first)."""
    _discover()
    return list(_DESIGNS.values())


def design_for(kind: Any) -> Design:
    """The design of a study kind; ``kind`` is the kind's name or anything with a ``kind`` attribute
    (a ``Study``). Raises :class:`UnknownDesign` naming the registered kinds."""
    _discover()
    name = getattr(kind, "kind", kind)
    name = getattr(name, "value", name)
    try:
        return _DESIGNS[str(name)]
    except KeyError:
        raise UnknownDesign(f"no study design {name!r}; registered: {', '.join(sorted(_DESIGNS))}") from None


def kind_choices() -> list[tuple[str, str]]:
    """``(name, label)`` of every design: the choices of ``Study.kind`` (a callable, so a new design
    needs no migration)."""
    return [(d.name, d.label) for d in designs()]
