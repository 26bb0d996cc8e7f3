"""The device gate (issue 12, item 8): a study may set a minimum viewport; below it, the worker is
asked to switch device before consent and nothing is recorded.

The consent page measures the window in JavaScript (``worker.js``) and sends it with the form;
the server refuses a consent without a large enough measurement, on the HTML form and the API.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

import pytest
import requests
import schemathesis
from django.test import Client
from django.urls import reverse
from schemathesis.core.transport import Response as WireResponse

from studies.fixtures.builders import make_worker_study
from studies.models import Assignment, Participant, Study
from studies.services.participation import (
    ViewportTooSmall,
    participant_consent,
    viewport_fits,
    viewport_parse,
)
from studies.web.http import form_token_make
from studies.web.openapi import SCHEMA

pytestmark = pytest.mark.django_db

API_SCHEMA = schemathesis.openapi.from_dict(SCHEMA)


def gated_study(width: int = 1024, height: int = 600, **kwargs) -> Study:  # type: ignore[no-untyped-def]
    study = make_worker_study(**kwargs)
    Study.objects.filter(pk=study.pk).update(min_viewport_width=width, min_viewport_height=height)
    study.refresh_from_db()
    return study


def enter(client: Client, study: Study) -> str:
    response = client.get(reverse("studies:worker-entry", args=[study.slug]))
    assert response.status_code == 302
    return re.match(r"^/p/([^/]+)/", urlsplit(response["Location"]).path).group(1)


def consent(client: Client, study: Study, token: str, decision: str = "agree", **viewport: str):  # type: ignore[no-untyped-def]
    payload = {"form_token": form_token_make(token), "decision": decision, "consent_version": study.consent_version,
               **{f"viewport_{k}": v for k, v in viewport.items()}}  # fmt: skip
    return client.post(reverse("studies:worker-consent", args=[token]), payload)


def assert_nothing_recorded(token: str) -> None:
    participant = Participant.objects.get(token=token)
    assert participant.status == Participant.Status.STARTED
    assert participant.consent_version == ""
    assert not participant.practice_passed
    assert Assignment.objects.filter(participant=participant).count() == 0


def test_viewport_parse_and_fits():
    assert viewport_parse("1280", "800") == (1280, 800)
    assert viewport_parse(1280, 800) == (1280, 800)
    for bad in (("", "800"), (None, None), ("12.5", "800"), ("-1", "800"), (0, 800), (True, 800), (10**6, 800),
                ("1280", "abc"), ([1280], 800), ("\u00b2", "800"), ("\u0661\u0662\u0663\u0664", "800"),
                ("9" * 400, "800")):  # fmt: skip
        assert viewport_parse(*bad) is None, bad
    study = Study(min_viewport_width=1024, min_viewport_height=0)
    assert viewport_fits(study=study, viewport=(1024, 10))
    assert not viewport_fits(study=study, viewport=(1023, 2000))
    assert not viewport_fits(study=study, viewport=None)
    assert viewport_fits(study=Study(), viewport=None), "no minimum: nothing to measure"
    assert not viewport_fits(study=Study(min_viewport_height=700), viewport=(2000, 699))


def test_consent_page_hides_and_disables_the_form_until_measured(client):
    study = gated_study()
    token = enter(client, study)
    page = client.get(reverse("studies:worker-home", args=[token])).content.decode()
    assert 'data-device-gate data-min-width="1024" data-min-height="600" hidden' in page
    assert re.search(r"<section class=\"card consent\" data-consent data-gated hidden>", page)
    assert re.search(r'<button[^>]*data-agree disabled>', page)
    assert re.search(r'<button[^>]*data-decline disabled>', page)
    assert 'name="viewport_width"' in page
    assert "larger screen" in page
    assert "<noscript>" in page
    ungated = make_worker_study()
    other = enter(Client(), ungated)
    plain = client.get(reverse("studies:worker-home", args=[other])).content.decode()
    assert "data-device-gate" not in plain
    assert re.search(r'<button[^>]*data-agree>', plain)


def test_html_consent_is_refused_without_a_large_enough_viewport(client):
    study = gated_study(trials_per_participant=2)
    token = enter(client, study)
    for viewport in ({}, {"width": "390", "height": "844"}, {"width": "1280", "height": "500"},
                     {"width": "abc", "height": "800"}):  # fmt: skip
        refused = consent(client, study, token, **viewport)
        assert refused.status_code == 400, viewport
        text = refused.content.decode()
        assert "data-device-refused" in text
        assert "Please switch to a larger screen" in text
        assert "Nothing has been recorded" in text
        assert_nothing_recorded(token)
    assert "yours is 390 x 844" in consent(client, study, token, width="390", height="844").content.decode()
    # Still on the consent page: after switching to a larger window the same participant consents.
    assert b"data-agree" in client.get(reverse("studies:worker-home", args=[token])).content
    accepted = consent(client, study, token, width="1280", height="800")
    assert accepted.status_code == 302
    participant = Participant.objects.get(token=token)
    assert participant.status == Participant.Status.CONSENTED
    assert participant.consent_version == study.consent_version


def test_declining_needs_no_measurement_and_ungated_studies_need_none(client):
    study = gated_study()
    token = enter(client, study)
    assert consent(client, study, token, decision="decline").status_code == 302
    assert Participant.objects.get(token=token).status == Participant.Status.DECLINED
    plain = make_worker_study()
    other = enter(Client(), plain)
    assert consent(client, plain, other).status_code == 302
    assert Participant.objects.get(token=other).status == Participant.Status.CONSENTED


def test_service_refuses_and_records_nothing():
    study = gated_study(width=0, height=700)
    participant = Participant.objects.create(study=study, platform="link", platform_worker_id="anonx", session_key="anonx")
    with pytest.raises(ViewportTooSmall) as refused:
        participant_consent(participant=participant, agree=True, version=study.consent_version, viewport=(3000, 699))
    assert refused.value.measured == (3000, 699)
    assert "700 px high" in str(refused.value)
    participant.refresh_from_db()
    assert participant.status == Participant.Status.STARTED
    participant_consent(participant=participant, agree=True, version=study.consent_version, viewport=(360, 700))
    assert participant.status == Participant.Status.CONSENTED
    # Repeating a consent already given is a no-op, measured or not.
    participant_consent(participant=participant, agree=True, version=study.consent_version)


class Api:
    def __init__(self) -> None:
        self.client = Client(enforce_csrf_checks=True)
        self.token = ""

    def call(self, method: str, path: str, body: dict | None = None, template: str | None = None):  # type: ignore[no-untyped-def]
        headers = {"HTTP_X_PARTICIPANT_TOKEN": self.token} if self.token else {}
        data = json.dumps(body) if body is not None else None
        response = getattr(self.client, method.lower())(path, data=data, content_type="application/json", **headers)
        wire = WireResponse(
            status_code=response.status_code, headers={k.lower(): [v] for k, v in response.items()},
            content=response.content, request=requests.Request(method, f"http://testserver{path}").prepare(),
            elapsed=0.0, message="", encoding="utf-8", http_version="1.1", verify=True,
        )  # fmt: skip
        API_SCHEMA[template or path][method.upper()].validate_response(wire)
        return response


def test_api_consent_needs_the_viewport_when_the_study_sets_a_minimum():
    study = gated_study(width=800, height=0)
    api = Api()
    entered = api.call("POST", f"/api/v1/studies/{study.slug}/enter", {}, template="/api/v1/studies/{slug}/enter").json()
    assert entered["study"]["min_viewport"] == {"width": 800, "height": 0}
    api.token = entered["participant_token"]
    body = {"agree": True, "consent_version": study.consent_version}
    missing = api.call("POST", "/api/v1/participant/consent", body)
    assert missing.status_code == 400
    assert missing.json()["error"] == "viewport_too_small"
    small = api.call("POST", "/api/v1/participant/consent", {**body, "viewport": {"width": 799, "height": 5000}})
    assert small.json()["error"] == "viewport_too_small"
    assert "799 x 5000" in small.json()["detail"]
    for malformed in ({"width": "wide"}, [800, 600], {"width": 800}, {"width": 800.5, "height": 600}, "800x600"):
        bad = api.call("POST", "/api/v1/participant/consent", {**body, "viewport": malformed})
        assert bad.status_code == 400, malformed
        assert bad.json()["error"] == "invalid"
        assert bad.json()["detail"].startswith("viewport:")
    assert_nothing_recorded(api.token)
    ok = api.call("POST", "/api/v1/participant/consent", {**body, "viewport": {"width": 800, "height": 300}})
    assert ok.status_code == 200
    assert ok.json()["state"]["stage"] == "practice"


def test_api_ungated_study_ignores_a_missing_viewport():
    study = make_worker_study()
    api = Api()
    entered = api.call("POST", f"/api/v1/studies/{study.slug}/enter", {}, template="/api/v1/studies/{slug}/enter").json()
    assert entered["study"]["min_viewport"] == {"width": 0, "height": 0}
    api.token = entered["participant_token"]
    ok = api.call("POST", "/api/v1/participant/consent", {"agree": True, "consent_version": study.consent_version})
    assert ok.status_code == 200


def test_openapi_documents_the_viewport():
    consent_request = SCHEMA["components"]["schemas"]["ConsentRequest"]
    assert "viewport" in consent_request["properties"]
    assert "viewport_too_small" in consent_request["description"]
    assert "min_viewport" in SCHEMA["components"]["schemas"]["Study"]["required"]
