"""Numbers as the results page writes them (no Django): fixed decimals, p-values, ``–`` for unknown.

Used by the designs' results rows (``Design.results_row``) and the results views.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["UNKNOWN", "number_text", "p_text", "percent_text"]

#: What the page writes for a value that is missing or not finite.
UNKNOWN = "–"


def number_text(value: Any, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals; :data:`UNKNOWN` for ``None``, NaN or an infinity."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return UNKNOWN
    return f"{value:.{digits}f}"


def p_text(value: float) -> str:
    """A p-value: ``<0.001`` below 0.001, else three decimals; :data:`UNKNOWN` when not finite."""
    if not math.isfinite(value):
        return UNKNOWN
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def percent_text(share: float, digits: int = 2) -> str:
    """A share as a percentage with ``digits`` decimals (``0.5`` -> ``50.00%``); :data:`UNKNOWN` when not finite."""
    return f"{100 * share:.{digits}f}%" if math.isfinite(share) else UNKNOWN
