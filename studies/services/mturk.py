"""MTurk through boto3 (issue #17): a thin client; every call that changes something goes through the
payment ledger (``studies.services.ledger``), so a retry after a crash or a timeout reconciles
with MTurk before acting again and nothing is paid twice.

Endpoint: the sandbox unless ``XAISTUDY_MTURK_SANDBOX`` is false (then production), region
us-east-1. Credentials: boto3's own chain only (environment, shared config, instance role); never
from the database. Each function takes ``client=`` so tests pass a botocore-``Stubber``'d client:
those are contract tests against botocore's published MTurk service model, not against MTurk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import boto3
from botocore.exceptions import ClientError
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from studies.models import ExclusionGroup, Participant, PlatformAction, Study
from studies.selectors.participation import platform_setup
from studies.services.ledger import PlatformRefused, ledger_call, ledger_key

SANDBOX_ENDPOINT = "https://mturk-requester-sandbox.us-east-1.amazonaws.com"
PRODUCTION_ENDPOINT = "https://mturk-requester.us-east-1.amazonaws.com"
REGION = "us-east-1"

#: MTurk's system qualification types.
APPROVAL_RATE_QUAL = "000000000000000000L0"
APPROVED_COUNT_QUAL = "00000000000000000040"
LOCALE_QUAL = "00000000000000000071"

PLATFORM = Study.Platform.MTURK


def mturk_endpoint() -> str:
    """The requester endpoint: the sandbox unless ``XAISTUDY_MTURK_SANDBOX`` is false."""
    return SANDBOX_ENDPOINT if getattr(settings, "XAISTUDY_MTURK_SANDBOX", True) else PRODUCTION_ENDPOINT


def mturk_client(client: Any = None) -> Any:
    """The given client, or a new boto3 one (credentials from boto3's chain, never from the DB)."""
    if client is not None:
        return client
    return boto3.client("mturk", region_name=REGION, endpoint_url=mturk_endpoint())


def _dollars(cents: int) -> str:
    """MTurk's money strings: ``"1.50"``."""
    return f"{Decimal(cents) / 100:.2f}"


def _refusing(fn: Callable[[], Any]) -> Callable[[], Any]:
    """MTurk's ``RequestError`` (a 4xx: the request itself is wrong) is a definite refusal; a
    ``ServiceFault`` (5xx) or a timeout is not: the ledger leaves the row ``sent`` and re-raises."""

    def wrapped() -> Any:
        try:
            return fn()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "RequestError":
                raise PlatformRefused(str(error)) from error
            raise

    return wrapped


def _pages(method: Callable[..., dict], key: str, **params: Any) -> Iterator[dict]:
    """Every item of a paginated MTurk list call (``NextToken``)."""
    token = None
    while True:
        page = method(**params, **({"NextToken": token} if token else {}))
        yield from page.get(key, [])
        token = page.get("NextToken")
        if not token:
            return


def qualification_type_name(group: ExclusionGroup) -> str:
    return f"xaistudy took part: {group.name}"[:255]


def qualification_type_ensure(*, group: ExclusionGroup, client: Any = None) -> str:
    """The exclusion group's "took part" qualification type id: found by its exact name among the
    caller's own types, else created once (names are unique per requester, so a retry finds it)."""
    client = mturk_client(client)
    name = qualification_type_name(group)
    for qual in _pages(client.list_qualification_types, "QualificationTypes",
                       Query=name, MustBeRequestable=False, MustBeOwnedByCaller=True, MaxResults=100):  # fmt: skip
        if qual.get("Name") == name:
            return qual["QualificationTypeId"]
    created = client.create_qualification_type(
        Name=name,
        Description=f"Took part in a study of the xaistudy exclusion group {group.name!r}"[:2000],
        QualificationTypeStatus="Active",
    )
    return created["QualificationType"]["QualificationTypeId"]


def hit_requirements(
    *, study: Study, min_approval_rate: int, min_approved: int, locale: str, client: Any = None
) -> list[dict]:
    """Approval rate, approved count, locale, and the exclusion group's "took part" ``DoesNotExist``."""
    guarded = "DiscoverPreviewAndAccept"
    requirements = [
        {"QualificationTypeId": APPROVAL_RATE_QUAL, "Comparator": "GreaterThanOrEqualTo",
         "IntegerValues": [min_approval_rate], "ActionsGuarded": guarded},
        {"QualificationTypeId": APPROVED_COUNT_QUAL, "Comparator": "GreaterThanOrEqualTo",
         "IntegerValues": [min_approved], "ActionsGuarded": guarded},
        {"QualificationTypeId": LOCALE_QUAL, "Comparator": "EqualTo",
         "LocaleValues": [{"Country": locale}], "ActionsGuarded": guarded},
    ]  # fmt: skip
    if study.exclusion_group_id:
        qual_id = qualification_type_ensure(group=study.exclusion_group, client=client)
        requirements.append(
            {"QualificationTypeId": qual_id, "Comparator": "DoesNotExist", "ActionsGuarded": guarded}
        )
    return requirements


def hit_create(
    *,
    study: Study,
    reward_cents: int,
    assignments: int,
    lifetime_s: int,
    duration_s: int,
    min_approval_rate: int = 98,
    min_approved: int = 1000,
    locale: str = "US",
    batch: str = "1",
    client: Any = None,
) -> PlatformAction:
    """Create the study's HIT (an ExternalQuestion at the study's entry URL) through the ledger.

    ``UniqueRequestToken`` and ``RequesterAnnotation`` are the ledger key, so a retry finds the HIT
    with ``ListHITs`` instead of creating a second one. ``batch`` tells several HITs of one study apart.
    """
    if study.platform != PLATFORM:
        raise ValueError("not an MTurk study")
    base_url = settings.XAISTUDY_PUBLIC_URL
    if not base_url.startswith("https://"):
        raise ImproperlyConfigured("XAISTUDY_PUBLIC_URL must be the site's https origin to create a HIT")
    client = mturk_client(client)
    setup = platform_setup(study=study, base_url=base_url)
    key = ledger_key(platform=PLATFORM, action=PlatformAction.Action.CREATE, study=study, extra=batch)
    params = {
        "Title": setup["title"][:128],
        "Description": setup["description"][:2000] or setup["title"][:128],
        "Reward": _dollars(reward_cents),
        "MaxAssignments": assignments,
        "LifetimeInSeconds": lifetime_s,
        "AssignmentDurationInSeconds": duration_s,
        "Question": setup["mturk_external_question"],
        "QualificationRequirements": hit_requirements(
            study=study,
            min_approval_rate=min_approval_rate,
            min_approved=min_approved,
            locale=locale,
            client=client,
        ),
        "RequesterAnnotation": key,
        "UniqueRequestToken": key,
    }

    def reconcile() -> dict | None:
        for hit in _pages(client.list_hits, "HITs", MaxResults=100):
            if hit.get("RequesterAnnotation") == key:
                return {"HIT": hit}
        return None

    return ledger_call(study=study, action=PlatformAction.Action.CREATE, key=key, amount_cents=reward_cents,
                       call=_refusing(lambda: client.create_hit(**params)), reconcile=reconcile,
                       request={k: v for k, v in params.items() if k != "Question"})  # fmt: skip


def assignments_list(*, hit_id: str, client: Any = None) -> list[dict]:
    """The HIT's submitted assignments (all pages)."""
    client = mturk_client(client)
    return list(_pages(client.list_assignments_for_hit, "Assignments",
                       HITId=hit_id, AssignmentStatuses=["Submitted"], MaxResults=100))  # fmt: skip


def _assignment_status(client: Any, assignment_id: str, wanted: str) -> dict | None:
    """The assignment's record if MTurk already has it in status ``wanted``, else ``None``."""
    try:
        assignment = client.get_assignment(AssignmentId=assignment_id)["Assignment"]
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "RequestError":
            return None
        raise
    return {"Assignment": assignment} if assignment.get("AssignmentStatus") == wanted else None


def _need_assignment(participant: Participant) -> str:
    if not participant.mturk_assignment_id or not participant.platform_worker_id:
        raise ValueError(f"participant {participant.pk} has no MTurk assignment")
    return participant.mturk_assignment_id


def assignment_approve(*, participant: Participant, feedback: str = "", client: Any = None) -> PlatformAction:
    """Approve the participant's assignment through the ledger (reconciled with ``GetAssignment``)."""
    client = mturk_client(client)
    assignment_id = _need_assignment(participant)
    params = {"AssignmentId": assignment_id, **({"RequesterFeedback": feedback[:1024]} if feedback else {})}
    key = ledger_key(platform=PLATFORM, action=PlatformAction.Action.APPROVE, study=participant.study,
                     participant=participant, extra=assignment_id)  # fmt: skip
    return ledger_call(study=participant.study, action=PlatformAction.Action.APPROVE, key=key, participant=participant,
                       call=_refusing(lambda: client.approve_assignment(**params)),
                       reconcile=lambda: _assignment_status(client, assignment_id, "Approved"), request=params)  # fmt: skip


def assignment_reject(*, participant: Participant, reason: str, client: Any = None) -> PlatformAction:
    """Reject the participant's assignment with ``reason`` (MTurk requires one) through the ledger."""
    if not reason:
        raise ValueError("MTurk requires a reason to reject")
    client = mturk_client(client)
    assignment_id = _need_assignment(participant)
    params = {"AssignmentId": assignment_id, "RequesterFeedback": reason[:1024]}
    key = ledger_key(platform=PLATFORM, action=PlatformAction.Action.REJECT, study=participant.study,
                     participant=participant, extra=assignment_id)  # fmt: skip
    return ledger_call(study=participant.study, action=PlatformAction.Action.REJECT, key=key, participant=participant,
                       call=_refusing(lambda: client.reject_assignment(**params)),
                       reconcile=lambda: _assignment_status(client, assignment_id, "Rejected"), request=params)  # fmt: skip


def assignments_decide(*, study: Study, client: Any = None) -> dict[str, list[PlatformAction]]:
    """Apply the study's payment decisions (``exports.payment_decisions``) to its MTurk participants:
    approve those it approves, reject those it rejects with its reason; ``review`` and
    ``screened_out`` are left to the researcher (never approved or rejected here)."""
    from studies.services.exports import exclusion_flags_compute, payment_decisions

    client = mturk_client(client)
    decisions = payment_decisions(study=study, flags=exclusion_flags_compute(study=study))
    people = Participant.objects.in_bulk([d.participant_id for d in decisions])
    done: dict[str, list[PlatformAction]] = {"approve": [], "reject": []}
    for decision in decisions:
        participant = people[decision.participant_id]
        if participant.platform != PLATFORM or not participant.mturk_assignment_id:
            continue
        if decision.action == "approve" and participant.completion_code:
            done["approve"].append(assignment_approve(participant=participant, client=client))
        elif decision.action == "reject":
            done["reject"].append(
                assignment_reject(participant=participant, reason=decision.reason, client=client)
            )
    return done


def bonus_send(
    *, participant: Participant, amount_cents: int, reason: str, purpose: str = "bonus", client: Any = None
) -> PlatformAction:
    """Send a bonus through the ledger with ``UniqueRequestToken`` = the ledger key. A retry first
    looks in ``ListBonusPayments`` for the assignment: a payment of the same amount to the same
    worker there is taken as this one (confirmed, not paid again). ``purpose`` tells apart two
    intended bonuses to one assignment."""
    if amount_cents <= 0:
        raise ValueError("a bonus must be positive")
    if not reason:
        raise ValueError("MTurk requires a reason for a bonus")
    client = mturk_client(client)
    assignment_id = _need_assignment(participant)
    amount = _dollars(amount_cents)
    key = ledger_key(platform=PLATFORM, action=PlatformAction.Action.BONUS, study=participant.study,
                     participant=participant, extra=f"{assignment_id}:{purpose}")  # fmt: skip
    params = {"WorkerId": participant.platform_worker_id, "BonusAmount": amount, "AssignmentId": assignment_id,
              "Reason": reason[:4096], "UniqueRequestToken": key}  # fmt: skip

    def reconcile() -> dict | None:
        for payment in _pages(
            client.list_bonus_payments, "BonusPayments", AssignmentId=assignment_id, MaxResults=100
        ):
            if (
                payment.get("BonusAmount") == amount
                and payment.get("WorkerId") == participant.platform_worker_id
            ):
                return {"BonusPayment": payment}
        return None

    return ledger_call(study=participant.study, action=PlatformAction.Action.BONUS, key=key, participant=participant,
                       amount_cents=amount_cents, call=_refusing(lambda: client.send_bonus(**params)),
                       reconcile=reconcile, request=params)  # fmt: skip


def qualification_grant(*, participant: Participant, client: Any = None) -> PlatformAction | None:
    """Grant the exclusion group's "took part" qualification to the worker (no notification), through
    the ledger; ``None`` when the study has no exclusion group."""
    study = participant.study
    if not study.exclusion_group_id or not participant.platform_worker_id:
        return None
    client = mturk_client(client)
    qual_id = qualification_type_ensure(group=study.exclusion_group, client=client)
    params = {"QualificationTypeId": qual_id, "WorkerId": participant.platform_worker_id, "IntegerValue": 1,
              "SendNotification": False}  # fmt: skip
    key = ledger_key(platform=PLATFORM, action=PlatformAction.Action.QUALIFY, study=study, participant=participant,
                     extra=qual_id)  # fmt: skip

    def reconcile() -> dict | None:
        try:
            return client.get_qualification_score(
                QualificationTypeId=qual_id, WorkerId=participant.platform_worker_id
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "RequestError":
                return None
            raise

    return ledger_call(study=study, action=PlatformAction.Action.QUALIFY, key=key, participant=participant,
                       call=_refusing(lambda: client.associate_qualification_with_worker(**params)),
                       reconcile=reconcile, request=params)  # fmt: skip
