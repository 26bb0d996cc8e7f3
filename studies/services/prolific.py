"""Prolific through its public REST API (issue #17), every write through the payment ledger.

Endpoints (https://docs.prolific.com/api-reference, base ``https://api.prolific.com/api/v1/``,
header ``Authorization: Token <token>``):

- ``POST studies/`` create a draft study; ``POST studies/{id}/transition/`` ``{"action": "PUBLISH"}``;
- ``GET studies/{id}/submissions/`` list submissions; ``GET submissions/{id}/`` one submission (its
  ``status`` and ``bonus_payments``); ``POST submissions/{id}/transition/`` ``{"action": "APPROVE"}`` or
  ``{"action": "REJECT", "message": ..., "rejection_category": ...}``;
- ``POST submissions/bonus-payments/`` set up a bulk bonus (``study_id``, ``csv_bonuses``:
  ``<participant_id>,<amount>`` lines, the amount in the study's currency as a decimal), then
  ``POST bulk-bonus-payments/{id}/pay/``, which Prolific documents as **not idempotent**;
- ``POST participant-groups/{id}/participants/`` ``{"participant_ids": [...]}`` (the blocklist of an
  exclusion group).

The token comes from the environment (``PROLIFIC_TOKEN``) only; the base URL from
``settings.XAISTUDY_PROLIFIC_API`` (tests point it at a local server).

Bulk bonuses: one ledger row per bulk payment, keyed by the study and the sorted
participants+amounts. Before paying (first try or retry) the client lists the study's submissions and
each one's ``bonus_payments`` and pays **only the bonuses not found** (a partial payment is completed,
never repeated); a retry of a row whose bonuses are all found confirms it without paying. Bonuses a
participant already had before the first try are recorded in the row (``baseline``) so an earlier,
unrelated bonus of the same amount is not taken for this one.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from studies.models import Participant, PlatformAction, Study
from studies.selectors.participation import platform_setup
from studies.services.ledger import PlatformRefused, ledger_call, ledger_key

DEFAULT_API = "https://api.prolific.com/api/v1/"
TIMEOUT_S = 30
REJECTION_CATEGORIES = {
    "TOO_QUICKLY", "TOO_SLOWLY", "FAILED_INSTRUCTIONS", "INCOMP_LONGITUDINAL", "FAILED_CHECK",
    "LOW_EFFORT", "MALINGERING", "NO_CODE", "BAD_CODE", "NO_DATA", "UNSUPP_DEVICE", "OTHER",
}  # fmt: skip


class ProlificError(Exception):
    """A transport failure or a 5xx: the outcome is unknown (the ledger row stays ``sent``)."""


# --- transport --------------------------------------------------------------------------------------


def _base() -> str:
    return getattr(settings, "XAISTUDY_PROLIFIC_API", "") or DEFAULT_API


def _request(method: str, path: str, body: dict | None = None, *, timeout: float | None = None) -> Any:
    token = os.environ.get("PROLIFIC_TOKEN", "")
    if not token:
        raise ImproperlyConfigured("PROLIFIC_TOKEN is not set in the environment")
    url = _base().rstrip("/") + "/" + path.lstrip("/")
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Token {token}")
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout or TIMEOUT_S) as answer:
            raw = answer.read()
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")[:2000]
        if 400 <= exc.code < 500 and exc.code not in (408, 409, 429):
            raise PlatformRefused(f"Prolific {method} {path}: {exc.code} {text}") from exc
        raise ProlificError(f"Prolific {method} {path}: {exc.code} {text}") from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise ProlificError(f"Prolific {method} {path}: {exc}") from exc
    return json.loads(raw) if raw.strip() else {}


def _key(study: Study, action: str, *parts: object) -> str:
    """The ledger's idempotency key (``ledger.ledger_key``) of a Prolific action on ``study``, ``parts``
    naming which one (the submission, the bonus payments, the group)."""
    return ledger_key(platform=Study.Platform.PROLIFIC, action=action, study=study,
                      extra=json.dumps([str(p) for p in parts]))  # fmt: skip


def _prolific_study_id(study: Study) -> str:
    row = PlatformAction.objects.filter(
        study=study, platform=Study.Platform.PROLIFIC, action=PlatformAction.Action.CREATE,
        status=PlatformAction.Status.CONFIRMED,
    ).first()  # fmt: skip
    if row is None or not row.response.get("id"):
        raise ImproperlyConfigured(
            f"study {study.pk} has no confirmed Prolific draft (study_draft_create first)"
        )
    return str(row.response["id"])


def _results(page: Any) -> list[dict]:
    return list(page.get("results", [])) if isinstance(page, dict) else list(page)


# --- studies ----------------------------------------------------------------------------------------


def study_draft_body(
    *,
    study: Study,
    reward_cents: int,
    places: int,
    estimated_minutes: int,
    filters: list[dict] | None = None,
    devices: Iterable[str] = ("desktop",),
    auto_approve: bool = False,
) -> dict[str, Any]:
    """The ``POST studies/`` body for ``study``: public title and description, the entry URL with
    the ``{{%PROLIFIC_PID%}}`` placeholders, the study's completion code."""
    setup = platform_setup(study=study, base_url=settings.XAISTUDY_PUBLIC_URL)
    return {
        "name": setup["title"],
        "internal_name": f"xaistudy:{study.slug}",
        "description": setup["description"] or setup["title"],
        "external_study_url": setup["prolific_study_url"],
        "prolific_id_option": "url_parameters",
        "completion_codes": [{
            "code": study.completion_code,
            "code_type": "COMPLETED",
            "actions": [{"action": "AUTOMATICALLY_APPROVE" if auto_approve else "MANUALLY_REVIEW"}],
        }],
        "total_available_places": int(places),
        "estimated_completion_time": int(estimated_minutes),
        "reward": int(reward_cents),
        "device_compatibility": list(devices),
        "filters": list(filters or []),
    }  # fmt: skip


def study_draft_create(
    *,
    study: Study,
    reward_cents: int,
    places: int,
    estimated_minutes: int,
    filters: list[dict] | None = None,
    devices: Iterable[str] = ("desktop",),
    auto_approve: bool = False,
) -> PlatformAction:
    """Create the Prolific draft of ``study`` once (ledger action ``create``). A retry after a lost
    answer finds the draft by its ``internal_name`` in ``GET studies/`` instead of creating another."""
    body = study_draft_body(
        study=study, reward_cents=reward_cents, places=places, estimated_minutes=estimated_minutes,
        filters=filters, devices=devices, auto_approve=auto_approve,
    )  # fmt: skip

    def reconcile() -> dict | None:
        for draft in _results(_request("GET", "studies/")):
            if draft.get("internal_name") == body["internal_name"]:
                return draft
        return None

    return ledger_call(
        study=study, action=PlatformAction.Action.CREATE, key=_key(study, "create"),
        call=lambda: _request("POST", "studies/", body), reconcile=reconcile,
        amount_cents=int(reward_cents) * int(places), request=body,
    )  # fmt: skip


def study_publish(*, study: Study) -> PlatformAction:
    pid = _prolific_study_id(study)

    def reconcile() -> dict | None:
        record = _request("GET", f"studies/{pid}/")
        return record if record.get("status") not in (None, "UNPUBLISHED") else None

    return ledger_call(
        study=study, action=PlatformAction.Action.PUBLISH, key=_key(study, "publish", pid),
        call=lambda: _request("POST", f"studies/{pid}/transition/", {"action": "PUBLISH"}),
        reconcile=reconcile, request={"study": pid, "action": "PUBLISH"},
    )  # fmt: skip


# --- submissions ------------------------------------------------------------------------------------


def submissions_list(*, study: Study) -> list[dict]:
    """All the Prolific submissions of ``study`` (following ``_links.next`` pages where given)."""
    pid = _prolific_study_id(study)
    page = _request("GET", f"studies/{pid}/submissions/")
    found = _results(page)
    seen = 0
    while isinstance(page, dict) and (page.get("_links") or {}).get("next", {}).get("href") and seen < 1000:
        href = page["_links"]["next"]["href"]
        page = _request("GET", href.split(_base().rstrip("/"), 1)[-1])
        found += _results(page)
        seen += 1
    return found


def _submission_of(study: Study, participant: Participant) -> dict:
    for submission in submissions_list(study=study):
        if submission.get("participant_id") == participant.platform_worker_id:
            return submission
    raise PlatformRefused(f"no Prolific submission of {participant.platform_worker_id} in study {study.pk}")


def _transition(*, study: Study, participant: Participant, action: str, body_extra: dict) -> PlatformAction:
    submission = _submission_of(study, participant)
    sid = submission["id"]
    body = {"action": action, **body_extra}
    done = "APPROVED" if action == "APPROVE" else "REJECTED"

    def reconcile() -> dict | None:
        record = _request("GET", f"submissions/{sid}/")
        return record if record.get("status") == done else None

    return ledger_call(
        study=study, participant=participant, action=action.lower(), key=_key(study, action.lower(), sid),
        call=lambda: _request("POST", f"submissions/{sid}/transition/", body), reconcile=reconcile,
        request={"submission": sid, **body},
    )  # fmt: skip


def submission_approve(*, study: Study, participant: Participant) -> PlatformAction:
    return _transition(study=study, participant=participant, action="APPROVE", body_extra={})


def submission_reject(
    *, study: Study, participant: Participant, message: str, category: str
) -> PlatformAction:
    """Reject with Prolific's documented ``rejection_category`` and a message (Prolific asks for
    at least 100 characters; checked here so a short one is refused before anything is sent)."""
    if category not in REJECTION_CATEGORIES:
        raise ValueError(f"unknown rejection category {category!r}")
    if len(message) < 100:
        raise ValueError("Prolific requires a rejection message of at least 100 characters")
    return _transition(
        study=study, participant=participant, action="REJECT",
        body_extra={"message": message, "rejection_category": category},
    )  # fmt: skip


# --- bonuses ----------------------------------------------------------------------------------------


def _paid_bonuses(study: Study) -> dict[str, Counter]:
    """Per participant id: the bonus amounts (cents) Prolific lists on their submissions."""
    paid: dict[str, Counter] = {}
    for submission in submissions_list(study=study):
        record = _request("GET", f"submissions/{submission['id']}/")
        amounts = Counter(int(round(float(a))) for a in record.get("bonus_payments") or [])
        paid.setdefault(submission["participant_id"], Counter()).update(amounts)
    return paid


def bonuses_send(*, study: Study, payments: dict[str, int] | Iterable[tuple[str, int]]) -> PlatformAction:
    """Pay ``payments`` (participant id -> cents) as one Prolific bulk bonus, at most once.

    One ledger row per bulk payment (key: study + sorted participants and amounts). Before each
    pay the study's submissions are listed and only the bonuses not yet found are set up and paid,
    so a timeout after Prolific accepted the payment, or a partial payment, is completed without
    paying anyone twice; if everything is found the row is confirmed without a call."""
    wanted = dict(payments)
    if not wanted or any(int(c) <= 0 for c in wanted.values()):
        raise ValueError("bonuses must be positive amounts in cents")
    items = sorted((str(p), int(c)) for p, c in wanted.items())
    key = _key(study, "bonus", items)
    row = PlatformAction.objects.filter(idempotency_key=key).first()
    if row is not None and "baseline" in row.request:
        baseline = {
            p: Counter({int(a): n for a, n in amounts.items()})
            for p, amounts in row.request["baseline"].items()
        }
    else:
        baseline = _paid_bonuses(study)
    request = {
        "payments": items,
        "baseline": {p: {str(a): n for a, n in c.items()} for p, c in baseline.items() if p in wanted},
    }
    pid = _prolific_study_id(study)

    def missing() -> list[tuple[str, int]]:
        now = _paid_bonuses(study)
        return [
            (p, c) for p, c in items
            if now.get(p, Counter())[c] <= baseline.get(p, Counter())[c]
        ]  # fmt: skip

    def reconcile() -> dict | None:
        return None if missing() else {"reconciled": True, "paid": items}

    def call() -> dict:
        todo = missing()
        if not todo:
            return {"reconciled": True, "paid": items}
        csv = "".join(f"{p},{c / 100:.2f}\n" for p, c in todo)
        bulk = _request("POST", "submissions/bonus-payments/", {"study_id": pid, "csv_bonuses": csv})
        paid = _request("POST", f"bulk-bonus-payments/{bulk['id']}/pay/")
        return {"bulk": bulk, "pay": paid, "paid": todo}

    return ledger_call(
        study=study, action=PlatformAction.Action.BONUS, key=key, call=call, reconcile=reconcile,
        amount_cents=sum(c for _, c in items), request=request,
    )  # fmt: skip


# --- participant groups -----------------------------------------------------------------------------


def participant_group_add(*, study: Study, group_id: str, participant_ids: Iterable[str]) -> PlatformAction:
    """Add participants to a Prolific participant group (the exclusion group's blocklist).
    Adding is idempotent on Prolific's side; the reconcile lists the group's members."""
    ids = sorted({str(p) for p in participant_ids})
    body = {"participant_ids": ids}

    def reconcile() -> dict | None:
        members = {
            m.get("participant_id")
            for m in _results(_request("GET", f"participant-groups/{group_id}/participants/"))
        }
        return {"members": sorted(members & set(ids))} if set(ids) <= members else None

    return ledger_call(
        study=study, action=PlatformAction.Action.QUALIFY, key=_key(study, "group", group_id, ids),
        call=lambda: _request("POST", f"participant-groups/{group_id}/participants/", body),
        reconcile=reconcile, request={"group": group_id, **body},
    )  # fmt: skip
