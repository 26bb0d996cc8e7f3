"""Between-subject arms, the pure rules: what a valid ``Study.arms`` is, an arm's methods, which arm is next.

``Study.arms`` is a list of ``{"name": <identifier>, "methods": [<method>, ...]}``; empty = no arms
(every participant sees every method). A participant of a study with arms is given one arm at
entry (``studies.services.arms.arm_assign``): the arm with the fewest counted participants, ties
broken by a keyed draw (:func:`studies.lib.slots.slot_rng`), so the arms' counts never differ by
more than one and nobody can predict their arm. A participant with an arm is offered only main
items whose ``method`` is among its arm's methods (catch and practice items as everyone).

Pure (no query): read by the selectors (allocation), the services (assignment, audit, checks).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: An arm's name: an identifier (letters, digits, ``_`` and ``-``, starting with a letter), at most 64 characters
#: (``Participant.arm``).
ARM_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


def arms_errors(arms: Any, methods: Sequence[str], *, catch_trials: int = 0, practice_trials: int = 0,
                practice_by_arm: bool = False) -> list[str]:
    """The problems of ``arms`` for a study whose methods are ``methods`` (empty: valid).

    With ``catch_trials > 0`` every arm needs a map method (``studies.lib.rendering.is_map``): catch
    items show maps and are not filtered by arm, so an arm without one (``image_only``, example
    images) would see catch trials unlike its own trials, an explanation shown to a no-explanation arm.
    The same holds for practice trials (and the worked example) unless the design draws them per arm
    (``practice_by_arm``: ``Design.arm_roles`` includes practice, as the forward simulation's
    learning phase does).
    """
    if arms in (None, []):
        return []
    if not isinstance(arms, list):
        return ['arms must be a list like [{"name": "gradcam", "methods": ["gradcam"]}, ...] (or empty for no arms)']
    errors: list[str] = []
    names: list[str] = []
    covered: set[str] = set()
    known = set(methods) if isinstance(methods, list | tuple) else set()
    for k, arm in enumerate(arms, start=1):
        if not isinstance(arm, dict):
            errors.append(f'arm {k}: must be an object {{"name": ..., "methods": [...]}}')
            continue
        extra = sorted(set(arm) - {"name", "methods"})
        if extra:
            errors.append(f"arm {k}: unknown key(s) {', '.join(map(repr, extra))}; an arm has only name and methods")
        name = arm.get("name")
        if not isinstance(name, str) or not ARM_NAME.match(name):
            errors.append(f"arm {k}: name {name!r} must be an identifier (a letter, then letters, digits, _ or -; "
                          "at most 64 characters)")  # fmt: skip
        else:
            if name in names:
                errors.append(f"arm {k}: the name {name!r} is used twice")
            names.append(name)
        label = f"arm {name!r}" if isinstance(name, str) and name else f"arm {k}"
        arm_methods_ = arm.get("methods")
        if not isinstance(arm_methods_, list) or not arm_methods_:
            errors.append(f"{label}: methods must be a non-empty list of the study's methods")
            continue
        if len({m for m in arm_methods_ if isinstance(m, str)}) != len(arm_methods_):
            errors.append(f"{label}: a method is listed twice")
        unknown = [m for m in arm_methods_ if not isinstance(m, str) or m not in known]
        if unknown:
            errors.append(f"{label}: {', '.join(map(repr, unknown))} not among the study's methods "
                          f"({', '.join(methods) if known else 'none chosen'})")  # fmt: skip
        covered.update(m for m in arm_methods_ if isinstance(m, str))
    missing = [m for m in methods if m not in covered] if known else []
    if missing and not errors:
        errors.append(f"method(s) {', '.join(missing)} are in no arm: nobody would see them; add them to an arm "
                      "or remove them from the study's methods")  # fmt: skip
    shared_practice = bool(practice_trials) and isinstance(practice_trials, int) and not practice_by_arm
    if (catch_trials and isinstance(catch_trials, int) or shared_practice) and not errors:
        from studies.lib.rendering import is_map

        mapless = [arm["name"] for arm in arms if not any(is_map(m) for m in arm["methods"] if m in known)]
        if mapless and catch_trials and isinstance(catch_trials, int):
            errors.append(f"arm(s) {', '.join(map(repr, mapless))} show no map, but catch trials show maps to every "
                          f"participant (a catch trial would look unlike their trials and show them an explanation): "
                          f"set catch_trials to 0 or give every arm a map method")  # fmt: skip
        if mapless and shared_practice:
            errors.append(f"arm(s) {', '.join(map(repr, mapless))} show no map, but this design's practice trials and "
                          f"worked example show maps to every participant (they would teach a no-explanation arm "
                          f"with an explanation): set practice_trials to 0 or give every arm a map method")  # fmt: skip
    return errors


def arm_names(arms: Any) -> list[str]:
    """The arms' names in their configured order (``[]`` for a study without arms)."""
    if not isinstance(arms, list):
        return []
    return [arm["name"] for arm in arms if isinstance(arm, dict) and isinstance(arm.get("name"), str)]


def arm_methods(arms: Any, name: str) -> tuple[str, ...] | None:
    """The methods of arm ``name``: ``None`` when the participant has no arm (``name`` empty: every method),
    ``()`` when the arm is not one of ``arms`` (offered no main item)."""
    if not name:
        return None
    for arm in arms if isinstance(arms, list) else []:
        if isinstance(arm, dict) and arm.get("name") == name:
            methods = arm.get("methods")
            return tuple(m for m in methods if isinstance(m, str)) if isinstance(methods, list) else ()
    return ()


def arm_pick(names: Sequence[str], counts: Mapping[str, int], rng: random.Random) -> str:
    """The arm a new participant joins: one with the fewest ``counts`` among ``names``, ties drawn with ``rng``."""
    if not names:
        raise ValueError("no arms to pick from")
    fewest = min(counts.get(name, 0) for name in names)
    tied = [name for name in names if counts.get(name, 0) == fewest]
    return tied[0] if len(tied) == 1 else rng.choice(tied)


def arm_spread(names: Iterable[str], counts: Mapping[str, int]) -> int:
    """Largest minus smallest count over the arms ``names`` (0 without arms)."""
    values = [counts.get(name, 0) for name in names]
    return max(values) - min(values) if values else 0
