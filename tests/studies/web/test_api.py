"""The worker JSON API: the whole flow, validated response by response against its OpenAPI schema."""

from __future__ import annotations

import json

import pytest
import requests
import schemathesis
from django.db import connection
from django.test import Client
from schemathesis.core.transport import Response as WireResponse

from studies.fixtures.builders import make_worker_study
from studies.lib.choices import practice_choices
from studies.models import Assignment, Item, Participant, Response, Study
from studies.services.participation import completion_code_derive
from studies.web.openapi import SCHEMA

pytestmark = pytest.mark.django_db

API_SCHEMA = schemathesis.openapi.from_dict(SCHEMA)
PROLIFIC = {"PROLIFIC_PID": "5f1a2b3c4d5e6f7a8b9c0d1e", "STUDY_ID": "60aa00bb11cc22dd33ee44ff", "SESSION_ID": "s1"}


class Api:
    """A Django test client that enforces CSRF (the API must not need it) and checks the schema."""

    def __init__(self) -> None:
        self.client = Client(enforce_csrf_checks=True)
        self.token = ""

    def call(self, method: str, path: str, body: dict | None = None, template: str | None = None, token: str | None = None):
        headers = {}
        if token if token is not None else self.token:
            headers["HTTP_X_PARTICIPANT_TOKEN"] = token if token is not None else self.token
        data = json.dumps(body) if body is not None else None
        response = getattr(self.client, method.lower())(path, data=data, content_type="application/json", **headers)
        self._validate(method, template or path, path, response)
        return response

    @staticmethod
    def _validate(method: str, template: str, path: str, response) -> None:
        wire = WireResponse(
            status_code=response.status_code,
            headers={name.lower(): [value] for name, value in response.items()},
            content=response.content,
            request=requests.Request(method, f"http://testserver{path}").prepare(),
            elapsed=0.0,
            message="",
            encoding="utf-8",
            http_version="1.1",
            verify=True,
        )
        API_SCHEMA[template][method.upper()].validate_response(wire)


def enter(api: Api, study: Study, params: dict | None = None):
    return api.call("POST", f"/api/v1/studies/{study.slug}/enter", params or {}, template="/api/v1/studies/{slug}/enter")


def pass_practice(api: Api, study: Study) -> None:
    practice = api.call("GET", "/api/v1/participant/practice").json()
    answers = {}
    for trial in practice["trials"]:
        item = Item.objects.get(public_id=trial["token"])
        if study.kind == Study.Kind.TRUST:
            answers[trial["token"]] = 2
        else:
            answers[trial["token"]] = trial["options"].index(item.options[item.correct_option])
    result = api.call("POST", "/api/v1/participant/practice", {"answers": answers}).json()
    assert result["passed"] is True
    assert result["state"]["stage"] == "trial"


def run_trials(api: Api, choice: int = 0) -> int:
    answered = 0
    while True:
        body = api.call("GET", "/api/v1/participant/trial").json()
        if body["trial"] is None:
            return answered
        trial = body["trial"]
        outcome = api.call(
            "POST", "/api/v1/participant/trial",
            {"assignment": trial["token"], "choice": choice, "client_response_ms": 1234,
             "focus_events": [{"type": "hidden", "t": 5}, {"type": "visible", "t": 50}]},
        ).json()  # fmt: skip
        assert outcome["outcome"] == "recorded"
        answered += 1


def test_api_completes_a_discrimination_study_from_a_link():
    study = make_worker_study(n_main=6, n_practice=2, n_catch=1, trials_per_participant=3)
    api = Api()
    entered = enter(api, study)
    assert entered.status_code == 201
    body = entered.json()
    assert body["preview"] is False
    assert body["state"]["stage"] == "consent"
    api.token = body["participant_token"]
    state = api.call("GET", "/api/v1/participant").json()
    assert state["study"]["kind"] == "class_discrimination"
    consent = api.call("POST", "/api/v1/participant/consent", {"agree": True, "consent_version": study.consent_version})
    assert consent.json()["state"]["stage"] == "practice"
    pass_practice(api, study)
    first = api.call("GET", "/api/v1/participant/trial").json()["trial"]
    assert first["number"] == 1
    assert first["total"] == 4  # three main trials plus one catch trial
    assert len(first["options"]) == 2
    assert first["preload"] == [], "no look-ahead lease before the first answer"
    image = api.client.get(first["images"][0]["url"].replace("http://testserver", ""))
    assert image.status_code == 200
    api.call("POST", "/api/v1/participant/trial", {"assignment": first["token"], "choice": 0, "client_response_ms": 1234})
    second = api.call("GET", "/api/v1/participant/trial").json()["trial"]
    assert second["number"] == 2
    assert second["preload"], "once answering, the next trial's image is announced for preloading"
    assert run_trials(api) == 3
    early_state = api.call("GET", "/api/v1/participant").json()["state"]
    assert early_state["stage"] == "finish"
    assert "completion" not in early_state
    completed = api.call("POST", "/api/v1/participant/complete").json()
    assert completed["completion"]["code"] == completion_code_derive(study=study, participant_token=api.token)
    assert completed["completion"]["code"] != study.completion_code
    assert completed["state"]["stage"] == "completed"
    participant = Participant.objects.get(token=api.token)
    responses = Response.objects.filter(assignment__participant=participant)
    assert responses.count() == 4
    assert responses.filter(assignment__item__role=Item.Role.CATCH).count() == 1
    assert all(r.client_response_ms == 1234 for r in responses)


def test_api_trust_study_from_prolific_returns_the_redirect():
    study = make_worker_study(kind=Study.Kind.TRUST, platform=Study.Platform.PROLIFIC, trials_per_participant=2,
                              prolific_completion_url="https://app.prolific.com/submissions/complete")
    api = Api()
    api.token = enter(api, study, PROLIFIC).json()["participant_token"]
    api.call("POST", "/api/v1/participant/consent", {"agree": True, "consent_version": study.consent_version})
    pass_practice(api, study)
    trial = api.call("GET", "/api/v1/participant/trial").json()["trial"]
    assert [image["label"] for image in trial["images"]] == ["Robot A", "Robot B"]
    assert len(trial["scale"]) == 5
    assert trial["predicted"].startswith("Both robots predicted:")
    assert run_trials(api, choice=4) == 2
    for response in Response.objects.select_related("assignment"):
        assert response.score_model_a == (-2 if response.assignment.model_a_shown_left else 2)
    completion = api.call("POST", "/api/v1/participant/complete").json()["completion"]
    assert completion["prolific_redirect_url"] == f"https://app.prolific.com/submissions/complete?cc={study.completion_code}"


def test_api_mturk_preview_stores_nothing():
    study = make_worker_study(platform=Study.Platform.MTURK)
    api = Api()
    body = enter(api, study, {"assignmentId": "ASSIGNMENT_ID_NOT_AVAILABLE", "hitId": "3HIT"}).json()
    assert body["preview"] is True
    assert body["participant_token"] is None
    assert body["example"]["images"]
    assert Participant.objects.count() == 0
    assert Assignment.objects.count() == 0


def test_api_forged_token_and_unknown_study():
    study = make_worker_study()
    api = Api()
    assert api.call("GET", "/api/v1/participant", token="forged-token").status_code == 403
    assert api.call("GET", "/api/v1/participant/trial").status_code == 403
    missing = api.call("POST", "/api/v1/studies/nope/enter", {}, template="/api/v1/studies/{slug}/enter")
    assert missing.status_code == 404
    assert enter(api, study).status_code == 201


def test_api_double_submit_is_a_duplicate_and_out_of_order_steps_conflict():
    study = make_worker_study(trials_per_participant=2)
    api = Api()
    api.token = enter(api, study).json()["participant_token"]
    assert api.call("POST", "/api/v1/participant/complete").status_code == 409
    assert api.call("GET", "/api/v1/participant/practice").status_code == 409
    api.call("POST", "/api/v1/participant/consent", {"agree": True, "consent_version": study.consent_version})
    pass_practice(api, study)
    trial = api.call("GET", "/api/v1/participant/trial").json()["trial"]
    answer = {"assignment": trial["token"], "choice": 1}
    assert api.call("POST", "/api/v1/participant/trial", answer).json()["outcome"] == "recorded"
    assert api.call("POST", "/api/v1/participant/trial", {**answer, "choice": 0}).json()["outcome"] == "duplicate"
    assert Response.objects.count() == 1
    assert api.call("POST", "/api/v1/participant/complete").status_code == 409  # one trial left
    nxt = api.call("GET", "/api/v1/participant/trial").json()["trial"]
    assert nxt["token"] != trial["token"]
    assert nxt["number"] == 2


@pytest.mark.parametrize(
    "body",
    [{"choice": 0}, {"assignment": "x", "choice": 0}, {"assignment": "TRIAL", "choice": "1"},
     {"assignment": "TRIAL", "choice": 7}, {"assignment": "TRIAL", "choice": 0, "focus_events": [{"type": "x", "t": 1}]},
     {"assignment": "TRIAL", "choice": 0, "focus_events": [{"type": {"a": 1}, "t": 1}]},
     {"assignment": "TRIAL", "choice": 0, "focus_events": {"type": "blur"}}, {"assignment": "TRIAL", "choice": None},
     {"assignment": "TRIAL", "choice": 0, "client_response_ms": -5}, {"assignment": "TRIAL", "choice": 0, "comment": 5}],
)
def test_api_rejects_bad_answers_with_a_named_field(body):
    study = make_worker_study(trials_per_participant=2)
    api = Api()
    api.token = enter(api, study).json()["participant_token"]
    api.call("POST", "/api/v1/participant/consent", {"agree": True, "consent_version": study.consent_version})
    pass_practice(api, study)
    trial = api.call("GET", "/api/v1/participant/trial").json()["trial"]
    payload = {k: (trial["token"] if v == "TRIAL" else v) for k, v in body.items()}
    response = api.call("POST", "/api/v1/participant/trial", payload)
    assert response.status_code in (400, 404)
    assert response.json()["error"] in ("invalid", "not_found")
    assert Response.objects.count() == 0


def test_api_rejects_non_json_and_wrong_methods():
    study = make_worker_study()
    api = Api()
    api.token = enter(api, study).json()["participant_token"]
    raw = api.client.post("/api/v1/participant/consent", data="not json", content_type="application/json",
                          HTTP_X_PARTICIPANT_TOKEN=api.token)
    assert raw.status_code == 400
    assert api.client.delete("/api/v1/participant/trial", HTTP_X_PARTICIPANT_TOKEN=api.token).status_code == 405


def test_api_practice_choices_match_the_derivation():
    study = make_worker_study(n_practice=2)
    api = Api()
    api.token = enter(api, study).json()["participant_token"]
    api.call("POST", "/api/v1/participant/consent", {"agree": True, "consent_version": study.consent_version})
    practice = api.call("GET", "/api/v1/participant/practice").json()
    assert (practice["attempt"], practice["attempts"]) == (1, 2)
    for trial in practice["trials"]:
        item = Item.objects.get(public_id=trial["token"])
        order = practice_choices(study=study, participant_token=api.token, attempt=1, item=item).option_order
        assert trial["options"] == [item.options[i] for i in order]


def test_openapi_document_is_served_and_lists_every_api_route():
    api = Api()
    document = api.call("GET", "/api/v1/openapi.json").json()
    assert document["openapi"].startswith("3.")
    from django.urls import get_resolver

    routes = {
        "/" + str(p.pattern).replace("<str:slug>", "{slug}")
        for p in get_resolver().url_patterns[1].url_patterns
        if str(p.pattern).startswith("api/")
    }
    assert routes == set(document["paths"])


def test_one_judgment_query_budget(django_assert_max_num_queries):
    """Steady state (the next trial is already leased ahead): GET trial, its image, POST the answer."""
    study = make_worker_study(n_main=30, n_catch=0, trials_per_participant=10, with_files=False)
    api = Api()
    api.token = enter(api, study).json()["participant_token"]
    api.call("POST", "/api/v1/participant/consent", {"agree": True, "consent_version": study.consent_version})
    pass_practice(api, study)
    for _ in range(2):  # the look-ahead lease starts after the first answer: steady from the third trial
        earlier = api.call("GET", "/api/v1/participant/trial").json()["trial"]
        api.call("POST", "/api/v1/participant/trial", {"assignment": earlier["token"], "choice": 0})
    # lookup, lock, all assignments, take a slot (one statement on PostgreSQL), insert, stamp shown_at
    # (+ savepoint pair); SQLite picks and takes the slot in two statements
    with django_assert_max_num_queries(8 if connection.vendor == "postgresql" else 9):
        trial = api.call("GET", "/api/v1/participant/trial").json()["trial"]
    assert Assignment.objects.get(token=trial["token"]).shown_at is not None
    with django_assert_max_num_queries(1):
        api.client.get(trial["images"][0]["url"])
    # lookup, lock, assignment, flip, counters, insert (+ savepoint pair), then the progress count
    with django_assert_max_num_queries(9):
        body = api.call("POST", "/api/v1/participant/trial", {"assignment": trial["token"], "choice": 0}).json()
    assert body["outcome"] == "recorded"
    assert body["state"] == {"stage": "trial", "answered": 3, "planned": 10}


def test_trial_image_is_cached_by_its_content_hash():
    study = make_worker_study(n_main=4, n_catch=0, trials_per_participant=2)
    api = Api()
    api.token = enter(api, study).json()["participant_token"]
    api.call("POST", "/api/v1/participant/consent", {"agree": True, "consent_version": study.consent_version})
    pass_practice(api, study)
    trial = api.call("GET", "/api/v1/participant/trial").json()["trial"]
    url = trial["images"][0]["url"]
    first = api.client.get(url)
    sha = Assignment.objects.get(token=trial["token"]).item.stimulus_a.sha256
    assert first.status_code == 200
    assert first["ETag"] == f'"{sha}"'
    assert first["Cache-Control"] == "private, max-age=31536000, immutable"
    assert b"".join(first.streaming_content).startswith(b"\x89PNG")
    again = api.client.get(url, HTTP_IF_NONE_MATCH=f'"other", "{sha}"')
    assert again.status_code == 304
    assert again.content == b""
    stale = api.client.get(url, HTTP_IF_NONE_MATCH='"other"')
    assert stale.status_code == 200
    other = Api()
    other_token = enter(other, study).json()["participant_token"]
    assert api.client.get(url.replace(api.token, other_token), HTTP_IF_NONE_MATCH=f'"{sha}"').status_code == 404
