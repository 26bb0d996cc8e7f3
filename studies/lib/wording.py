"""What a study's staff-set wording may contain, checked when the study is saved (no Django).

The worker pages show ``Study.question`` and the texts of ``Study.wording`` (a JSON object;
missing keys take the defaults in :mod:`studies.selectors.participation`). Only one text is
filled in by the page: ``predicted``, with ``{label}`` (the class both robots predicted); every
other text is shown as written, braces included. A template the page cannot fill (``{x}``,
``{label.upper}``, ``{label:>9}``, an unmatched ``{``) would raise inside the worker page, so
:func:`wording_errors` reports it as a form error when the study is saved, and
:func:`template_fill` (used by the page) never raises: it answers ``None`` for such a template,
and the caller falls back to the default text.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

__all__ = [
    "PLACEHOLDERS",
    "SCALE_POINTS",
    "TEXT_KEYS",
    "WORDING_KEYS",
    "template_error",
    "template_fill",
    "wording_errors",
]

#: The wording keys shown as plain text.
TEXT_KEYS = ("robot_a", "robot_b", "predicted", "comment", "discrimination_hint", "trust_hint")
#: The trust answer scale: exactly this many labels, from "A clearly" to "B clearly".
SCALE_POINTS = 5
WORDING_KEYS = (*TEXT_KEYS, "scale")
#: Keys filled with ``str.format``-style placeholders, and the placeholders each may use.
PLACEHOLDERS: dict[str, frozenset[str]] = {"predicted": frozenset({"label"})}
#: Longest text accepted for one wording value (a page label, not an essay).
MAX_TEXT = 2000

_FORMATTER = string.Formatter()


def template_error(template: str, allowed: frozenset[str] | set[str]) -> str | None:
    """Why ``template`` cannot be filled with ``allowed`` names, or ``None`` when it can.

    Only bare names are accepted (``{label}``): no positional ``{}``, no attribute or index
    (``{label.x}``, ``{label[0]}``), no conversion (``!r``) and no format spec (``:>9``, which
    could also ask for a huge padding). ``{{`` and ``}}`` stand for literal braces.
    """
    names = ", ".join("{" + name + "}" for name in sorted(allowed)) or "none"
    try:
        parts = list(_FORMATTER.parse(template))
    except ValueError as exc:  # "Single '}' encountered", "expected '}' before end of string"
        return f"braces do not match ({exc}); write {{{{ and }}}} for literal braces; placeholders allowed: {names}"
    for _literal, field, spec, conversion in parts:
        if field is None:
            continue
        if field not in allowed or spec or conversion:
            shown = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            return f"the placeholder {shown} cannot be filled; placeholders allowed: {names} (write {{{{ and }}}} for literal braces)"
    return None


def template_fill(template: str, allowed: frozenset[str] | set[str], **values: Any) -> str | None:
    """``template`` with its placeholders filled, or ``None`` if :func:`template_error` refuses it."""
    if template_error(template, allowed) is not None:
        return None
    return template.format(**{name: values.get(name, "") for name in allowed})


def wording_errors(kind: str, wording: Any, question: Any = "") -> dict[str, str]:
    """Problems with a study's wording, as ``{form field: message}`` (empty when it is fine).

    Args:
        kind: The study kind (``"class_discrimination"`` or ``"trust"``); the scale and the
            robot labels are used by trust studies but checked for both.
        wording: The ``Study.wording`` value (decoded JSON).
        question: The ``Study.question`` text (shown as written; only its type is checked).
    """
    errors: dict[str, str] = {}
    if question is not None and not isinstance(question, str):
        errors["question"] = "must be text"
    if wording in (None, ""):
        return errors
    if not isinstance(wording, Mapping):
        errors["wording"] = f"must be a JSON object with some of the keys {', '.join(WORDING_KEYS)}"
        return errors
    problems: list[str] = []
    unknown = sorted(str(key) for key in wording if key not in WORDING_KEYS)
    if unknown:
        problems.append(f"unknown key(s) {', '.join(unknown)}; the keys are {', '.join(WORDING_KEYS)}")
    for key in TEXT_KEYS:
        value = wording.get(key)
        if value in (None, ""):
            continue  # the default text
        if not isinstance(value, str):
            problems.append(f"{key} must be text")
            continue
        if len(value) > MAX_TEXT:
            problems.append(f"{key} is longer than {MAX_TEXT} characters")
        if key in PLACEHOLDERS and (error := template_error(value, PLACEHOLDERS[key])):
            problems.append(f"{key}: {error}")
    scale = wording.get("scale")
    if scale not in (None, "", []) and not (
        isinstance(scale, list) and len(scale) == SCALE_POINTS
        and all(isinstance(s, str) and s.strip() and len(s) <= MAX_TEXT for s in scale)
    ):  # fmt: skip
        problems.append(f"scale must be a list of {SCALE_POINTS} non-empty texts (Robot A clearly ... Robot B clearly)")
    if problems:
        errors["wording"] = "; ".join(problems)
    return errors
