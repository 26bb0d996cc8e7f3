"""What a study's configuration must satisfy, checked where it is saved and again at publish (issue #13).

One function serves the admin form, commands and services, so every door gives the same errors:
:func:`study_config_errors` maps a field name to its messages (empty: nothing wrong). Rules:

- ``methods``: a non-empty list of distinct names from the engine's registry
  (``explainers.registry.METHODS``, imported without torch).
- ``question`` / ``wording``: only the placeholders the page fills (``studies.lib.wording``).
- ``model`` / ``model_pair``: what the kind needs (the database holds the same rule as a check
  constraint; here it is a form error instead of an ``IntegrityError``).
- ``trials_per_participant``: a worker sees an item at most once, so at most the number of main
  items; known after preparation (``items``), so checked again at publish.
- ``catch_trials``: fewer than the trials they are interleaved with.
- ``practice_trials``: at least one when the study asks for a pass fraction above zero.
- ``arms``: empty, or a list of ``{"name", "methods"}`` with unique identifier names and non-empty
  method lists drawn from ``methods``, every method in some arm, and every arm with a map method when
  the study has catch trials, or practice trials its design does not draw per arm
  (``studies.lib.arms.arms_errors``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from explainers.registry import METHODS
from studies.designs import design_for
from studies.lib.arms import arms_errors
from studies.lib.wording import wording_errors
from studies.models import Item, Study


def method_choices() -> list[tuple[str, str]]:
    """``(name, "name: one-line description")`` for every method, for a form's choice list."""
    return [(name, f"{name}: {spec.doc}") for name, spec in METHODS.items()]


def _method_errors(methods: Any) -> list[str]:
    if not isinstance(methods, list) or not methods:
        return ["choose at least one method"]
    errors = []
    for name in methods:
        if not isinstance(name, str) or name not in METHODS:
            errors.append(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}")
    if len({m for m in methods if isinstance(m, str)}) != len(methods):
        errors.append("a method is listed twice")
    return errors


def study_config_errors(*, study: Study, n_main_items: int | None = None) -> dict[str, list[str]]:
    """Every configuration error of ``study`` (saved or not), by field name.

    ``n_main_items``: the number of main items when known (after preparation); ``None`` reads it
    from the database for a saved study that has items, and skips the check otherwise.
    """
    errors: dict[str, list[str]] = {}

    def add(field: str, messages: Iterable[str]) -> None:
        messages = list(messages)
        if messages:
            errors.setdefault(field, []).extend(messages)

    add("methods", _method_errors(study.methods))
    add("arms", arms_errors(study.arms, study.methods if isinstance(study.methods, list) else [],
                            catch_trials=study.catch_trials or 0, practice_trials=study.practice_trials or 0,
                            practice_by_arm=Item.Role.PRACTICE in design_for(study).arm_roles))
    for field, message in wording_errors(study.kind, study.wording, study.question).items():
        add(field if field in ("question", "wording") else "wording", [message])
    design = design_for(study)
    for field, message in design.config_errors(study).items():
        add(field, [message])
    add("explainer_options", design.options_errors(study))
    if n_main_items is None and study.pk is not None:
        counted = Item.objects.filter(study_id=study.pk, role=Item.Role.MAIN).count()
        n_main_items = counted or None
    if n_main_items is not None and study.trials_per_participant > n_main_items:
        add("trials_per_participant", [
            f"{study.trials_per_participant} trials per participant, but the study has {n_main_items} main items "
            "and nobody sees an item twice; lower it or add images"
        ])  # fmt: skip
    if study.catch_trials and study.catch_trials >= study.trials_per_participant:
        add("catch_trials", ["catch trials must be fewer than the trials per participant"])
    if study.practice_pass_fraction > 0 and study.practice_trials == 0:
        add("practice_trials", ["a pass fraction above 0 needs at least one practice trial"])
    return errors
