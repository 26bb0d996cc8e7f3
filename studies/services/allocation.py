"""Allocation of items to participants: balanced, quota-exact and safe under concurrency.

Rules (issue #5, research note ``django_quality.md`` §2):

- An item of role ``main`` is judged by at most ``study.judgments_per_item`` distinct workers.
  The counters ``Item.n_leased + Item.n_answered`` are the slots in use; a slot is taken by a
  *conditional* ``UPDATE item SET n_leased = n_leased + 1 WHERE n_leased + n_answered < quota``,
  so the quota holds even where row locks do not exist (SQLite).
- Candidates are read with ``SELECT ... FOR UPDATE SKIP LOCKED`` (PostgreSQL), so concurrent
  workers never queue on the same hot item: each takes a different one. Order: fewest slots in
  use first, then the seeded ``Item.tie_rank``, then the id.
- A worker never sees an item twice: the candidate query excludes items they already hold, and
  ``UniqueConstraint(participant, item)`` backs it.
- Requests of one participant are serialized by a row lock on the participant (blocking), so
  one worker's double clicks cannot take two slots for the same position.
- A lease lasts ``study.lease_seconds``; :func:`leases_sweep` marks overdue leases expired and
  frees their slots. An expired lease still blocks that item for that worker.
- Capacity against participants who take trials and never answer (issue #11):
  a participant holds at most ONE lease until they have answered a trial; the look-ahead lease
  (images preloaded for the next trial) is only for participants who answer. That first lease
  lasts :data:`FIRST_LEASE_SECONDS` at most (they have not shown that they answer; a worker who
  does answer later still has it kept when the slot is free, see ``services.responses``), the
  later ones ``study.lease_seconds``. And when a participant finds no free slot at all, the
  study's overdue leases are swept (:func:`study_leases_sweep`, its own transaction, after the
  participant's lock is released) and allocation is tried once more, so overdue leases come
  back even where no Celery beat runs (the demo). The sweep runs only on that rare
  "nothing free" path, never on the hot path.
- Between-subject arms: a participant with an arm (``Participant.arm``, given at entry by
  :mod:`studies.services.arms`) is offered only main items whose ``method`` is in its arm, and
  plans at most as many main trials as its arm has main items (``selectors.allocation``).
- Catch trials (role ``catch``) have no quota; ``study.catch_trials`` of them are interleaved at
  positions drawn by :func:`studies.lib.slots.catch_slots` (keyed; from the study seed and the
  participant token).

Every random choice a worker sees (option order, which model is shown as Robot A, the catch
positions and which catch item, the practice draws) comes from :func:`studies.lib.slots.slot_rng`,
a generator keyed with the server's ``SECRET_KEY`` (issue #12; see :mod:`studies.lib.slots`). The
choices of main and catch trials (:func:`studies.lib.choices.assignment_choices`) are stored on the
``Assignment`` when it is leased; everything downstream (the page, scoring, exports, the audit)
reads the stored values and never re-derives them. Practice choices are not stored: they are
re-derived per (participant, attempt) with the same keyed generator (``studies.lib.choices``).
The reads (counts, candidates, free slots) are :mod:`studies.selectors.allocation`.

``Item.tie_rank`` (the order among items with equal counts) is drawn by the planner from the
study seed, not keyed. A worker sees items, never ranks, and the rank is independent of the right
answer, of the option order and of the Robot A side, so knowing the order of allocation tells
nothing about how to answer; at most (with the seed and the full item list, which only staff
have) it tells which item the *first* participants of a study get. See ``docs/worker-flow.md``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from django.db import connection, transaction
from django.db.models import Count, F
from django.utils import timezone

from studies.lib import rows
from studies.lib.choices import assignment_choices
from studies.lib.slots import catch_slots, slot_rng
from studies.models import Assignment, Item, Participant, Study
from studies.selectors.allocation import (
    item_candidates,
    main_slot_available,
    participant_methods,
    planned_trials,
)
from studies.selectors.participation import stage_allows_status

#: How often a request retries when every free candidate is locked by another transaction.
LOCKED_RETRIES = 20
#: Pause between those retries (seconds, doubled each time up to 50 ms).
LOCKED_BACKOFF_S = 0.002
#: The longest lease of a participant's first trial (seconds; ``study.lease_seconds`` when that
#: is shorter). Three minutes: a trial takes a worker seconds, and a script that takes a trial
#: and never answers gives its slot back three times sooner than with the default 600 s.
FIRST_LEASE_SECONDS = 180


def _take_main_slot(*, study: Study, participant: Participant) -> Item | None:
    """Reserve one quota slot on the best free main item, or ``None`` when none is left.

    Must run inside a transaction. Retries while every free candidate is locked by others.
    On PostgreSQL the pick (``FOR UPDATE SKIP LOCKED``) and the conditional increment are one
    statement (:func:`_take_main_slot_pg`); elsewhere two ORM queries.
    """
    pause = LOCKED_BACKOFF_S
    postgres = connection.vendor == "postgresql"
    for _ in range(LOCKED_RETRIES):
        if postgres:
            item = _take_main_slot_pg(study=study, participant=participant)
            if item is not None:
                return item
        else:
            candidates = item_candidates(study=study, participant=participant, role=Item.Role.MAIN)
            item = candidates.select_for_update(skip_locked=True, of=("self",)).first()
            if item is not None:
                took = (
                    Item.objects.filter(pk=item.pk)
                    .annotate(in_use=F("n_answered") + F("n_leased"))
                    .filter(in_use__lt=study.judgments_per_item)
                    .update(n_leased=F("n_leased") + 1)
                )
                if took:
                    return item
                continue
        if not item_candidates(study=study, participant=participant, role=Item.Role.MAIN).exists():
            return None  # nothing free at all (not merely locked)
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
    return None


def _take_main_slot_pg(*, study: Study, participant: Participant) -> Item | None:
    """One statement: lock the best free candidate (skipping rows others hold) and take its slot.

    The same rule as the ORM path: candidates are the study's main items with
    ``n_answered + n_leased < judgments_per_item`` that this participant does not hold,
    ordered by slots in use, ``tie_rank``, id; the increment re-checks the quota.
    Returns the item as it is after the increment, or ``None`` (none free, or all locked).
    "Does not hold" is ``NOT IN`` over the participant's few item ids (``assignment.item_id`` is
    never NULL, so it means the same as ``NOT EXISTS``): PostgreSQL hashes them once instead of
    probing the assignment index once per candidate item (0.5 ms instead of 1.3 ms of execution
    for 240 items).
    A participant with an arm: only items of its arm's methods (``method = ANY(%s)``).
    """
    quota = study.judgments_per_item
    methods = participant_methods(study=study, participant=participant)
    params: list[object] = [study.pk, Item.Role.MAIN, quota]
    if methods is not None:
        params.append(list(methods))
    row = rows.fetchone(_take_main_slot_sql(rows.vendor(), methods is not None), [*params, participant.pk, quota])
    return None if row is None else rows.instance(Item, row)


@cache
def _take_main_slot_sql(vendor: str, by_method: bool = False) -> str:
    """The statement of :func:`_take_main_slot_pg` (PostgreSQL), built once from the models; ``by_method``
    adds the arm's filter (one more parameter, the list of methods)."""
    q, items, assignments = rows.q, rows.table(Item), rows.table(Assignment)
    in_use = f"{q('n_answered')} + c.{q('n_leased')}"
    arm = f"AND c.{q('method')} = ANY(%s)" if by_method else ""
    return f"""
        UPDATE {items} AS i SET {q('n_leased')} = i.{q('n_leased')} + 1
        FROM (
            SELECT c.{q('id')} FROM {items} AS c
            WHERE c.{q('study_id')} = %s AND c.{q('role')} = %s AND c.{in_use} < %s {arm}
              AND c.{q('id')} NOT IN (SELECT a.{q('item_id')} FROM {assignments} AS a WHERE a.{q('participant_id')} = %s)
            ORDER BY c.{in_use}, c.{q('tie_rank')}, c.{q('id')}
            LIMIT 1
            FOR UPDATE OF c SKIP LOCKED
        ) AS pick
        WHERE i.{q('id')} = pick.{q('id')} AND i.{q('n_answered')} + i.{q('n_leased')} < %s
        RETURNING {rows.columns(Item, 'i')}
    """  # table and column names come from the model; every value is a parameter


def _take_catch_item(*, study: Study, participant: Participant, slot: int) -> Item | None:
    """A catch item this participant has not seen, chosen by the keyed generator (one query).

    A study has few catch items, so the unseen ones are read whole and the generator picks
    among them in ``(tie_rank, id)`` order.
    """
    unseen = list(item_candidates(study=study, participant=participant, role=Item.Role.CATCH))
    if not unseen:
        return None
    rng = slot_rng(seed=study.seed, participant_token=participant.token, label=f"catch{slot}")
    return rng.choice(unseen)


@dataclass(frozen=True)
class TrialLease:
    """The open leases (current trial first) and the participant's progress, read under one lock."""

    leases: list[Assignment]
    answered: int
    planned: int


def participant_lock(participant_id: int) -> tuple[str, bool]:
    """Lock the participant's row (blocking; inside a transaction) and read ``(status, practice_passed)``.

    Raises ``Participant.DoesNotExist`` when the row is gone.
    """
    row = rows.fetchone(_lock_sql(rows.vendor()), [participant_id])
    if row is None:
        raise Participant.DoesNotExist(f"participant {participant_id}")
    return row[0], bool(rows.converted(Participant, "practice_passed", row[1]))


@cache
def _lock_sql(vendor: str) -> str:
    return (
        f"SELECT {rows.q('status')}, {rows.q('practice_passed')} FROM {rows.table(Participant)} "
        f"WHERE {rows.q('id')} = %s{rows.for_update()}"
    )


@cache
def _held_sql(vendor: str) -> str:
    """Every assignment's status; the other columns (and the item's) only on open leases, NULL
    elsewhere, so answered and expired rows cost no decoding."""
    leased = Assignment.Status.LEASED.value
    assert leased.isalnum()  # a model constant, written into the SQL as a literal
    status = f"a.{rows.q('status')}"

    def only_leased(listed: str) -> str:
        return ", ".join(f"CASE WHEN {status} = '{leased}' THEN {col} END" for col in listed.split(", "))

    return (
        f"SELECT {status}, {only_leased(rows.columns(Assignment, 'a'))}, {only_leased(rows.columns(Item, 'i'))} "
        f"FROM {rows.table(Assignment)} a INNER JOIN {rows.table(Item)} i ON i.{rows.q('id')} = a.{rows.q('item_id')} "
        f"WHERE a.{rows.q('participant_id')} = %s ORDER BY a.{rows.q('position')}"
    )


def _held(participant_id: int) -> tuple[int, int, list[Assignment]]:
    """``(held, answered, open leases with their items)`` of a participant, in position order (one query).

    The same rows as ``Assignment.objects.filter(participant_id=...).select_related("item")
    .order_by("position")``; only the open leases become instances.
    """
    found = rows.fetchall(_held_sql(rows.vendor()), [participant_id])
    item_start = 1 + rows.width(Assignment)
    answered, open_leases = 0, []
    item_cache = Assignment._meta.get_field("item")
    for row in found:
        if row[0] == Assignment.Status.ANSWERED:
            answered += 1
        elif row[0] == Assignment.Status.LEASED:
            lease = rows.instance(Assignment, row, 1)
            item_cache.set_cached_value(lease, rows.instance(Item, row, item_start))
            open_leases.append(lease)
    return len(found), answered, open_leases


@cache
def _mark_shown_sql(vendor: str) -> str:
    shown = rows.q("shown_at")
    return f"UPDATE {rows.table(Assignment)} SET {shown} = %s WHERE {rows.q('id')} = %s AND {shown} IS NULL"


def trial_lease(
    *,
    participant: Participant,
    lookahead: int = 1,
    mark_shown: bool = False,
    only_if_answering: bool = False,
    now: datetime | None = None,
) -> TrialLease:
    """Make sure the participant holds their current lease plus ``lookahead`` more; return them.

    One transaction holding the participant's row lock: one query reads all of the participant's
    assignments (with their items), which gives both the counts and the open leases; new leases
    are taken as in :func:`_take_main_slot`. The look-ahead is leased only once the participant
    has answered a trial (before that they hold one lease, of at most
    :data:`FIRST_LEASE_SECONDS`). With ``mark_shown`` the current trial's first ``shown_at`` is
    stamped in the same transaction (one commit per trial view). With ``only_if_answering``
    nothing is leased unless the locked row is ``in_progress`` with the practice passed (the
    caller then reads the stage with the usual selector). When the participant still has trials
    to do but gets no lease at all, the study's overdue leases are swept
    (:func:`study_leases_sweep`) and the allocation is tried once more.
    ``participant.study`` is used as loaded by the caller.
    """
    now = now or timezone.now()
    lease, starved = _trial_lease_once(
        participant=participant, lookahead=lookahead, mark_shown=mark_shown,
        only_if_answering=only_if_answering, now=now,
    )  # fmt: skip
    if starved and study_leases_sweep(study=participant.study, now=now):
        lease, _ = _trial_lease_once(
            participant=participant, lookahead=lookahead, mark_shown=mark_shown,
            only_if_answering=only_if_answering, now=now,
        )  # fmt: skip
    return lease


def lease_expiry(*, study: Study, answered: int, now: datetime) -> datetime:
    """When a lease taken now expires: ``study.lease_seconds``, at most :data:`FIRST_LEASE_SECONDS`
    while the participant has answered nothing."""
    seconds = study.lease_seconds if answered else min(study.lease_seconds, FIRST_LEASE_SECONDS)
    return now + timedelta(seconds=seconds)


def _trial_lease_once(
    *, participant: Participant, lookahead: int, mark_shown: bool, only_if_answering: bool, now: datetime
) -> tuple[TrialLease, bool]:
    """One allocation transaction (see :func:`trial_lease`); also whether the participant was left
    with no lease although they have trials to do (no free slot found)."""
    study = participant.study
    with transaction.atomic():
        status, practice_passed = participant_lock(participant.pk)
        if only_if_answering and not stage_allows_status("trials", status=status, practice_passed=practice_passed):
            return TrialLease(leases=[], answered=0, planned=0), False
        n_held, answered, open_leases = _held(participant.pk)
        planned, n_catch = planned_trials(study=study, participant=participant)
        used = answered + len(open_leases)
        ahead = lookahead if answered else 0  # the look-ahead is for participants who answer
        want = min(1 + ahead, planned - answered)
        if len(open_leases) < want and used < planned:
            catch_at = catch_slots(study=study, participant_token=participant.token, planned=planned, n_catch=n_catch)
            next_position = n_held
            expires_at = lease_expiry(study=study, answered=answered, now=now)
            while len(open_leases) < want and used < planned:
                slot = used
                item = None
                if slot in catch_at and main_slot_available(participant=participant):
                    item = _take_catch_item(study=study, participant=participant, slot=slot)
                if item is None:
                    item = _take_main_slot(study=study, participant=participant)
                if item is None:
                    break
                choices = assignment_choices(study=study, participant_token=participant.token, slot=slot, item=item)
                # UniqueConstraint(participant, item) backs the candidate query's exclusion.
                assignment = rows.insert(
                    Assignment(
                        participant=participant,
                        item=item,
                        position=next_position,
                        option_order=choices.option_order,
                        model_a_shown_left=choices.model_a_shown_left,
                        expires_at=expires_at,
                    )
                )
                open_leases.append(assignment)
                used += 1
                next_position += 1
        if mark_shown and open_leases and open_leases[0].shown_at is None:
            rows.execute(_mark_shown_sql(rows.vendor()), [rows.prep(Assignment, "shown_at", now), open_leases[0].pk])
            open_leases[0].shown_at = now
    starved = not open_leases and answered < planned
    return TrialLease(leases=open_leases, answered=answered, planned=planned), starved


def assignments_lease(*, participant: Participant, lookahead: int = 1, now: datetime | None = None) -> list[Assignment]:
    """Make sure the participant holds their current lease plus ``lookahead`` more; return them.

    The open leases come back in position order (the first is the trial to show now; the next
    ones are leased early so that their images can be preloaded). An empty list means the
    participant has done all planned trials or no item with a free slot remains for them.
    Leases held already are returned unchanged (a returning worker resumes), and their
    ``expires_at`` is not extended. See :func:`trial_lease`.
    """
    return trial_lease(participant=participant, lookahead=lookahead, now=now).leases


def leases_sweep(*, now: datetime | None = None, batch: int = 500) -> int:
    """Expire overdue leases and give their slots back; return how many were expired.

    Each batch is one transaction: lock overdue leases (skipping rows a submit is writing),
    flip them to ``expired`` with a conditional update, and decrement each item's
    ``n_leased`` by the number of its leases that flipped (items in id order, so two sweeps
    never wait on each other in a cycle). Answers are never touched.
    """
    return _sweep(now=now or timezone.now(), batch=batch, study_id=None)


def study_leases_sweep(*, study: Study, now: datetime | None = None, batch: int = 500) -> int:
    """:func:`leases_sweep` for one study's leases only (run when allocation finds nothing free,
    and by entry before it calls a study full); the number expired. Call it outside any
    transaction that holds item or participant locks (it takes item row locks)."""
    return _sweep(now=now or timezone.now(), batch=batch, study_id=study.pk)


def _sweep(*, now: datetime, batch: int, study_id: int | None) -> int:
    total = 0
    overdue = Assignment.objects.filter(status=Assignment.Status.LEASED, expires_at__lt=now)
    if study_id is not None:
        overdue = overdue.filter(item__study_id=study_id)
    while True:
        with transaction.atomic():
            ids = list(
                overdue.select_for_update(skip_locked=True, of=("self",)).order_by("id").values_list("id", flat=True)[:batch]
            )
            if not ids:
                return total
            per_item = (
                Assignment.objects.filter(id__in=ids, status=Assignment.Status.LEASED)
                .values("item_id")
                .annotate(n=Count("id"))
                .order_by("item_id")
            )
            per_item = list(per_item)
            Assignment.objects.filter(id__in=ids, status=Assignment.Status.LEASED).update(
                status=Assignment.Status.EXPIRED
            )
            for row in per_item:
                Item.objects.filter(pk=row["item_id"], role=Item.Role.MAIN).update(n_leased=F("n_leased") - row["n"])
            total += len(ids)
        if len(ids) < batch:
            return total
