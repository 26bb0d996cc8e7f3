"""The takeover scenario of issue #11 over real HTTP, on PostgreSQL.

A victim enters from their platform and answers; an attacker who knows only the victim's public
worker id (MTurk ``workerId`` / ``PROLIFIC_PID``) enters with another assignment / session from
another browser. The attacker must get no token of the victim's, must not be able to decline in
their name or move their payment row, and the victim must finish and be paid on their own
assignment. Each actor is a ``requests.Session`` (its own cookies) against ``live_server``;
trials go through the JSON API with the token each actor was given.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
import requests

from studies.fixtures.builders import make_worker_study
from studies.models import Item, Participant, Study
from studies.services.exports import export_rows

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

MTURK_VICTIM = {"assignmentId": "3VICTIMASSIGN", "hitId": "3HIT0001", "workerId": "A1VICTIM",
                "turkSubmitTo": "https://www.mturk.com"}  # fmt: skip
PROLIFIC_VICTIM = {"PROLIFIC_PID": "5f1a2b3c4d5e6f7a8b9c0d1e", "STUDY_ID": "60aa00bb11cc22dd33ee44ff",
                   "SESSION_ID": "victimsession"}  # fmt: skip


class Actor:
    """One browser: its own cookie jar, talking HTTP to the live server."""

    def __init__(self, base: str):
        self.base = base
        self.http = requests.Session()
        self.token = ""

    def enter(self, slug: str, params: dict[str, str]) -> requests.Response:
        response = self.http.get(f"{self.base}/s/{slug}/", params=params, allow_redirects=False, timeout=30)
        if response.status_code == 302:
            self.token = re.match(r"^/p/([^/]+)/", urlsplit(response.headers["Location"]).path).group(1)
        return response

    def api(self, method: str, path: str, body: dict | None = None) -> requests.Response:
        return self.http.request(method, f"{self.base}/api/v1/participant{path}", json=body,
                                 headers={"X-Participant-Token": self.token}, timeout=30)  # fmt: skip

    def consent(self, study: Study, agree: bool) -> requests.Response:
        return self.api("POST", "/consent", {"agree": agree, "consent_version": study.consent_version})

    def practice(self) -> None:
        trials = self.api("GET", "/practice").json()["trials"]
        answers = {}
        for trial in trials:
            item = Item.objects.get(public_id=trial["token"])
            answers[trial["token"]] = trial["options"].index(item.options[item.correct_option])
        assert self.api("POST", "/practice", {"answers": answers}).json()["passed"] is True

    def answer(self, limit: int = 100) -> int:
        answered = 0
        while answered < limit:
            trial = self.api("GET", "/trial").json()["trial"]
            if trial is None:
                break
            outcome = self.api("POST", "/trial", {"assignment": trial["token"], "choice": 0}).json()
            assert outcome["outcome"] == "recorded", outcome
            answered += 1
        return answered


@pytest.mark.parametrize(
    ("platform", "victim_params", "attacker_params"),
    [
        (Study.Platform.MTURK, MTURK_VICTIM,
         {**MTURK_VICTIM, "assignmentId": "3ATTACKERASSIGN", "workerId": "a1victim", "turkSubmitTo": "https://workersandbox.mturk.com"}),
        (Study.Platform.PROLIFIC, PROLIFIC_VICTIM, {**PROLIFIC_VICTIM, "SESSION_ID": "attackersession"}),
    ],
    ids=["mturk", "prolific"],
)
def test_worker_id_takeover_fails_over_http(live_server, settings, platform, victim_params, attacker_params):
    settings.XAISTUDY_RATE_LIMITS = {"entry": (10**6, 60), "submit": (10**6, 60), "api": (10**6, 60)}
    study = make_worker_study(platform=platform, n_main=6, n_practice=1, judgments_per_item=4, trials_per_participant=3,
                              prolific_completion_url="https://app.prolific.com/submissions/complete")  # fmt: skip
    victim, attacker = Actor(live_server.url), Actor(live_server.url)

    assert victim.enter(study.slug, victim_params).status_code == 302
    assert victim.consent(study, agree=True).status_code == 200
    victim.practice()
    assert victim.answer(limit=1) == 1
    victim_before = Participant.objects.get(token=victim.token)

    entered = attacker.enter(study.slug, attacker_params)
    assert entered.status_code == 302
    assert attacker.token
    assert attacker.token != victim.token
    assert victim.token not in entered.text
    assert victim.token not in entered.headers.get("Location", "")
    # The attacker's participant is a new one, bound to the attacker's own session.
    declined = attacker.consent(study, agree=False)
    assert declined.json()["state"]["stage"] == "declined"
    # The victim's token is not reachable from the attacker's session; forging it is refused.
    assert attacker.api("GET", "").json()["state"]["stage"] == "declined"
    again = attacker.enter(study.slug, attacker_params)
    assert again.status_code == 403

    victim_after = Participant.objects.get(token=victim.token)
    for name in ("status", "mturk_assignment_id", "mturk_hit_id", "mturk_submit_to", "prolific_session_id", "session_key"):
        assert getattr(victim_after, name) == getattr(victim_before, name), name

    # The victim finishes on their own assignment / session and is paid on it.
    victim.answer()
    completed = victim.api("POST", "/complete").json()
    assert completed["state"]["stage"] == "completed"
    row = Participant.objects.get(token=victim.token)
    assert row.status == Participant.Status.COMPLETED
    header, rows = export_rows(study=study, kind=f"payments-{platform}")
    payments = [dict(zip(header, [str(cell) if cell is not None else "" for cell in r])) for r in rows]
    if platform == Study.Platform.MTURK:
        assert completed["completion"]["mturk_assignment_id"] == "3VICTIMASSIGN"
        assert completed["completion"]["mturk_submit_url"] == "https://www.mturk.com/mturk/externalSubmit"
        victim_rows = [p for p in payments if p["AssignmentId"] == "3VICTIMASSIGN"]
        assert len(victim_rows) == 1
        assert victim_rows[0]["Approve"] == "x"
        assert victim_rows[0]["ExpectedCompletionCode"] == row.completion_code == completed["completion"]["code"]
        assert all(p["AssignmentId"] != "3ATTACKERASSIGN" or p["Approve"] != "x" for p in payments)
    else:
        victim_rows = [p for p in payments if p["session_id"] == "victimsession"]
        assert [p["action"] for p in victim_rows] == ["APPROVE"]
        assert all(p["session_id"] != "attackersession" or p["action"] != "APPROVE" for p in payments)
    # Now the worker has completed, a new session under their id is refused, whoever sends it.
    assert Actor(live_server.url).enter(study.slug, {**attacker_params, "SESSION_ID": "third", "assignmentId": "3THIRD"}
                                        if platform == Study.Platform.MTURK else {**attacker_params, "SESSION_ID": "third"}).status_code == 403
