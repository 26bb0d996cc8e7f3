"""The random choices one trial shows: option order and which model is shown as Robot A.

Drawn by the keyed generator of :mod:`studies.lib.slots` (label ``slot{slot}``); what is drawn, and
in which order, is the study design's rule (:meth:`studies.designs.base.Design.draw_choices`).

Main and catch trials: drawn once when the lease is taken (``studies.services.allocation``) and
stored on the ``Assignment``; everything downstream (the page, scoring, exports, the audit) reads
the stored values and never re-derives them. Practice trials: not stored, re-derived per
(participant, attempt) with the label ``slotpractice{attempt}-{item.public_id}``
(:func:`practice_choices`). Only the server can re-derive a draw, and only while ``SECRET_KEY``
is unchanged. Pure (no query).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from studies.designs.registry import design_for
from studies.lib.slots import slot_rng

if TYPE_CHECKING:
    from studies.models import Item, Study


@dataclass(frozen=True)
class AssignmentChoices:
    """The random choices one assignment shows (drawn by the keyed :func:`studies.lib.slots.slot_rng`)."""

    option_order: list[int]
    model_a_shown_left: bool | None


def assignment_choices(*, study: Study, participant_token: str, slot: int | str, item: Item) -> AssignmentChoices:
    """Draw the option order and the Robot A side of slot ``slot`` (0-based, or a label) for an item.

    The generator is ``slot_rng(seed=study.seed, participant_token=..., label=f"slot{slot}")``; the
    study's design draws from it (:meth:`~studies.designs.base.Design.draw_choices`: a permutation
    of ``range(len(item.options))``, then a fair coin for the Robot A side when the design shows a
    pair of models, else ``None``). Called when a lease is taken (the result is stored on the
    ``Assignment``) and for practice trials (not stored, re-derived per attempt). Anything that
    needs what a worker saw reads the stored assignment, not this function.
    """
    rng = slot_rng(seed=study.seed, participant_token=participant_token, label=f"slot{slot}")
    option_order, model_a_shown_left = design_for(study).draw_choices(rng=rng, item=item)
    return AssignmentChoices(option_order=option_order, model_a_shown_left=model_a_shown_left)


def practice_choices(*, study: Study, participant_token: str, attempt: int, item: Item) -> AssignmentChoices:
    """Option order and Robot A side of one practice item in one attempt (keyed, re-derived, not stored):
    :func:`assignment_choices` of the slot ``practice{attempt}-{item.public_id}``."""
    return assignment_choices(study=study, participant_token=participant_token, slot=f"practice{attempt}-{item.public_id}",
                              item=item)  # fmt: skip
