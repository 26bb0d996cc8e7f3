"""MTurk contract tests: every request goes through botocore's ``Stubber``, which checks it against the
MTurk service model shipped with botocore (operation names, shapes, required fields, types) and
fails on any call not queued. These are contract tests against botocore's published service model,
not against MTurk: no machine here reaches MTurk."""

from __future__ import annotations

from datetime import UTC, datetime

import boto3
import pytest
from botocore.exceptions import ReadTimeoutError
from botocore.stub import ANY, Stubber

from studies.fixtures.builders import make_worker_study
from studies.models import ExclusionGroup, Participant, PlatformAction, Study
from studies.selectors.participation import platform_setup
from studies.services import ledger, mturk

pytestmark = pytest.mark.django_db(transaction=True)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def client():
    c = boto3.client(
        "mturk",
        region_name="us-east-1",
        endpoint_url=mturk.SANDBOX_ENDPOINT,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    with Stubber(c) as stubber:
        c.stubber = stubber
        yield c
        stubber.assert_no_pending_responses()


@pytest.fixture
def study(settings):
    settings.XAISTUDY_PUBLIC_URL = "https://study.example.org"
    s = make_worker_study(platform=Study.Platform.MTURK, with_files=False)
    s.exclusion_group = ExclusionGroup.objects.create(name="xai-2026")
    s.save()
    return s


def participant(study, n=1, **kw):
    return Participant.objects.create(
        study=study,
        platform="mturk",
        platform_worker_id=f"AWORKER{n}",
        worker_hash=f"h{n}",
        mturk_assignment_id=f"ASSIGN{n}",
        mturk_hit_id="HIT1",
        session_key=f"ASSIGN{n}",
        **kw,
    )


def bonus_record(p, amount="0.50"):
    return {
        "WorkerId": p.platform_worker_id,
        "BonusAmount": amount,
        "AssignmentId": p.mturk_assignment_id,
        "Reason": "study bonus",
        "GrantTime": NOW,
    }


def test_endpoint_is_the_sandbox_unless_switched_off(settings):
    assert mturk.mturk_endpoint() == mturk.SANDBOX_ENDPOINT
    settings.XAISTUDY_MTURK_SANDBOX = False
    assert mturk.mturk_endpoint() == mturk.PRODUCTION_ENDPOINT


def test_full_life_cycle(client, study):
    stub = client.stubber
    qual_name = mturk.qualification_type_name(study.exclusion_group)
    # the exclusion group's "took part" type: not there yet, created once
    stub.add_response(
        "list_qualification_types",
        {"NumResults": 0, "QualificationTypes": []},
        {"Query": qual_name, "MustBeRequestable": False, "MustBeOwnedByCaller": True, "MaxResults": 100},
    )
    stub.add_response(
        "create_qualification_type",
        {"QualificationType": {"QualificationTypeId": "QTOOKPART", "Name": qual_name}},
        {"Name": qual_name, "Description": ANY, "QualificationTypeStatus": "Active"},
    )
    key = ledger.ledger_key(platform="mturk", action="create", study=study, extra="1")
    guarded = "DiscoverPreviewAndAccept"
    question = platform_setup(study=study, base_url="https://study.example.org")["mturk_external_question"]
    assert "<ExternalURL>https://study.example.org/" in question
    stub.add_response(
        "create_hit",
        {"HIT": {"HITId": "HIT1", "HITTypeId": "T1", "CreationTime": NOW}},
        {
            "Title": study.public_title[:128],
            "Description": ANY,
            "Reward": "1.50",
            "MaxAssignments": 20,
            "LifetimeInSeconds": 86400,
            "AssignmentDurationInSeconds": 1800,
            "Question": question,
            "QualificationRequirements": [
                {
                    "QualificationTypeId": "000000000000000000L0",
                    "Comparator": "GreaterThanOrEqualTo",
                    "IntegerValues": [98],
                    "ActionsGuarded": guarded,
                },
                {
                    "QualificationTypeId": "00000000000000000040",
                    "Comparator": "GreaterThanOrEqualTo",
                    "IntegerValues": [1000],
                    "ActionsGuarded": guarded,
                },
                {
                    "QualificationTypeId": "00000000000000000071",
                    "Comparator": "EqualTo",
                    "LocaleValues": [{"Country": "US"}],
                    "ActionsGuarded": guarded,
                },
                {"QualificationTypeId": "QTOOKPART", "Comparator": "DoesNotExist", "ActionsGuarded": guarded},
            ],
            "RequesterAnnotation": key,
            "UniqueRequestToken": key,
        },
    )
    row = mturk.hit_create(
        study=study, reward_cents=150, assignments=20, lifetime_s=86400, duration_s=1800, client=client
    )
    assert row.status == "confirmed"
    assert row.response["HIT"]["HITId"] == "HIT1"
    assert len(key) <= 64
    # a second call is a no-op (the ledger row is confirmed), apart from finding the qualification type
    stub.add_response(
        "list_qualification_types",
        {"NumResults": 1, "QualificationTypes": [{"QualificationTypeId": "QTOOKPART", "Name": qual_name}]},
        None,
    )
    assert (
        mturk.hit_create(
            study=study, reward_cents=150, assignments=20, lifetime_s=86400, duration_s=1800, client=client
        ).pk
        == row.pk
    )

    good, bad = participant(study, 1), participant(study, 2)
    stub.add_response(
        "list_assignments_for_hit",
        {
            "NextToken": "p2",
            "NumResults": 1,
            "Assignments": [
                {
                    "AssignmentId": "ASSIGN1",
                    "WorkerId": "AWORKER1",
                    "HITId": "HIT1",
                    "AssignmentStatus": "Submitted",
                }
            ],
        },
        {"HITId": "HIT1", "AssignmentStatuses": ["Submitted"], "MaxResults": 100},
    )
    stub.add_response(
        "list_assignments_for_hit",
        {
            "NumResults": 1,
            "Assignments": [
                {
                    "AssignmentId": "ASSIGN2",
                    "WorkerId": "AWORKER2",
                    "HITId": "HIT1",
                    "AssignmentStatus": "Submitted",
                }
            ],
        },
        {"HITId": "HIT1", "AssignmentStatuses": ["Submitted"], "MaxResults": 100, "NextToken": "p2"},
    )
    assert [a["AssignmentId"] for a in mturk.assignments_list(hit_id="HIT1", client=client)] == [
        "ASSIGN1",
        "ASSIGN2",
    ]

    stub.add_response("approve_assignment", {}, {"AssignmentId": "ASSIGN1"})
    assert mturk.assignment_approve(participant=good, client=client).status == "confirmed"
    stub.add_response(
        "reject_assignment", {}, {"AssignmentId": "ASSIGN2", "RequesterFeedback": "failed attention checks"}
    )
    assert (
        mturk.assignment_reject(participant=bad, reason="failed attention checks", client=client).status
        == "confirmed"
    )

    bkey = ledger.ledger_key(
        platform="mturk", action="bonus", study=study, participant=good, extra="ASSIGN1:bonus"
    )
    stub.add_response(
        "send_bonus",
        {},
        {
            "WorkerId": "AWORKER1",
            "BonusAmount": "0.50",
            "AssignmentId": "ASSIGN1",
            "Reason": "study bonus",
            "UniqueRequestToken": bkey,
        },
    )
    assert (
        mturk.bonus_send(participant=good, amount_cents=50, reason="study bonus", client=client).status
        == "confirmed"
    )

    stub.add_response(
        "list_qualification_types",
        {"NumResults": 1, "QualificationTypes": [{"QualificationTypeId": "QTOOKPART", "Name": qual_name}]},
        None,
    )
    stub.add_response(
        "associate_qualification_with_worker",
        {},
        {
            "QualificationTypeId": "QTOOKPART",
            "WorkerId": "AWORKER1",
            "IntegerValue": 1,
            "SendNotification": False,
        },
    )
    assert mturk.qualification_grant(participant=good, client=client).status == "confirmed"
    assert PlatformAction.objects.filter(status="confirmed").count() == 5


def test_timeout_after_mturk_accepted_a_bonus_is_not_paid_twice(client, study):
    p = participant(study)
    stub = client.stubber
    stub.add_response("send_bonus", {}, None)  # MTurk accepts ...

    def lost(**kwargs):  # ... and the answer never arrives
        client.meta.events.unregister("after-call.mturk.SendBonus", lost)
        raise ReadTimeoutError(endpoint_url=mturk.SANDBOX_ENDPOINT)

    client.meta.events.register("after-call.mturk.SendBonus", lost)
    with pytest.raises(ReadTimeoutError):
        mturk.bonus_send(participant=p, amount_cents=50, reason="study bonus", client=client)
    assert PlatformAction.objects.get().status == "sent"
    # the retry: ListBonusPayments finds it; a second SendBonus would fail the Stubber (not queued)
    stub.add_response(
        "list_bonus_payments",
        {"NumResults": 1, "BonusPayments": [bonus_record(p)]},
        {"AssignmentId": "ASSIGN1", "MaxResults": 100},
    )
    row = mturk.bonus_send(participant=p, amount_cents=50, reason="study bonus", client=client)
    assert (row.status, row.attempts, row.response["BonusPayment"]["BonusAmount"]) == ("confirmed", 2, "0.50")


def test_crash_between_mturks_answer_and_our_commit_is_not_paid_twice(client, study, monkeypatch):
    p = participant(study)
    stub = client.stubber
    stub.add_response("send_bonus", {}, None)
    real = ledger._confirm

    def crash(row, response):
        monkeypatch.setattr(ledger, "_confirm", real)
        raise RuntimeError("worker killed before the commit")

    monkeypatch.setattr(ledger, "_confirm", crash)
    with pytest.raises(RuntimeError):
        mturk.bonus_send(participant=p, amount_cents=50, reason="study bonus", client=client)
    assert PlatformAction.objects.get().status == "sent"
    # another bonus of a different amount on the assignment is not taken for this one
    stub.add_response(
        "list_bonus_payments",
        {"NumResults": 2, "BonusPayments": [bonus_record(p, "1.00"), bonus_record(p)]},
        None,
    )
    row = mturk.bonus_send(participant=p, amount_cents=50, reason="study bonus", client=client)
    assert row.status == "confirmed"
    assert PlatformAction.objects.count() == 1


def test_5xx_on_approve_leaves_sent_and_the_retry_reconciles(client, study):
    p = participant(study)
    stub = client.stubber
    stub.add_client_error("approve_assignment", service_error_code="ServiceFault", http_status_code=500)
    with pytest.raises(Exception, match="ServiceFault"):
        mturk.assignment_approve(participant=p, client=client)
    assert PlatformAction.objects.get().status == "sent"
    stub.add_response(
        "get_assignment",
        {
            "Assignment": {
                "AssignmentId": "ASSIGN1",
                "WorkerId": "AWORKER1",
                "HITId": "HIT1",
                "AssignmentStatus": "Approved",
            }
        },
        {"AssignmentId": "ASSIGN1"},
    )
    row = mturk.assignment_approve(participant=p, client=client)
    assert row.status == "confirmed"
    assert row.response["Assignment"]["AssignmentStatus"] == "Approved"


def test_not_approved_yet_is_sent_again(client, study):
    p = participant(study)
    stub = client.stubber
    stub.add_client_error("approve_assignment", service_error_code="ServiceFault", http_status_code=500)
    with pytest.raises(Exception, match="ServiceFault"):
        mturk.assignment_approve(participant=p, client=client)
    stub.add_response(
        "get_assignment",
        {"Assignment": {"AssignmentId": "ASSIGN1", "AssignmentStatus": "Submitted"}},
        {"AssignmentId": "ASSIGN1"},
    )
    stub.add_response("approve_assignment", {}, {"AssignmentId": "ASSIGN1"})
    assert mturk.assignment_approve(participant=p, client=client).status == "confirmed"


def test_request_error_is_a_definite_refusal(client, study):
    p = participant(study)
    client.stubber.add_client_error(
        "send_bonus",
        service_error_code="RequestError",
        http_status_code=400,
        service_message="worker not found",
    )
    row = mturk.bonus_send(participant=p, amount_cents=50, reason="study bonus", client=client)
    assert row.status == "failed"
    assert "worker not found" in row.error
    assert mturk.bonus_send(participant=p, amount_cents=50, reason="study bonus", client=client).pk == row.pk


def test_decisions_approve_completed_and_reject_flagged(client, study, monkeypatch):
    from decimal import Decimal

    from studies.services import exports

    done = participant(study, 1, status=Participant.Status.COMPLETED, completion_code="CODE1")
    failed = participant(study, 2, status=Participant.Status.COMPLETED, completion_code="CODE2")
    participant(study, 3)  # still started: review, left alone
    monkeypatch.setattr(
        exports,
        "payment_decisions",
        lambda **kw: [
            exports.PaymentDecision(done.pk, "approve", "", Decimal(0)),
            exports.PaymentDecision(failed.pk, "reject", "failed attention checks", Decimal(0)),
        ],
    )
    monkeypatch.setattr(exports, "exclusion_flags_compute", lambda **kw: None)
    client.stubber.add_response("approve_assignment", {}, {"AssignmentId": "ASSIGN1"})
    client.stubber.add_response(
        "reject_assignment", {}, {"AssignmentId": "ASSIGN2", "RequesterFeedback": "failed attention checks"}
    )
    result = mturk.assignments_decide(study=study, client=client)
    assert [len(result["approve"]), len(result["reject"])] == [1, 1]
