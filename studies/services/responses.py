"""Recording answers: one response per assignment, replay-safe, committed before any code is shown.

A submit is a conditional status transition (``leased -> answered``) inside one transaction
with the ``Response`` insert and the item counters (``n_leased - 1``, ``n_answered + 1``).
A second or replayed submit of the same assignment changes nothing and reports ``duplicate``.
An answer that arrives after the sweeper expired its lease is kept only if the item still has
a free slot (so the quota still holds); otherwise it reports ``expired`` and stores nothing.
(A lease past ``expires_at`` that no sweep has reached yet still holds its slot, so its answer
is kept: the same rule, since expiring it first would free exactly the slot the answer takes.)
An answer to a trial the server never showed (``shown_at`` is NULL: a look-ahead lease whose
token a client read from the preload list, or a token never fetched) is refused with
``AnswerInvalid("assignment", ...)`` (400 on the API and the answer form) and stores nothing;
the trial stays leased and can be answered once it has been shown. Showing is recorded by the
trial views (``trial_lease(mark_shown=True)``: ``GET /api/v1/participant/trial`` and the
worker page), so a client that fetches the trial before answering it is unaffected.

Scores (Selvaraju et al. 2017, §5.2; Zhou et al. 2018, §3.4) are the study design's rule
(``Design.answer_range`` and ``Design.answer_score`` in ``studies/designs/``):
- discrimination: ``chosen_option = option_order[choice]``, ``correct = chosen_option == item.correct_option``;
- trust: the 5-point scale position ``choice`` in 0..4 (0 = "Robot A is clearly more reasonable")
  gives ``score_robot_a = 2 - choice``; ``score_model_a = score_robot_a`` when the pair's model A
  was shown as Robot A, else ``-score_robot_a``. For a trust item with ``correct_option`` set
  (catch or practice), 0 means model A must be preferred (``correct = score_model_a > 0``) and
  1 means model B (``correct = score_model_a < 0``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, Literal

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from studies.designs.registry import design_for
from studies.lib import rows
from studies.models import Assignment, Item, Participant, Response, Study
from studies.selectors.participation import stage_allows_status
from studies.services.allocation import participant_lock

MAX_FOCUS_EVENTS = 200
FOCUS_EVENT_TYPES = frozenset({"focus", "blur", "visible", "hidden"})
MAX_RESPONSE_MS = 6 * 60 * 60 * 1000
MAX_COMMENT_CHARS = 2000
NOT_SHOWN = "this trial has not been shown yet; answer the trial you are shown"


class AnswerInvalid(ValueError):
    """An answer that cannot be stored; ``field`` names the offending input."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class AssignmentNotFound(LookupError):
    """The assignment token does not belong to this participant."""


class ParticipantNotAnswering(RuntimeError):
    """The participant is not at the trial stage (not consented, practice not passed, or done)."""


@dataclass(frozen=True)
class RecordOutcome:
    """What happened to a submit: ``recorded``, ``duplicate`` (already answered) or ``expired``."""

    status: Literal["recorded", "duplicate", "expired"]
    assignment_token: str
    correct: bool | None = None


@dataclass(frozen=True)
class Scored:
    chosen_option: int | None
    correct: bool | None
    score_model_a: int | None


def answer_score(*, study: Study, item: Item, option_order: list[int], model_a_shown_left: bool | None, choice: int) -> Scored:
    """Turn a displayed choice into the stored fields (see the module docstring for the rule).

    ``choice`` must be an integer in the design's ``answer_range`` (``AnswerInvalid("choice", ...)``
    otherwise); the design scores it (``Design.answer_score``).
    """
    if isinstance(choice, bool) or not isinstance(choice, int):
        raise AnswerInvalid("choice", "must be an integer")
    design = design_for(study)
    n, what = design.answer_range(option_order)
    if not 0 <= choice < n:
        raise AnswerInvalid("choice", f"must be 0..{n - 1} ({what})")
    chosen, correct, score = design.answer_score(
        item=item, option_order=option_order, model_a_shown_left=model_a_shown_left, choice=choice
    )
    return Scored(chosen_option=chosen, correct=correct, score_model_a=score)


def focus_events_clean(raw: Any) -> list[dict[str, int | str]]:
    """Validate client focus/visibility events: a list of ``{"type": focus|blur|visible|hidden, "t": ms}``."""
    if raw in (None, ""):
        return []
    if not isinstance(raw, list):
        raise AnswerInvalid("focus_events", "must be a list")
    if len(raw) > MAX_FOCUS_EVENTS:
        raise AnswerInvalid("focus_events", f"at most {MAX_FOCUS_EVENTS} events")
    events: list[dict[str, int | str]] = []
    for index, event in enumerate(raw):
        kind = event.get("type") if isinstance(event, dict) else None
        if not isinstance(kind, str) or kind not in FOCUS_EVENT_TYPES:
            raise AnswerInvalid("focus_events", f"event {index}: type must be one of {sorted(FOCUS_EVENT_TYPES)}")
        t = event.get("t")
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t <= MAX_RESPONSE_MS:
            raise AnswerInvalid("focus_events", f"event {index}: t must be milliseconds (0..{MAX_RESPONSE_MS})")
        events.append({"type": event["type"], "t": t})
    return events


def _clean_extras(client_response_ms: Any, comment: Any) -> tuple[int | None, str]:
    if client_response_ms in (None, ""):
        ms = None
    elif isinstance(client_response_ms, bool) or not isinstance(client_response_ms, int):
        raise AnswerInvalid("client_response_ms", "must be an integer")
    elif not 0 <= client_response_ms <= MAX_RESPONSE_MS:
        raise AnswerInvalid("client_response_ms", f"must be 0..{MAX_RESPONSE_MS}")
    else:
        ms = client_response_ms
    comment = "" if comment is None else comment
    if not isinstance(comment, str):
        raise AnswerInvalid("comment", "must be text")
    comment = comment.strip()
    if len(comment) > MAX_COMMENT_CHARS:
        raise AnswerInvalid("comment", f"at most {MAX_COMMENT_CHARS} characters")
    return ms, comment


def response_record(
    *,
    participant: Participant,
    assignment_token: str,
    choice: int,
    client_response_ms: int | None = None,
    focus_events: Any = None,
    comment: Any = "",
    now: datetime | None = None,
) -> RecordOutcome:
    """Store the answer to one assignment exactly once.

    Raises:
        AssignmentNotFound: the token is not one of this participant's assignments.
        ParticipantNotAnswering: the participant is not at the trial stage.
        AnswerInvalid: a field is out of range, or (field ``assignment``) the trial was never
            shown (nothing is stored).
    """
    now = now or timezone.now()
    events = focus_events_clean(focus_events)
    ms, text = _clean_extras(client_response_ms, comment)
    with transaction.atomic():
        # The participant's row lock serializes this submit with their completion.
        status, practice_passed = participant_lock(participant.pk)
        study = participant.study
        assignment = _assignment_with_item(participant.pk, assignment_token)
        if assignment is None:
            raise AssignmentNotFound(assignment_token)
        if assignment.status == Assignment.Status.ANSWERED:
            return RecordOutcome(status="duplicate", assignment_token=assignment.token)
        if not stage_allows_status("trials", status=status, practice_passed=practice_passed):
            raise ParticipantNotAnswering(status)
        if assignment.shown_at is None:
            raise AnswerInvalid("assignment", NOT_SHOWN)
        item = assignment.item
        scored = answer_score(
            study=study,
            item=item,
            option_order=list(assignment.option_order or []),
            model_a_shown_left=assignment.model_a_shown_left,
            choice=choice,
        )
        is_main = item.role == Item.Role.MAIN
        answered_at = rows.prep(Assignment, "answered_at", now)
        flipped = rows.execute(
            _flip_sql(rows.vendor()),
            [Assignment.Status.ANSWERED, answered_at, assignment.pk, Assignment.Status.LEASED],
        )
        if flipped:
            rows.execute(_counters_sql(rows.vendor(), is_main), [item.pk])
        else:
            # The sweeper expired this lease: keep the late answer only if a slot is still free.
            if is_main:
                took = (
                    Item.objects.filter(pk=item.pk)
                    .annotate(in_use=F("n_answered") + F("n_leased"))
                    .filter(in_use__lt=study.judgments_per_item)
                    .update(n_answered=F("n_answered") + 1)
                )
            else:
                took = Item.objects.filter(pk=item.pk).update(n_answered=F("n_answered") + 1)
            if not took:
                return RecordOutcome(status="expired", assignment_token=assignment.token)
            Assignment.objects.filter(pk=assignment.pk, status=Assignment.Status.EXPIRED).update(
                status=Assignment.Status.ANSWERED, answered_at=now
            )
        rows.insert(
            Response(
                assignment=assignment,
                chosen_option=scored.chosen_option,
                correct=scored.correct,
                score_model_a=scored.score_model_a,
                client_response_ms=ms,
                focus_events=events,
                comment=text,
            )
        )
    return RecordOutcome(status="recorded", assignment_token=assignment.token, correct=scored.correct)


def _assignment_with_item(participant_id: int, token: str) -> Assignment | None:
    """The participant's assignment with this token, its item loaded (one query), or ``None``.

    The same as ``Assignment.objects.select_related("item").filter(participant_id=..., token=...)
    .first()`` (the token is unique).
    """
    return rows.fetch_with_related(Assignment, "item", participant_id=participant_id, token=token)


@cache
def _flip_sql(vendor: str) -> str:
    """The conditional transition ``leased -> answered`` (0 rows when it is not leased any more)."""
    status = rows.q("status")
    return (
        f"UPDATE {rows.table(Assignment)} SET {status} = %s, {rows.q('answered_at')} = %s "
        f"WHERE {rows.q('id')} = %s AND {status} = %s"
    )


@cache
def _counters_sql(vendor: str, is_main: bool) -> str:
    """A leased slot becomes an answered one (main items); catch items only count answers."""
    answered, leased = rows.q("n_answered"), rows.q("n_leased")
    moves = f"{leased} = {leased} - 1, " if is_main else ""
    return f"UPDATE {rows.table(Item)} SET {moves}{answered} = {answered} + 1 WHERE {rows.q('id')} = %s"


def assignment_mark_shown(*, assignment: Assignment, now: datetime | None = None) -> None:
    """Record the first time the server showed this trial (later views keep the first time)."""
    now = now or timezone.now()
    if assignment.shown_at is None:
        Assignment.objects.filter(pk=assignment.pk, shown_at__isnull=True).update(shown_at=now)
        assignment.shown_at = now
