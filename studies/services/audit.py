"""Reconciliation of a study's books: nothing acknowledged is lost, no quota is broken.

``study_audit`` re-derives, from the rows themselves, every invariant the worker flow promises
and names each violation. It only reads; run it after a pilot, a load test or a fault (the fault
tests in ``tests/integration/test_faults.py`` end with it), or from ``manage.py audit_study``.

"Acknowledged" is defined from the data: a submit was acknowledged to the worker exactly when
its assignment moved to ``answered`` (the flow writes the ``Response`` and that transition in one
transaction and answers the HTTP request only after the commit). The invariants:

1. ``responses``: every ``answered`` assignment has exactly one ``Response`` (the one-to-one key
   enforces "at most one"; the audit checks "at least one"), and every ``Response`` belongs to an
   ``answered`` assignment; an answered assignment carries ``answered_at``.
2. ``correctness``: where the study's design keeps a re-derivable flag (``Design.audits_correct``;
   class discrimination), a response's ``correct`` flag equals ``Design.correct_expected``:
   ``chosen_option == item.correct_option``.
3. ``quota``: for each main item, ``answered + open leases <= study.judgments_per_item``.
4. ``counters``: each item's ``n_answered`` / ``n_leased`` equal the counts of its ``answered`` /
   ``leased`` assignments.
5. ``repeat``: no participant holds two assignments of one item, and no platform identity
   (normalised worker id) holds two *completed* participants in the study. Several unfinished
   participants under one worker id are allowed: each is bound to its own platform session
   (``services.participation``), since a worker id is public.
6. ``stimulus``: every stimulus an item shows (each slot of ``Design.stimulus_slots``) exists in
   storage and hashes to its ``sha256``.
7. ``codes``: every completed participant holds its own completion code, equal to
   ``completion_code_derive(study, token)``, and no two participants share one.
8. ``choices``: every assignment stores the random choices its worker saw, and they are
   well-formed: ``option_order`` a permutation of the item's option indices, ``model_a_shown_left``
   set on trials of a pair of models (trust) and empty otherwise (``Design.stored_side_problem``). The audit reads what was stored; it never re-derives a
   choice from the seed (the draws are keyed with ``SECRET_KEY``, ``lib.slots.slot_rng``, so a
   re-derivation would also break when the key is rotated).
9. ``screened``: a participant screened out by the practice holds no assignment, no completion
   code and no passed practice, and used at least one practice attempt.
10. ``arms`` (studies with between-subject arms, ``Study.arms``): every participant holds one of the
    study's arms, every main item it answered or holds is of a method of its arm, and the arms'
    counts of counted participants (neither declined nor screened out) differ by at most one. A
    participant who declines or is screened out after entry leaves its arm's count, which the next
    entries refill; so the allowed spread is 1 + the number of such leavers (each moves it by one at
    most, and an assignment never widens a spread above one). A study without arms: every
    participant's arm is empty.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.core.files.storage import default_storage
from django.db.models import Count, Q

from studies.designs import design_for
from studies.lib.arms import arm_methods, arm_names, arm_spread
from studies.models import Assignment, Item, Participant, PlatformAction, Response, Stimulus, Study
from studies.selectors.allocation import arm_counts
from studies.services.participation import completion_code_derive
from studies.services.storage import storage_sha256


@dataclass(frozen=True)
class AuditProblem:
    """One violated invariant: ``code`` names the rule, ``message`` the rows involved."""

    code: str
    message: str

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


@dataclass
class AuditReport:
    """What ``study_audit`` checked and what it found wrong (empty ``problems`` = clean)."""

    study_id: int
    items: int = 0
    assignments: int = 0
    responses: int = 0
    stimuli: int = 0
    ledger_rows: int = 0
    ledger_approvals: int = 0
    ledger_rejections: int = 0
    ledger_bonus_cents: int = 0
    problems: list[AuditProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, code: str, message: str) -> None:
        self.problems.append(AuditProblem(code=code, message=message))

    def summary(self) -> str:
        verdict = "clean" if self.ok else f"{len(self.problems)} problem(s)"
        ledger = (
            f", ledger: {self.ledger_approvals} approved, {self.ledger_rejections} rejected, "
            f"{self.ledger_bonus_cents} cents of bonus confirmed"
            if self.ledger_rows
            else ""
        )
        return (
            f"study {self.study_id}: {self.items} items, {self.assignments} assignments, "
            f"{self.responses} responses, {self.stimuli} stimuli checked{ledger}: {verdict}"
        )


def _check_responses(report: AuditReport, study: Study) -> None:
    answered_without = Assignment.objects.filter(
        item__study=study, status=Assignment.Status.ANSWERED, response__isnull=True
    ).values_list("token", "item__public_id")
    for token, item_public_id in answered_without:
        report.add("responses", f"assignment {token} (item {item_public_id}) is answered but has no response")
    no_time = Assignment.objects.filter(
        item__study=study, status=Assignment.Status.ANSWERED, answered_at__isnull=True
    ).values_list("token", flat=True)
    for token in no_time:
        report.add("responses", f"assignment {token} is answered but has no answered_at")
    orphans = (
        Response.objects.filter(assignment__item__study=study)
        .exclude(assignment__status=Assignment.Status.ANSWERED)
        .values_list("pk", "assignment__token", "assignment__status")
    )
    for pk, token, status in orphans:
        report.add("responses", f"response {pk} belongs to assignment {token} whose status is {status!r}, not answered")


def _check_correctness(report: AuditReport, study: Study) -> None:
    design = design_for(study)
    if not design.audits_correct:
        return
    rows = Response.objects.filter(assignment__item__study=study, assignment__item__correct_option__isnull=False)
    for pk, chosen, correct, right in rows.values_list(
        "pk", "chosen_option", "correct", "assignment__item__correct_option"
    ):
        expected = design.correct_expected(chosen_option=chosen, correct_option=right)
        if correct != expected:
            report.add("correctness", f"response {pk} chose {chosen}, item's right option is {right}, "
                                      f"but correct={correct}")  # fmt: skip


def _check_items(report: AuditReport, study: Study) -> None:
    items = Item.objects.filter(study=study).annotate(
        actual_answered=Count("assignments", filter=Q(assignments__status=Assignment.Status.ANSWERED)),
        actual_leased=Count("assignments", filter=Q(assignments__status=Assignment.Status.LEASED)),
    )
    quota = study.judgments_per_item
    for item in items:
        report.items += 1
        name = f"item {item.public_id} ({item.role}, {item.method})"
        if item.role == Item.Role.MAIN and item.actual_answered + item.actual_leased > quota:
            report.add("quota", f"{name} has {item.actual_answered} answered + {item.actual_leased} open leases "
                                f"> judgments_per_item={quota}")  # fmt: skip
        if item.n_answered != item.actual_answered:
            report.add("counters", f"{name} says n_answered={item.n_answered} but has {item.actual_answered} answered")
        # Only main items have a quota, so allocation counts open leases on main items only.
        if item.role == Item.Role.MAIN and item.n_leased != item.actual_leased:
            report.add("counters", f"{name} says n_leased={item.n_leased} but has {item.actual_leased} open leases")


def _check_repeats(report: AuditReport, study: Study) -> None:
    twice = (
        Assignment.objects.filter(item__study=study)
        .values("participant__token", "item__public_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    )
    for row in twice:
        report.add("repeat", f"participant {row['participant__token']} was given item {row['item__public_id']} "
                             f"{row['n']} times")  # fmt: skip
    identities = (
        Participant.objects.filter(study=study, status=Participant.Status.COMPLETED)
        .values("platform", "platform_worker_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    )
    for row in identities:
        report.add("repeat", f"worker {row['platform']}:{row['platform_worker_id']!r} completed {row['n']} times")


def _check_codes(report: AuditReport, study: Study) -> None:
    completed = Participant.objects.filter(study=study, status=Participant.Status.COMPLETED).values_list(
        "pk", "token", "completion_code"
    )
    seen: dict[str, int] = {}
    for pk, token, code in completed.iterator():
        if code != completion_code_derive(study=study, participant_token=token):
            report.add("codes", f"participant {pk} holds completion code {code!r}, not its own")
        elif code in seen:
            report.add("codes", f"participants {seen[code]} and {pk} share completion code {code!r}")
        seen.setdefault(code, pk)


def _check_choices(report: AuditReport, study: Study) -> None:
    design = design_for(study)
    rows = Assignment.objects.filter(item__study=study).values_list(
        "token", "option_order", "model_a_shown_left", "item__options"
    )
    for token, order, a_left, options in rows.iterator():
        if (problem := design.stored_order_problem(order, len(options or []))) is not None:
            report.add("choices", f"assignment {token} {problem}")
        if (problem := design.stored_side_problem(a_left)) is not None:
            report.add("choices", f"assignment {token} {problem}")


def _check_screened(report: AuditReport, study: Study) -> None:
    screened = Participant.objects.filter(study=study, status=Participant.Status.SCREENED_OUT).annotate(
        n_assignments=Count("assignments")
    )
    for person in screened.only("pk", "completion_code", "practice_passed", "practice_attempts_used"):
        if person.n_assignments or person.completion_code or person.practice_passed or not person.practice_attempts_used:
            report.add("screened", f"participant {person.pk} is screened out but holds {person.n_assignments} "
                                   f"assignment(s), code {person.completion_code!r}, practice_passed="
                                   f"{person.practice_passed}, {person.practice_attempts_used} attempt(s)")  # fmt: skip


def _check_arms(report: AuditReport, study: Study) -> None:
    names = arm_names(study.arms)
    people = Participant.objects.filter(study=study)
    if not names:
        for pk, arm in people.exclude(arm="").values_list("pk", "arm").order_by("pk"):
            report.add("arms", f"participant {pk} holds arm {arm!r} but the study has no arms")
        return
    arms = dict(people.values_list("pk", "arm"))
    for pk, arm in sorted(arms.items()):
        if arm not in names:
            report.add("arms", f"participant {pk} holds arm {arm!r}, not one of the study's arms ({', '.join(names)})")
    held = (Assignment.objects.filter(participant__study=study, item__role=Item.Role.MAIN)
            .values_list("participant_id", "item__method").distinct().order_by("participant_id"))  # fmt: skip
    for pk, method in held:
        allowed = arm_methods(study.arms, arms.get(pk, ""))
        if arms.get(pk, "") in names and allowed is not None and method not in allowed:
            report.add("arms", f"participant {pk} of arm {arms[pk]!r} holds a main item of method {method!r}, "
                               f"outside its arm ({', '.join(allowed)})")  # fmt: skip
    counts = arm_counts(study=study)
    leavers = people.exclude(arm="").filter(
        status__in=(Participant.Status.DECLINED, Participant.Status.SCREENED_OUT)
    ).count()
    spread = arm_spread(names, counts)
    if spread > 1 + leavers:
        report.add("arms", f"arm counts { {n: counts[n] for n in names} } differ by {spread}; at most "
                           f"{1 + leavers} allowed ({leavers} declined or screened-out participant(s) left their arm)")


def _ledger_payload(row: PlatformAction) -> str:
    """A bonus's request without its idempotency key (MTurk's ``UniqueRequestToken`` is the key),
    as canonical JSON: two rows with equal payloads pay the same thing for the same purpose."""
    request = row.request if isinstance(row.request, dict) else {"request": row.request}
    kept = {k: v for k, v in request.items() if k != "UniqueRequestToken" and v != row.idempotency_key}
    return json.dumps([row.amount_cents, row.currency, kept], sort_keys=True, default=str)


def _check_ledger(report: AuditReport, study: Study) -> None:
    rows = list(PlatformAction.objects.filter(study=study).order_by("pk"))
    report.ledger_rows = len(rows)
    for row in rows:
        if row.status in (PlatformAction.Status.PENDING, PlatformAction.Status.SENT):
            report.add("ledger", f"{row.action} {row.idempotency_key} (participant {row.participant_id}) is "
                                 f"{row.status}, not confirmed: reconcile before paying again")  # fmt: skip
    confirmed = [row for row in rows if row.status == PlatformAction.Status.CONFIRMED]
    report.ledger_approvals = sum(row.action == PlatformAction.Action.APPROVE for row in confirmed)
    report.ledger_rejections = sum(row.action == PlatformAction.Action.REJECT for row in confirmed)
    report.ledger_bonus_cents = sum(
        row.amount_cents or 0 for row in confirmed if row.action == PlatformAction.Action.BONUS
    )
    paid = [r for r in confirmed if r.participant_id is not None]
    people = {p.pk: p for p in Participant.objects.filter(pk__in={r.participant_id for r in paid})}
    by_person: dict[int, dict[str, list[PlatformAction]]] = {}
    for row in paid:
        by_person.setdefault(row.participant_id, {}).setdefault(row.action, []).append(row)
        person = people[row.participant_id]
        if row.action not in (PlatformAction.Action.APPROVE, PlatformAction.Action.BONUS):
            continue
        if person.study_id != study.pk or person.status != Participant.Status.COMPLETED:
            report.add("ledger", f"{row.action} {row.idempotency_key} confirmed for participant {person.pk}, who did "
                                 f"not complete the study (status {person.status!r})")  # fmt: skip
        elif person.completion_code != completion_code_derive(study=study, participant_token=person.token):
            report.add("ledger", f"{row.action} {row.idempotency_key} confirmed for participant {person.pk}, whose "
                                 f"completion code {person.completion_code!r} is not its own")  # fmt: skip
    for pk, actions in sorted(by_person.items()):
        approvals = actions.get(PlatformAction.Action.APPROVE, [])
        rejections = actions.get(PlatformAction.Action.REJECT, [])
        if len(approvals) > 1:
            report.add("ledger", f"participant {pk} has {len(approvals)} confirmed approvals: "
                                 f"{', '.join(r.idempotency_key for r in approvals)}")  # fmt: skip
        if approvals and rejections:
            report.add("ledger", f"participant {pk} is both approved ({approvals[0].idempotency_key}) and rejected "
                                 f"({rejections[0].idempotency_key})")  # fmt: skip
        bonuses: dict[str, list[PlatformAction]] = {}
        for row in actions.get(PlatformAction.Action.BONUS, []):
            bonuses.setdefault(_ledger_payload(row), []).append(row)
        for same in bonuses.values():
            if len(same) > 1:
                report.add("ledger", f"participant {pk} has {len(same)} confirmed bonuses of {same[0].amount_cents} "
                                     f"cents for the same purpose ({', '.join(r.idempotency_key for r in same)}): "
                                     f"possible double payment")  # fmt: skip


def _study_stimuli(study: Study) -> Iterable[Stimulus]:
    """The stimuli the study's items show: every slot its design uses (``Design.stimulus_slots``:
    ``a`` = ``Item.stimulus_a``, ...; one query for all of them)."""
    fields = [f"stimulus_{slot}" for slot in design_for(study).stimulus_slots]
    rows = Item.objects.filter(study=study).values_list(*fields)
    ids = {pk for row in rows for pk in row if pk is not None}
    return Stimulus.objects.filter(pk__in=ids).order_by("pk").only("file", "sha256", "method", "image_id")


def _check_stimuli(report: AuditReport, study: Study) -> None:
    for stimulus in _study_stimuli(study):
        report.stimuli += 1
        name = stimulus.file.name
        if not name or not default_storage.exists(name):
            report.add("stimulus", f"stimulus {stimulus.pk} ({stimulus.method}) file {name!r} is missing")
            continue
        actual = storage_sha256(name)
        if actual != stimulus.sha256:
            report.add("stimulus", f"stimulus {stimulus.pk} ({stimulus.method}) file {name!r} hashes to "
                                   f"{actual[:12]}…, recorded {stimulus.sha256[:12]}…")  # fmt: skip


def study_audit(*, study_id: int, check_files: bool = True) -> AuditReport:
    """Check every invariant listed in the module docstring for one study (read-only).

    Args:
        study_id: the study's primary key.
        check_files: re-hash the stimulus files (the slow part; on by default).

    Returns:
        An ``AuditReport`` whose ``problems`` name every violation (empty when clean).
    """
    study = Study.objects.get(pk=study_id)
    report = AuditReport(study_id=study.pk)
    report.assignments = Assignment.objects.filter(item__study=study).count()
    report.responses = Response.objects.filter(assignment__item__study=study).count()
    _check_responses(report, study)
    _check_correctness(report, study)
    _check_items(report, study)
    _check_repeats(report, study)
    _check_codes(report, study)
    _check_choices(report, study)
    _check_screened(report, study)
    _check_arms(report, study)
    _check_ledger(report, study)
    if check_files:
        _check_stimuli(report, study)
    return report

