"""Capacity against scripted participants who take trials and answer nothing (issue #11).

The rules under test (``studies/services/allocation.py``): one lease per participant until they
answer (the look-ahead is for participants who answer), a first lease of at most
``FIRST_LEASE_SECONDS``, and a sweep of the study's overdue leases whenever a participant finds
no free slot, so slots come back without a Celery beat. The per-client cap on new participants
(``Study.entries_per_client``) is switched off here (0), to show what the lease rules do alone:
they make N scripted participants hold N slots (not 2N) and only for minutes, no more. A
PostgreSQL version over HTTP is ``tests/integration/test_capacity_pg.py``.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from studies.fixtures.builders import make_worker_study
from studies.models import Assignment, Item, Participant, Response, Study
from studies.services import allocation
from studies.services.allocation import FIRST_LEASE_SECONDS, study_leases_sweep, trial_lease
from studies.services.audit import study_audit
from studies.services.responses import AnswerInvalid, response_record
from tests.studies.web.test_worker_flow import consent_and_practice, current_assignment, post, token_from

pytestmark = pytest.mark.django_db

SCRIPT_IP = "203.0.113.66"
REAL_IP = "198.51.100.20"


def _study(*, n_main: int = 4, judgments: int = 2, trials: int = 2) -> Study:
    study = make_worker_study(n_main=n_main, judgments_per_item=judgments, trials_per_participant=trials, n_practice=1,
                              with_files=False)  # fmt: skip
    Study.objects.filter(pk=study.pk).update(entries_per_client=0)  # no per-client cap: the lease rules alone
    study.refresh_from_db()
    return study


def _scripted(study: Study, n: int) -> list[str | None]:
    """``n`` scripted link entries from one address over the API: consent, pass the practice, fetch
    a trial, answer nothing. Returns each one's trial token (``None``: refused or no trial)."""
    tokens: list[str | None] = []
    for _ in range(n):
        api = Client(REMOTE_ADDR=SCRIPT_IP)  # a fresh "browser" each time, one address
        entered = api.post(f"/api/v1/studies/{study.slug}/enter", "{}", content_type="application/json")
        if entered.status_code != 201:
            assert entered.status_code == 403, entered.content
            assert entered.json()["error"] in ("full", "too_many")
            tokens.append(None)
            continue
        headers = {"HTTP_X_PARTICIPANT_TOKEN": entered.json()["participant_token"]}
        api.post("/api/v1/participant/consent", {"agree": True, "consent_version": study.consent_version},
                 content_type="application/json", **headers)  # fmt: skip
        practice = api.get("/api/v1/participant/practice", **headers).json()["trials"]
        answers = {}
        for trial in practice:
            item = Item.objects.get(public_id=trial["token"])
            answers[trial["token"]] = trial["options"].index(item.options[item.correct_option])
        passed = api.post("/api/v1/participant/practice", {"answers": answers}, content_type="application/json", **headers)
        assert passed.json()["passed"] is True
        trial = api.get("/api/v1/participant/trial", **headers).json()["trial"]
        tokens.append(trial["token"] if trial else None)
    return tokens


def _real_worker_trial(study: Study) -> tuple[Client, str, Assignment | None]:
    """A real worker from another address through the HTML pages, up to their first trial page."""
    browser = Client(REMOTE_ADDR=REAL_IP)
    entry = browser.get(reverse("studies:worker-entry", args=[study.slug]))
    assert entry.status_code == 302, entry.content
    token = token_from(entry)
    consent_and_practice(browser, study, token)
    page = browser.get(reverse("studies:worker-home", args=[token]))
    has_trial = b"data-trial-form" in page.content
    return browser, token, current_assignment(token) if has_trial else None


def _slots_in_use(study: Study) -> int:
    return sum(i.n_leased + i.n_answered for i in Item.objects.filter(study=study, role=Item.Role.MAIN))


def test_scripted_participants_hold_one_slot_each_and_a_real_worker_still_gets_a_trial():
    study = _study()  # 4 main items x 2 judgments = 8 slots
    scripted = _scripted(study, 7)  # with the old look-ahead rule, 4 of them held all 8 slots
    assert all(scripted)
    for participant in Participant.objects.filter(study=study):
        assert participant.assignments.filter(status=Assignment.Status.LEASED).count() == 1
    assert _slots_in_use(study) == 7
    browser, token, assignment = _real_worker_trial(study)
    assert assignment is not None, "a slot remains, and the real worker gets it"
    assert post(browser, "answer", token, {"assignment": assignment.token, "choice": "0"}).status_code == 302
    assert Response.objects.filter(assignment=assignment).count() == 1
    assert study_audit(study_id=study.pk, check_files=False).ok


def test_twenty_scripted_entries_give_their_slots_back_without_a_beat(monkeypatch):
    study = _study()  # 8 slots
    scripted = _scripted(study, 20)
    held = [t for t in scripted if t]
    assert len(held) == 8  # one slot each: the first eight fill the study, the other twelve get nothing
    assert _slots_in_use(study) == 8
    for lease in Assignment.objects.filter(participant__study=study):
        assert lease.expires_at - lease.leased_at <= timedelta(seconds=FIRST_LEASE_SECONDS + 1)
    # The lease rules alone cannot stop the script while its leases run: the study is full.
    assert Client(REMOTE_ADDR=REAL_IP).get(reverse("studies:worker-entry", args=[study.slug])).status_code == 403

    # FIRST_LEASE_SECONDS later, with no Celery beat: entry and allocation sweep the overdue leases.
    later = timezone.now() + timedelta(seconds=FIRST_LEASE_SECONDS + 1)
    monkeypatch.setattr(timezone, "now", lambda: later)
    browser, token, assignment = _real_worker_trial(study)
    assert assignment is not None
    assert post(browser, "answer", token, {"assignment": assignment.token, "choice": "0"}).status_code == 302
    assert Assignment.objects.filter(participant__study=study, status=Assignment.Status.EXPIRED).count() == 8
    assert _slots_in_use(study) == 1  # the real answer; the other seven slots are free again
    assert study_audit(study_id=study.pk, check_files=False).ok


# --- the rules, one at a time -------------------------------------------------------------


def _answering(study: Study, n: int = 1) -> list[Participant]:
    return [
        Participant.objects.create(study=study, platform="link", platform_worker_id=f"w{i}", worker_hash=f"h{i}",
                                   status=Participant.Status.IN_PROGRESS, practice_passed=True)
        for i in range(n)
    ]  # fmt: skip


def test_one_short_lease_until_the_first_answer_then_the_look_ahead():
    study = _study(n_main=6, trials=3)
    (worker,) = _answering(study)
    now = timezone.now()
    first = trial_lease(participant=worker, mark_shown=True, now=now).leases
    assert len(first) == 1
    assert first[0].expires_at == now + timedelta(seconds=FIRST_LEASE_SECONDS)
    assert len(trial_lease(participant=worker, now=now).leases) == 1  # a reload takes nothing more
    assert response_record(participant=worker, assignment_token=first[0].token, choice=0).status == "recorded"
    later = now + timedelta(seconds=30)
    after = trial_lease(participant=worker, mark_shown=True, now=later).leases
    assert len(after) == 2  # the next trial and one ahead, at the study's full lease
    assert all(lease.expires_at == later + timedelta(seconds=study.lease_seconds) for lease in after)


def test_the_first_lease_is_never_longer_than_the_studys():
    study = _study()
    Study.objects.filter(pk=study.pk).update(lease_seconds=60)
    study.refresh_from_db()
    (worker,) = _answering(study)
    now = timezone.now()
    (lease,) = trial_lease(participant=worker, now=now).leases
    assert lease.expires_at == now + timedelta(seconds=60)


def test_allocation_sweeps_the_studys_overdue_leases_when_nothing_is_free():
    study = _study(n_main=1, judgments=1, trials=1)
    other = _study(n_main=1, judgments=1, trials=1)
    gone, newcomer = _answering(study, 2)
    (elsewhere,) = _answering(other)
    (stale,) = trial_lease(participant=gone).leases
    (stale_elsewhere,) = trial_lease(participant=elsewhere).leases
    assert trial_lease(participant=newcomer).leases == []  # full, and nothing overdue yet
    later = timezone.now() + timedelta(seconds=FIRST_LEASE_SECONDS + 1)
    (taken,) = trial_lease(participant=newcomer, now=later).leases
    assert taken.item_id == stale.item_id
    assert Assignment.objects.get(pk=stale.pk).status == Assignment.Status.EXPIRED
    assert Assignment.objects.get(pk=stale_elsewhere.pk).status == Assignment.Status.LEASED  # other studies untouched
    item = Item.objects.get(pk=stale.item_id)
    assert (item.n_leased, item.n_answered) == (1, 0)


def test_no_sweep_while_a_slot_is_free():
    study = _study(n_main=3, judgments=1, trials=1)
    gone, newcomer = _answering(study, 2)
    (stale,) = trial_lease(participant=gone).leases
    later = timezone.now() + timedelta(seconds=FIRST_LEASE_SECONDS + 1)
    called = []
    original = allocation.study_leases_sweep
    allocation.study_leases_sweep = lambda **kw: called.append(kw) or original(**kw)  # type: ignore[assignment]
    try:
        assert len(trial_lease(participant=newcomer, now=later).leases) == 1
    finally:
        allocation.study_leases_sweep = original  # type: ignore[assignment]
    assert called == []
    assert Assignment.objects.get(pk=stale.pk).status == Assignment.Status.LEASED  # the beat's job, not the hot path's


def test_study_leases_sweep_counts_and_leaves_answers_alone():
    study = _study(n_main=4, judgments=1, trials=2)
    answered, gone = _answering(study, 2)
    (first,) = trial_lease(participant=answered, mark_shown=True).leases
    response_record(participant=answered, assignment_token=first.token, choice=0)
    trial_lease(participant=gone)
    later = timezone.now() + timedelta(seconds=FIRST_LEASE_SECONDS + 1)
    assert study_leases_sweep(study=study, now=later) == 1
    assert study_leases_sweep(study=study, now=later) == 0
    assert Assignment.objects.get(pk=first.pk).status == Assignment.Status.ANSWERED
    assert study_audit(study_id=study.pk, check_files=False).ok


# --- answers to trials that were never shown ----------------------------------------------


def test_an_answer_to_a_trial_never_shown_is_refused_and_stores_nothing():
    study = _study(n_main=6, trials=3)
    (worker,) = _answering(study)
    (first,) = trial_lease(participant=worker).leases  # leased, not shown (no trial view)
    with pytest.raises(AnswerInvalid) as refused:
        response_record(participant=worker, assignment_token=first.token, choice=0)
    assert refused.value.field == "assignment"
    assert "not been shown" in refused.value.message
    assert not Response.objects.exists()
    assert Assignment.objects.get(pk=first.pk).status == Assignment.Status.LEASED  # still answerable once shown
    trial_lease(participant=worker, mark_shown=True)
    assert response_record(participant=worker, assignment_token=first.token, choice=0).status == "recorded"


def test_the_api_refuses_the_preloaded_next_trial_until_it_is_shown(client):
    study = _study(n_main=6, trials=3)
    Study.objects.filter(pk=study.pk).update(practice_trials=0)
    (worker,) = _answering(study)
    headers = {"HTTP_X_PARTICIPANT_TOKEN": worker.token}

    def answer(token: str):  # type: ignore[no-untyped-def]
        return client.post("/api/v1/participant/trial", {"assignment": token, "choice": 0},
                           content_type="application/json", **headers)  # fmt: skip

    first = client.get("/api/v1/participant/trial", **headers).json()["trial"]
    assert answer(first["token"]).json()["outcome"] == "recorded"
    second = client.get("/api/v1/participant/trial", **headers).json()["trial"]
    ahead = Assignment.objects.filter(participant=worker, status=Assignment.Status.LEASED).exclude(token=second["token"]).get()
    assert any(ahead.token in url for url in second["preload"])  # a client can read the next token...
    early = answer(ahead.token)
    assert early.status_code == 400  # ...but cannot answer it before it is shown
    assert early.json() == {"error": "invalid", "detail": "assignment: this trial has not been shown yet; answer the trial you are shown"}
    assert answer(second["token"]).json()["outcome"] == "recorded"
    third = client.get("/api/v1/participant/trial", **headers).json()["trial"]
    assert third["token"] == ahead.token
    assert answer(ahead.token).json()["outcome"] == "recorded"


def test_the_answer_form_refuses_a_trial_never_shown(client):
    study = _study(n_main=6, trials=3)
    (worker,) = _answering(study)
    (lease,) = trial_lease(participant=worker).leases
    response = post(client, "answer", worker.token, {"assignment": lease.token, "choice": "0"})
    assert response.status_code == 400
    assert b"not been shown" in response.content
    assert not Response.objects.exists()


def test_with_the_default_per_client_cap_twenty_scripted_entries_leave_real_slots():
    """The study's defaults together: 20 scripted entries from one address make at most
    ``entries_per_client`` (5) participants, each holding one lease; a real worker from another
    address still gets a trial while the study has 8 slots."""
    study = make_worker_study(n_main=4, judgments_per_item=2, trials_per_participant=2, n_practice=1, with_files=False)
    assert study.entries_per_client == 5
    tokens = _scripted(study, 20)
    held = [t for t in tokens if t]
    assert len(held) == 5
    assert Participant.objects.filter(study=study).count() == 5
    assert Assignment.objects.filter(participant__study=study, status=Assignment.Status.LEASED).count() == 5
    _, _, assignment = _real_worker_trial(study)
    assert assignment is not None
