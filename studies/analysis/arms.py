"""Analysis by between-subject arm: any analysis run on each arm's judgments (no Django).

A study with arms gives each participant one arm (``Judgments.arm``). The by-arm analysis is
the study's own analysis (whatever table its design runs) on each arm's judgments, so a
per-arm row is exactly the whole-study row one would get from a study holding only that
arm's participants. Judgments of workers without an arm (code ``-1``) are in the whole-study
analysis only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any, TypeVar

import numpy as np

from studies.analysis.judgments import Judgments

__all__ = ["analyse_by_arm", "arm_judgments"]

T = TypeVar("T")


def arm_judgments(j: Judgments) -> tuple[tuple[str, Judgments], ...]:
    """Each arm's judgments (catch trials included, for the exclusion rules), in ``arm_names`` order.

    An arm's ``method_names`` are narrowed to the methods with a main judgment in the arm, in
    the study's order (an arm shows only its methods, so its table has no empty rows); a catch
    judgment whose method is not among them takes code 0 (catch trials never enter the
    statistics). An arm without main judgments keeps every method name. Worker and item codes
    are kept, so the cluster bootstrap draws the same workers and items as on a study of the
    arm alone. ``()`` for judgments without arms.
    """
    if j.arm is None:
        return ()
    out = []
    for code, name in enumerate(j.arm_names):
        part = j.subset(j.arm == code)
        used = np.unique(part.method[~part.is_catch])
        if used.size and used.size < len(part.method_names):
            new_code = np.zeros(len(part.method_names), dtype=np.intp)
            new_code[used] = np.arange(used.size)
            narrowed = {"method": new_code[part.method],
                        "method_names": tuple(part.method_names[m] for m in used.tolist())}  # fmt: skip
            part = Judgments(**{**_fields_of(part), **narrowed})
        out.append((name, part))
    return tuple(out)


def _fields_of(j: Judgments) -> dict[str, Any]:
    return {f.name: getattr(j, f.name) for f in fields(j)}


def analyse_by_arm(j: Judgments, analyse: Callable[[Judgments], T]) -> tuple[tuple[str, T], ...]:
    """``(arm name, analyse(arm's judgments))`` for each arm (:func:`arm_judgments`); ``()`` without arms."""
    return tuple((name, analyse(part)) for name, part in arm_judgments(j))
