"""audit_study's ledger check (issue #17): the PlatformAction rows agree with the participants."""

from __future__ import annotations

import pytest

from studies.fixtures.builders import make_worker_study
from studies.models import Participant, PlatformAction, Study
from studies.services.audit import study_audit
from studies.services.participation import completion_code_derive

pytestmark = pytest.mark.django_db

A, R, B = PlatformAction.Action.APPROVE, PlatformAction.Action.REJECT, PlatformAction.Action.BONUS
CONFIRMED = PlatformAction.Status.CONFIRMED


def _person(study: Study, worker: str, *, completed: bool = True) -> Participant:
    person = Participant.objects.create(
        study=study, platform=study.platform, platform_worker_id=worker, worker_hash=worker
    )
    if completed:
        person.status = Participant.Status.COMPLETED
        person.completion_code = completion_code_derive(study=study, participant_token=person.token)
        person.save(update_fields=["status", "completion_code"])
    return person


def _row(study: Study, person: Participant | None, action: str, key: str, *, status: str = CONFIRMED,
         cents: int | None = None, request: dict | None = None) -> PlatformAction:  # fmt: skip
    return PlatformAction.objects.create(
        study=study, participant=person, platform=study.platform, action=action, idempotency_key=key,
        amount_cents=cents, request=request if request is not None else {}, status=status,
    )  # fmt: skip


def _ledger(study: Study) -> list[str]:
    report = study_audit(study_id=study.pk, check_files=False)
    return [p.message for p in report.problems if p.code == "ledger"]


@pytest.fixture(params=[Study.Platform.MTURK, Study.Platform.PROLIFIC])
def study(request: pytest.FixtureRequest) -> Study:
    return make_worker_study(platform=request.param, with_files=False)


def test_consistent_ledger_is_clean_and_counted(study: Study) -> None:
    w1, w2, w3 = _person(study, "W1"), _person(study, "W2"), _person(study, "W3")
    _person(study, "W4", completed=False)
    _row(study, w1, A, "a1")
    _row(study, w2, R, "r2")
    # Two bonuses of one amount for two purposes (their reasons differ): not a double payment.
    _row(
        study,
        w1,
        B,
        "b1",
        cents=50,
        request={"Reason": "x", "BonusAmount": "0.50", "UniqueRequestToken": "b1"},
    )
    _row(
        study,
        w1,
        B,
        "b1b",
        cents=50,
        request={"Reason": "y", "BonusAmount": "0.50", "UniqueRequestToken": "b1b"},
    )
    _row(study, w3, A, "a3", status=PlatformAction.Status.FAILED)  # refused: neither open nor paid
    _row(study, None, B, "bulk", cents=120, request={"payments": [["W1", 120]]})
    _row(study, None, PlatformAction.Action.CREATE, "create", cents=100)
    report = study_audit(study_id=study.pk, check_files=False)
    assert report.ok, report.problems
    # W3 completed without a confirmed approval: not a problem (paid by CSV, say).
    assert (report.ledger_approvals, report.ledger_rejections, report.ledger_bonus_cents) == (1, 1, 220)
    assert "ledger: 1 approved, 1 rejected, 220 cents of bonus confirmed" in report.summary()


def test_no_ledger_rows_leave_the_summary_as_before(study: Study) -> None:
    _person(study, "W1")
    report = study_audit(study_id=study.pk, check_files=False)
    assert report.ok
    assert "ledger" not in report.summary()


@pytest.mark.parametrize("status", [PlatformAction.Status.PENDING, PlatformAction.Status.SENT])
def test_open_row_is_named(study: Study, status: str) -> None:
    _row(study, _person(study, "W1"), A, "open1", status=status)
    (problem,) = _ledger(study)
    assert "open1" in problem
    assert status in problem
    assert "reconcile before paying again" in problem


@pytest.mark.parametrize("action", [A, B])
def test_paid_participant_who_did_not_complete_is_named(study: Study, action: str) -> None:
    _row(study, _person(study, "W1", completed=False), action, "k1", cents=10)
    (problem,) = _ledger(study)
    assert "k1" in problem
    assert "did not complete" in problem


@pytest.mark.parametrize("action", [A, B])
def test_paid_participant_with_a_code_not_its_own_is_named(study: Study, action: str) -> None:
    person = _person(study, "W1")
    Participant.objects.filter(pk=person.pk).update(completion_code="WRONGCODE")
    _row(study, person, action, "k1", cents=10)
    problems = [p.code for p in study_audit(study_id=study.pk, check_files=False).problems]
    assert problems.count("codes") == 1  # the code check names it too
    (problem,) = _ledger(study)
    assert "k1" in problem
    assert "not its own" in problem


def test_a_rejected_participant_who_did_not_complete_is_not_a_problem(study: Study) -> None:
    _row(study, _person(study, "W1", completed=False), R, "r1")
    assert _ledger(study) == []


def test_two_approvals_are_named(study: Study) -> None:
    person = _person(study, "W1")
    _row(study, person, A, "a1")
    _row(study, person, A, "a2")
    (problem,) = _ledger(study)
    assert f"participant {person.pk} has 2 confirmed approvals" in problem
    assert "a1" in problem
    assert "a2" in problem


def test_approved_and_rejected_is_named(study: Study) -> None:
    person = _person(study, "W1")
    _row(study, person, A, "a1")
    _row(study, person, R, "r1")
    (problem,) = _ledger(study)
    assert "both approved (a1) and rejected (r1)" in problem


def test_a_failed_second_approval_is_not_a_problem(study: Study) -> None:
    person = _person(study, "W1")
    _row(study, person, A, "a1")
    _row(study, person, A, "a2", status=PlatformAction.Status.FAILED)
    _row(study, person, R, "r1", status=PlatformAction.Status.FAILED)
    assert _ledger(study) == []


def test_same_bonus_confirmed_twice_is_a_possible_double_payment(study: Study) -> None:
    person = _person(study, "W1")
    same = {"WorkerId": "W1", "BonusAmount": "0.50", "Reason": "accuracy"}
    _row(study, person, B, "b1", cents=50, request={**same, "UniqueRequestToken": "b1"})
    _row(study, person, B, "b2", cents=50, request={**same, "UniqueRequestToken": "b2"})
    (problem,) = _ledger(study)
    assert "possible double payment" in problem
    assert "b1" in problem
    assert "b2" in problem
    assert study_audit(study_id=study.pk, check_files=False).ledger_bonus_cents == 100


def test_bonuses_to_different_participants_are_not_doubles(study: Study) -> None:
    same = {"BonusAmount": "0.50", "Reason": "accuracy"}
    _row(study, _person(study, "W1"), B, "b1", cents=50, request=same)
    _row(study, _person(study, "W2"), B, "b2", cents=50, request=same)
    assert _ledger(study) == []
