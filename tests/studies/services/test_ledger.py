"""The payment ledger's rule (``studies.services.ledger``): written and committed before the call,
a confirmed or failed row never sent again, an open row reconciled before anything is sent."""

from __future__ import annotations

import pytest

from studies.fixtures.builders import make_worker_study
from studies.models import Participant, PlatformAction, Study
from studies.services.ledger import PlatformRefused, ledger_call, ledger_key, ledger_reconcile_study

pytestmark = pytest.mark.django_db(transaction=True)


class Calls:
    """A fake platform: counts the calls, answers or raises what it is told."""

    def __init__(self, answer=None, raises=None, found=None):
        self.answer, self.raises, self.found = answer or {"ok": True}, raises, found
        self.calls = self.reconciles = 0

    def call(self):
        self.calls += 1
        if self.raises:
            error, self.raises = self.raises, None
            raise error
        return self.answer

    def reconcile(self):
        self.reconciles += 1
        return self.found


@pytest.fixture
def study():
    return make_worker_study(platform=Study.Platform.MTURK, with_files=False)


def run(study, fake, key="k1", **kw):
    return ledger_call(
        study=study,
        action=PlatformAction.Action.BONUS,
        key=key,
        call=fake.call,
        reconcile=fake.reconcile,
        amount_cents=50,
        **kw,
    )


def test_first_call_confirms_and_records_the_answer(study):
    fake = Calls(answer={"HIT": {"HITId": "H1"}, "ResponseMetadata": {"RequestId": "x"}})
    row = run(study, fake)
    row.refresh_from_db()
    assert (row.status, row.attempts, row.response, row.platform) == (
        "confirmed",
        1,
        {"HIT": {"HITId": "H1"}},
        "mturk",
    )
    assert (fake.calls, fake.reconciles) == (1, 0)


def test_confirmed_or_failed_rows_call_nothing(study):
    run(study, Calls(), key="done")
    again = Calls()
    assert run(study, again, key="done").status == "confirmed"
    assert (again.calls, again.reconciles) == (0, 0)
    refused = run(study, Calls(raises=PlatformRefused("bad worker id")), key="refused")
    assert (refused.status, refused.error) == ("failed", "bad worker id")
    third = Calls()
    assert run(study, third, key="refused").status == "failed"
    assert (third.calls, third.reconciles) == (0, 0)


def test_lost_answer_leaves_sent_and_the_retry_reconciles(study):
    fake = Calls(raises=TimeoutError("read timeout"))
    with pytest.raises(TimeoutError):
        run(study, fake)
    row = PlatformAction.objects.get(idempotency_key="k1")
    assert row.status == "sent"
    assert "TimeoutError" in row.error
    fake.found = {"paid": True}
    row = run(study, fake)
    assert (row.status, row.response, row.attempts) == ("confirmed", {"paid": True}, 2)
    assert (fake.calls, fake.reconciles) == (1, 1)  # not sent again


def test_not_found_on_retry_sends_once_more(study):
    fake = Calls(raises=ConnectionError("refused before sending"))
    with pytest.raises(ConnectionError):
        run(study, fake)
    row = run(study, fake)  # found is None: MTurk never got it
    assert row.status == "confirmed"
    assert (fake.calls, fake.reconciles) == (2, 1)


def test_crash_before_the_confirm_commit_is_reconciled(study, monkeypatch):
    from studies.services import ledger

    real = ledger._confirm
    monkeypatch.setattr(
        ledger, "_confirm", lambda row, response: (_ for _ in ()).throw(RuntimeError("crash"))
    )
    fake = Calls()
    with pytest.raises(RuntimeError):
        run(study, fake)
    assert PlatformAction.objects.get(idempotency_key="k1").status == "sent"
    monkeypatch.setattr(ledger, "_confirm", real)
    fake.found = {"ok": True}
    assert run(study, fake).status == "confirmed"
    assert fake.calls == 1


def test_keys_fit_mturk_and_tell_participants_apart(study):
    p1 = Participant.objects.create(study=study, platform="mturk", platform_worker_id="A1", worker_hash="h")
    p2 = Participant.objects.create(study=study, platform="mturk", platform_worker_id="A2", worker_hash="h2")
    k1 = ledger_key(platform="mturk", action="bonus", study=study, participant=p1, extra="x" * 500)
    k2 = ledger_key(platform="mturk", action="bonus", study=study, participant=p2, extra="x" * 500)
    assert len(k1) <= 64
    assert len(k2) <= 64
    assert k1 != k2
    assert k1.startswith("mturk-bonus-")
    assert k1 == ledger_key(platform="mturk", action="bonus", study=study, participant=p1, extra="x" * 500)
    with pytest.raises(ValueError):
        run(study, Calls(), key="k" * 65)


def test_reconcile_study_confirms_what_the_platform_has(study):
    for key in ("a", "b"):
        with pytest.raises(TimeoutError):
            run(study, Calls(raises=TimeoutError()), key=key)
    counts = ledger_reconcile_study(
        study=study, reconcile_for=lambda row: {"x": 1} if row.idempotency_key == "a" else None
    )
    assert counts == {"confirmed": 1, "open": 1}
    assert PlatformAction.objects.get(idempotency_key="a").status == "confirmed"
