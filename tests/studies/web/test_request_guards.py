"""Request parsing hardening: deeply nested JSON is a 400, and the NUL guard reads every body.

Before: ``json.loads`` raised ``RecursionError`` (a 500) on a deeply nested API body or
``focus_events`` form field, and the NUL guard looked for ``\\u0000`` only when the
Content-Type started with exactly ``application/json``, although the API parses any body as JSON.
"""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from studies.fixtures.builders import make_worker_study
from studies.models import Participant, Response
from studies.web.guards import DETAIL, MAX_JSON_DEPTH, JsonInvalid, json_depth, json_parse
from studies.web.http import form_token_make

pytestmark = pytest.mark.django_db


def _nested(depth: int, leaf: str = "0") -> str:
    return "[" * depth + leaf + "]" * depth


# --- json_parse ---------------------------------------------------------------------------


def test_json_parse_accepts_up_to_the_depth_limit_and_refuses_deeper():
    assert json_parse(_nested(MAX_JSON_DEPTH)) is not None
    for depth in (MAX_JSON_DEPTH + 1, 500, 100_000):  # below and far beyond Python's recursion limit
        with pytest.raises(JsonInvalid, match="nested more than"):
            json_parse(_nested(depth))
    with pytest.raises(JsonInvalid, match="nested more than"):
        json_parse(b'{"a": ' * 5000 + b"1" + b"}" * 5000)
    with pytest.raises(JsonInvalid, match="not valid JSON"):
        json_parse(b"{not json")
    with pytest.raises(JsonInvalid, match="not valid JSON"):
        json_parse(b'"\xff\xfe\xfa"')


def test_json_depth_ignores_brackets_inside_strings():
    assert json_depth(b'{"a": [1, {"b": []}]}') == 4
    assert json_depth(json.dumps({"comment": "[" * 500 + '"\\' + "{" * 500}).encode()) == 1
    assert json_depth(b'"[[[["') == 0
    assert json_parse(json.dumps({"comment": "[[[[" * 100})) == {"comment": "[[[[" * 100}


# --- deeply nested bodies over HTTP -------------------------------------------------------


def _api_participant(client: Client) -> tuple[str, dict[str, str]]:
    study = make_worker_study(n_main=4, n_practice=0, trials_per_participant=2, with_files=False)
    token = client.post(f"/api/v1/studies/{study.slug}/enter", "{}", content_type="application/json").json()["participant_token"]
    return study.slug, {"HTTP_X_PARTICIPANT_TOKEN": token}


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 5_000, 200_000])
def test_deeply_nested_api_body_is_a_400(client, depth):
    slug, headers = _api_participant(client)
    body = '{"agree": true, "consent_version": "1", "extra": ' + _nested(depth) + "}"
    response = client.post("/api/v1/participant/consent", body, content_type="application/json", **headers)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_json"
    assert "nested more than" in response.json()["detail"]
    entry = client.post(f"/api/v1/studies/{slug}/enter", '{"workerId": ' + _nested(depth) + "}",
                        content_type="application/json")  # fmt: skip
    assert entry.status_code == 400
    assert entry.json()["error"] == "invalid_json"


def test_brackets_inside_strings_are_only_text(client):
    _, headers = _api_participant(client)
    body = json.dumps({"agree": True, "consent_version": "[" * 3000})
    response = client.post("/api/v1/participant/consent", body, content_type="application/json", **headers)
    assert response.status_code != 400 or response.json()["error"] != "invalid_json"


def test_a_multipart_body_on_the_api_is_a_400_not_a_500(client):
    _, headers = _api_participant(client)
    response = client.post("/api/v1/participant/consent", {"agree": "true"}, **headers)  # multipart/form-data
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_json"


def _html_participant_at_a_trial(client: Client) -> tuple[str, str]:
    study = make_worker_study(n_main=4, n_practice=0, trials_per_participant=2, with_files=False)
    entry = client.get(reverse("studies:worker-entry", args=[study.slug]))
    token = entry["Location"].split("/p/")[1].split("/")[0]
    participant = Participant.objects.get(token=token)
    Participant.objects.filter(pk=participant.pk).update(status=Participant.Status.IN_PROGRESS, practice_passed=True)
    page = client.get(reverse("studies:worker-home", args=[token]))
    assert b"data-trial-form" in page.content
    assignment = participant.assignments.get()
    return token, assignment.token


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 5_000, 200_000])
def test_deeply_nested_focus_events_field_is_a_400(client, depth):
    token, assignment = _html_participant_at_a_trial(client)
    response = client.post(reverse("studies:worker-answer", args=[token]), {
        "form_token": form_token_make(token), "assignment": assignment, "choice": "0",
        "focus_events": _nested(depth, '{"type": "blur", "t": 1}'),
    })  # fmt: skip
    assert response.status_code == 400
    assert b"focus_events" in response.content
    assert Response.objects.count() == 0


# --- the NUL guard on every body the application parses ----------------------------------

JSON_TYPES = [
    "application/json",
    "Application/JSON",
    "APPLICATION/JSON; charset=UTF-8",
    "application/json; charset=utf-8",
    "application/vnd.api+json",
    "application/problem+json",
    "text/plain",
    "text/plain;charset=utf-8",
    "application/octet-stream",
    "",
]


@pytest.mark.parametrize("content_type", JSON_TYPES)
@pytest.mark.parametrize("payload", [b'{"workerId": "A\\u0000B"}', b'{"workerId": "A\\U0000B"}', b'{"workerId": "A\x00B"}'])
def test_nul_in_a_json_body_is_refused_whatever_the_content_type(client, content_type, payload):
    study = make_worker_study(with_files=False)
    response = client.generic("POST", f"/api/v1/studies/{study.slug}/enter", payload, content_type=content_type)
    assert response.status_code == 400
    assert response.json() == {"error": "invalid", "detail": DETAIL}
    assert Participant.objects.count() == 0


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_nul_in_the_body_of_other_methods_is_refused(client, method):
    response = client.generic(method, "/api/v1/participant/trial", b'{"assignment": "\\u0000"}', content_type="text/plain")
    assert response.status_code == 400
    assert response.json()["detail"] == DETAIL


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "Application/X-WWW-Form-Urlencoded; charset=utf-8"])
@pytest.mark.parametrize("field", ["comment=a%00b", "focus_events=%5B%7B%22type%22%3A%22%5Cu0000%22%7D%5D", "comment=a\x00b"])
def test_nul_in_a_form_body_is_refused(client, content_type, field):
    token, assignment = _html_participant_at_a_trial(client)
    body = f"form_token={form_token_make(token)}&assignment={assignment}&choice=0&{field}"
    response = client.generic("POST", reverse("studies:worker-answer", args=[token]), body, content_type=content_type)
    assert response.status_code == 400
    assert response.content.decode() == DETAIL
    assert Response.objects.count() == 0


def test_nul_in_a_multipart_text_field_is_refused_but_file_bytes_are_not(client):
    content_type = "multipart/form-data"
    token, assignment = _html_participant_at_a_trial(client)
    url = reverse("studies:worker-answer", args=[token])
    fields = {"form_token": form_token_make(token), "assignment": assignment, "choice": "0"}
    boundary = "BoUnDaRy"

    def multipart(extra: dict[str, str], file_bytes: bytes = b"") -> bytes:
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in {**fields, **extra}.items()]
        if file_bytes:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="upload"; filename="x.bin"\r\n'
                         "Content-Type: application/octet-stream\r\n\r\n".encode() + file_bytes + b"\r\n")  # fmt: skip
        return b"".join(parts) + f"--{boundary}--\r\n".encode()

    refused = client.generic("POST", url, multipart({"comment": "a\x00b"}), content_type=f"{content_type}; boundary={boundary}")
    assert refused.status_code == 400
    assert refused.content.decode() == DETAIL
    assert Response.objects.count() == 0
    # Zero bytes inside an uploaded file are content, not text: the guard lets the form through.
    accepted = client.generic("POST", url, multipart({}, b"\x00\x01\x00PNG"), content_type=f"{content_type}; boundary={boundary}")
    assert accepted.status_code == 302
    assert Response.objects.count() == 1
    # Django's multipart parser wants the type in lower case; anything else is a 400 before any view.
    other = client.generic("POST", url, multipart({"comment": "a\x00b"}), content_type=f"Multipart/Form-Data; boundary={boundary}")
    assert other.status_code == 400
    assert Response.objects.count() == 1


def test_a_clean_json_body_under_any_content_type_still_works(client):
    study = make_worker_study(with_files=False)
    for content_type in ("text/plain", "Application/JSON", "application/vnd.api+json"):
        response = client.generic("POST", f"/api/v1/studies/{study.slug}/enter", b"{}", content_type=content_type)
        assert response.status_code in (200, 201), response.content
