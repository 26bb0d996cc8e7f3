"""The payment ledger (issue #17): every crowd-platform call is a ``PlatformAction`` row.

The rule (``ledger_call``):

(a) the row is got or created by its idempotency ``key`` in its own committed transaction
    (status ``pending``, ``attempts += 1``) *before* anything is sent;
(b) a row already ``confirmed`` or ``failed`` is returned at once, calling nothing;
(c) a row left ``pending`` or ``sent`` by an earlier attempt (a crash, a timeout, a 5xx between the
    platform's answer and our commit) is first reconciled: ``reconcile()`` asks the platform whether
    the action already happened and returns the platform's record, or ``None`` if not found; found:
    the row is marked ``confirmed`` with that record and returned, nothing is sent again;
(d) otherwise the row is marked ``sent`` (committed), ``call()`` runs, and the row is marked
    ``confirmed`` with the response. ``PlatformRefused`` (the caller maps a definite refusal to it)
    marks it ``failed`` with the message; any other exception leaves it ``sent`` and is re-raised,
    so the next retry reconciles before acting again.

So nothing is paid twice and nothing is forgotten, provided the caller is not inside an outer
transaction (each step must commit on its own; call it from a task or a view, never inside
``transaction.atomic``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

from django.db import transaction

from studies.models import Participant, PlatformAction, Study

logger = logging.getLogger(__name__)

#: MTurk's UniqueRequestToken is at most 64 characters; the ledger's key column too.
KEY_MAX = 64


class PlatformRefused(Exception):
    """A definite refusal by the platform (the request was wrong, not lost): the row is ``failed``."""


def ledger_key(
    *, platform: str, action: str, study: Study, participant: Participant | None = None, extra: str = ""
) -> str:
    """The idempotency key: ``platform:action:slug:participant token:extra``, hashed to 64 characters
    (a readable ``platform-action-`` prefix, then the SHA-256 hex digest, cut to fit)."""
    raw = f"{platform}:{action}:{study.slug}:{participant.token if participant else ''}:{extra}"
    prefix = f"{platform[:8]}-{action[:8]}-"
    return (prefix + hashlib.sha256(raw.encode()).hexdigest())[:KEY_MAX]


def _jsonable(value: Any) -> Any:
    """A platform answer as JSON (dates as strings; boto3's ``ResponseMetadata`` dropped)."""
    if value is None:
        return {}
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if k != "ResponseMetadata"}
    return json.loads(json.dumps(value, default=str))


def _save(row: PlatformAction, **fields: Any) -> PlatformAction:
    for name, value in fields.items():
        setattr(row, name, value)
    with transaction.atomic():
        row.save(update_fields=[*fields, "updated_at"])
    return row


def _confirm(row: PlatformAction, response: Any) -> PlatformAction:
    """Mark confirmed with the platform's answer (a separate function: the crash tests patch it)."""
    return _save(row, status=PlatformAction.Status.CONFIRMED, response=_jsonable(response), error="")


def ledger_call(
    *,
    study: Study,
    action: str,
    key: str,
    call: Callable[[], Any],
    reconcile: Callable[[], Any],
    participant: Participant | None = None,
    amount_cents: int | None = None,
    request: dict | None = None,
) -> PlatformAction:
    """Run one platform action at most once, following the module docstring's rule (a)-(d)."""
    if len(key) > KEY_MAX:
        raise ValueError(f"idempotency key longer than {KEY_MAX} characters")
    with transaction.atomic():
        row, created = PlatformAction.objects.select_for_update().get_or_create(
            idempotency_key=key,
            defaults={
                "study": study, "participant": participant, "platform": study.platform, "action": action,
                "amount_cents": amount_cents, "request": _jsonable(request or {}),
            },
        )  # fmt: skip
        if row.status in (PlatformAction.Status.CONFIRMED, PlatformAction.Status.FAILED):
            return row
        row.attempts += 1
        row.save(update_fields=["attempts", "updated_at"])
    if not created:
        found = reconcile()
        if found is not None:
            logger.info("ledger %s: found on the platform, not sent again", key)
            return _confirm(row, found)
    _save(row, status=PlatformAction.Status.SENT)
    try:
        response = call()
    except PlatformRefused as refused:
        return _save(row, status=PlatformAction.Status.FAILED, error=str(refused)[:2000])
    except Exception as error:
        _save(row, error=f"{type(error).__name__}: {error}"[:2000])
        raise
    return _confirm(row, response)


def ledger_reconcile_study(*, study: Study, reconcile_for: Callable[[PlatformAction], Any]) -> dict[str, int]:
    """Reconcile every ``pending`` / ``sent`` row of the study (for a command or an audit): rows the
    platform has a record of become ``confirmed``; the others are left for a retry. Returns counts."""
    counts = {"confirmed": 0, "open": 0}
    open_rows = PlatformAction.objects.filter(
        study=study, status__in=[PlatformAction.Status.PENDING, PlatformAction.Status.SENT]
    )
    for row in open_rows:
        found = reconcile_for(row)
        if found is not None:
            _confirm(row, found)
            counts["confirmed"] += 1
        else:
            counts["open"] += 1
    return counts
