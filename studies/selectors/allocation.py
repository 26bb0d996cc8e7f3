"""Reads of the allocation: how far a participant is, and which items still have a free slot.

The rules are those of :mod:`studies.services.allocation` (which takes and frees the slots):
a main item has ``study.judgments_per_item`` slots, ``n_leased + n_answered`` of them in use; a
participant never gets an item twice; a participant's plan is ``trials_per_participant`` plus
min(``catch_trials``, the study's catch items). A participant with a between-subject arm
(``Participant.arm``, :mod:`studies.lib.arms`) is offered only main items of its arm's methods, and
its plan counts at most as many main trials as its arm has main items. Nothing here writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from django.db.models import Count, Exists, F, OuterRef, QuerySet

from studies.designs.registry import design_for
from studies.lib import rows
from studies.lib.arms import arm_methods, arm_names
from studies.models import Assignment, Item, Participant, Study


@dataclass(frozen=True)
class SlotCounts:
    """How far a participant is: answered and open slots, and the plan."""

    answered: int
    open: int
    expired: int
    planned: int
    n_catch: int


def slot_counts(*, participant: Participant) -> SlotCounts:
    """Count a participant's answered/open/expired assignments and the planned number of trials.

    Planned = ``trials_per_participant`` + min(``catch_trials``, catch items available). Two queries.
    """
    study = participant.study
    answered, open_, expired = rows.fetchone(
        _slot_counts_sql(rows.vendor()),
        [Assignment.Status.ANSWERED, Assignment.Status.LEASED, Assignment.Status.EXPIRED, participant.pk],
    )
    planned, n_catch = planned_trials(study=study, participant=participant)
    return SlotCounts(answered=answered, open=open_, expired=expired, planned=planned, n_catch=n_catch)


@cache
def _slot_counts_sql(vendor: str) -> str:
    status = rows.q("status")
    counts = ", ".join(f"COUNT(CASE WHEN {status} = %s THEN 1 END)" for _ in range(3))
    return f"SELECT {counts} FROM {rows.table(Assignment)} WHERE {rows.q('participant_id')} = %s"


def participant_methods(*, study: Study, participant: Participant | None,
                        role: str = Item.Role.MAIN) -> tuple[str, ...] | None:  # fmt: skip
    """The methods whose items of ``role`` ``participant`` may be offered: ``None`` = every method (no arm,
    or a role its design's arms do not filter, ``Design.arm_roles``)."""
    # issue 16: the roles an arm filters are the design's (forward simulation: main and practice)
    if participant is None or not participant.arm or role not in design_for(study).arm_roles:
        return None
    return arm_methods(study.arms, participant.arm)


def planned_trials(*, study: Study, participant: Participant | None = None) -> tuple[int, int]:
    """``(planned, n_catch)``: ``trials_per_participant`` + min(``catch_trials``, catch items); at most one query
    (two for a participant with an arm: its main trials are at most its arm's main items)."""
    n_catch = 0
    if study.catch_trials:
        (available,) = rows.fetchone(_catch_count_sql(rows.vendor()), [study.pk, Item.Role.CATCH])
        n_catch = min(study.catch_trials, available)
    main = study.trials_per_participant
    methods = participant_methods(study=study, participant=participant)
    if methods is not None:
        main = min(main, Item.objects.filter(study=study, role=Item.Role.MAIN, method__in=methods).count())
    return main + n_catch, n_catch


@cache
def _catch_count_sql(vendor: str) -> str:
    return f"SELECT COUNT(*) FROM {rows.table(Item)} WHERE {rows.q('study_id')} = %s AND {rows.q('role')} = %s"


def item_candidates(*, study: Study, participant: Participant, role: str) -> QuerySet[Item]:
    """The study's items of ``role`` this participant does not hold, best first (a lazy query).

    Main items: only those with a free slot (``n_answered + n_leased < judgments_per_item``) and, for a
    participant with an arm, of its arm's methods; ordered by slots in use, then ``tie_rank``, then id.
    Other roles (no quota, no arm): ``tie_rank``, id.
    """
    seen = Assignment.objects.filter(item=OuterRef("pk"), participant=participant)
    query = Item.objects.filter(study=study, role=role).filter(~Exists(seen))
    if role == Item.Role.MAIN:
        methods = participant_methods(study=study, participant=participant)
        if methods is not None:
            query = query.filter(method__in=methods)
        query = query.annotate(in_use=F("n_answered") + F("n_leased")).filter(
            in_use__lt=study.judgments_per_item
        )
        return query.order_by("in_use", "tie_rank", "id")
    return query.order_by("tie_rank", "id")


def main_slot_available(*, participant: Participant) -> bool:
    """Whether some main item still has a free slot this participant has not seen (one query)."""
    return item_candidates(study=participant.study, participant=participant, role=Item.Role.MAIN).exists()


def arm_counts(*, study: Study, counted_only: bool = True) -> dict[str, int]:
    """Participants per arm of ``study``, every configured arm present (0 when empty), in the arms' order;
    then any other stored arm name. ``counted_only``: leave out declined and screened-out participants
    (those that count for balance). One query."""
    query = Participant.objects.filter(study=study).exclude(arm="")
    if counted_only:
        query = query.exclude(status__in=(Participant.Status.DECLINED, Participant.Status.SCREENED_OUT))
    found = dict(query.values_list("arm").annotate(n=Count("id")).order_by())
    counts = {name: found.pop(name, 0) for name in arm_names(study.arms)}
    counts.update(sorted(found.items()))
    return counts
