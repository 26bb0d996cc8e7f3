"""Capacity against scripted participants, over HTTP on PostgreSQL (the quick-suite version is
``tests/studies/test_capacity.py``).

A live server behind one trusted proxy hop (this test plays the proxy: it sends the
``X-Forwarded-For`` a proxy would append); the script's entries run in parallel threads from
one client address, each consenting, passing the practice, fetching a trial and answering
nothing. The per-client cap on new participants is off (``entries_per_client = 0``) to show what
the lease rules do alone: one slot per scripted participant, and those slots come back after
``FIRST_LEASE_SECONDS`` on the next allocation that finds nothing free, with no Celery beat.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache
from django.db.models import F

from studies.fixtures.builders import make_worker_study
from studies.models import Assignment, Item, Participant, Response, Study
from studies.services.allocation import FIRST_LEASE_SECONDS
from studies.services.audit import study_audit

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

SCRIPT_IP = "203.0.113.66"
REAL_IP = "198.51.100.20"


@pytest.fixture
def site(live_server, settings):  # type: ignore[no-untyped-def]
    if "postgresql" not in django_settings.DATABASES["default"]["ENGINE"]:
        pytest.fail("the capacity test over HTTP needs PostgreSQL (set DATABASE_URL)", pytrace=False)
    settings.XAISTUDY_TRUSTED_PROXY_HOPS = 1
    cache.clear()
    yield live_server.url
    cache.clear()


class Browser:
    """One participant's HTTP session through the (simulated) proxy, on the JSON API."""

    def __init__(self, base: str, client_ip: str):
        self.base, self.client_ip, self.token = base, client_ip, ""

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json", "X-Forwarded-For": f"10.9.9.9, {self.client_ip}"}
        if self.token:
            headers["X-Participant-Token"] = self.token
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def enter_and_fetch_trial(self, study: Study, practice_answers: dict[str, int]) -> tuple[int, str | None]:
        """Enter, consent, pass the practice, fetch a trial: (entry status, trial token or None)."""
        status, body = self.call("POST", f"/api/v1/studies/{study.slug}/enter", {})
        if status != 201:
            return status, None
        self.token = body["participant_token"]
        self.call("POST", "/api/v1/participant/consent", {"agree": True, "consent_version": study.consent_version})
        _, practice = self.call("GET", "/api/v1/participant/practice")
        answers = {t["token"]: t["options"].index(practice_answers[t["token"]]) for t in practice["trials"]}
        _, graded = self.call("POST", "/api/v1/participant/practice", {"answers": answers})
        assert graded["passed"] is True, graded
        _, trial = self.call("GET", "/api/v1/participant/trial")
        return status, trial["trial"]["token"] if trial["trial"] else None


def _study() -> tuple[Study, dict[str, str]]:
    study = make_worker_study(n_main=4, judgments_per_item=2, trials_per_participant=2, n_practice=1, with_files=False)
    Study.objects.filter(pk=study.pk).update(entries_per_client=0)
    study.refresh_from_db()
    practice = {i.public_id: i.options[i.correct_option] for i in Item.objects.filter(study=study, role=Item.Role.PRACTICE)}
    return study, practice


def _script(site: str, study: Study, practice: dict[str, str], n: int) -> list[tuple[int, str | None]]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda _: Browser(site, SCRIPT_IP).enter_and_fetch_trial(study, practice), range(n)))


def _slots_in_use(study: Study) -> int:
    return sum(i.n_leased + i.n_answered for i in Item.objects.filter(study=study, role=Item.Role.MAIN))


def test_scripted_participants_hold_one_slot_each_over_http(site):
    study, practice = _study()  # 8 slots
    results = _script(site, study, practice, 7)
    assert all(status == 201 and token for status, token in results)
    assert _slots_in_use(study) == 7  # 14 with the old look-ahead lease: the study would be full
    assert all(p.assignments.count() == 1 for p in Participant.objects.filter(study=study))
    real = Browser(site, REAL_IP)
    status, token = real.enter_and_fetch_trial(study, practice)
    assert status == 201
    assert token is not None
    _, answered = real.call("POST", "/api/v1/participant/trial", {"assignment": token, "choice": 0})
    assert answered["outcome"] == "recorded"
    assert study_audit(study_id=study.pk, check_files=False).ok


def test_twenty_scripted_entries_give_their_slots_back_without_a_beat_over_http(site):
    study, practice = _study()  # 8 slots
    results = _script(site, study, practice, 20)
    held = [token for _, token in results if token]
    assert len(held) == 8  # one slot each; the others were refused as full or found no trial
    assert {status for status, token in results if not token} <= {201, 403}
    assert _slots_in_use(study) == 8
    assert Assignment.objects.filter(participant__study=study, status=Assignment.Status.LEASED).count() == 8
    for lease in Assignment.objects.filter(participant__study=study):
        assert lease.expires_at - lease.leased_at <= timedelta(seconds=FIRST_LEASE_SECONDS + 1)
    status, _ = Browser(site, REAL_IP).call("POST", f"/api/v1/studies/{study.slug}/enter", {})
    assert status == 403  # while the script's leases run, the study is full: the rules' honest limit

    # FIRST_LEASE_SECONDS pass (the leases' clocks moved back); no beat runs.
    Assignment.objects.filter(participant__study=study).update(
        expires_at=F("expires_at") - timedelta(seconds=FIRST_LEASE_SECONDS + 1)
    )
    real = Browser(site, REAL_IP)
    status, token = real.enter_and_fetch_trial(study, practice)
    assert status == 201
    assert token is not None
    _, answered = real.call("POST", "/api/v1/participant/trial", {"assignment": token, "choice": 0})
    assert answered["outcome"] == "recorded"
    assert Assignment.objects.filter(participant__study=study, status=Assignment.Status.EXPIRED).count() == 8
    assert Response.objects.filter(assignment__participant__study=study).count() == 1
    assert _slots_in_use(study) == 1
    # A scripted participant that answers its stale trial now is kept only while the slot is free.
    stale = Browser(site, SCRIPT_IP)
    stale.token = Participant.objects.get(study=study, assignments__token=held[0]).token
    _, late = stale.call("POST", "/api/v1/participant/trial", {"assignment": held[0], "choice": 0})
    assert late["outcome"] in ("recorded", "expired")
    assert study_audit(study_id=study.pk, check_files=False).ok
