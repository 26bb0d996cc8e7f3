"""Fuzzing on PostgreSQL: the JSON API from its OpenAPI schema, and the worker pages' forms.

Rule: no input, however malformed, gets a 5xx. PostgreSQL matters here (it refuses NUL bytes in
text, which SQLite stores), so this suite is ``services``. Each operation gets ``EXAMPLES``
schemathesis-generated cases (positive and negative), sent with one of four credentials in turn:
none, a forged token, the token of a participant at consent, and one in the middle of trials;
half the cases use the live study's real slug. The totals are printed (``-s`` shows them).
"""

from __future__ import annotations

import json
from collections import Counter
from itertools import count

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from django.test import Client
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from studies.fixtures.builders import make_worker_study
from studies.web.http import form_token_make

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

EXAMPLES = 60
FORM_EXAMPLES = 40
FORGED = "forged-0123456789abcdefghijklmnopqrstuv"
GUARD = "studies.web.guards.NulByteGuardMiddleware"


@pytest.fixture
def live_study(settings):  # type: ignore[no-untyped-def]
    """A live link study with practice, a questionnaire, and two participants at different stages."""
    settings.XAISTUDY_RATE_LIMITS = {"entry": (10**6, 60), "submit": (10**6, 60), "api": (10**6, 60)}
    settings.DEBUG = False
    # Without the guard, NUL bytes reach PostgreSQL and five endpoints answer 500 (found by
    # this suite): the project's settings must list it first.
    assert settings.MIDDLEWARE[0] == GUARD
    study = make_worker_study(n_main=8, n_practice=1, judgments_per_item=50, trials_per_participant=4,
                              questionnaire=[{"name": "age", "label": "Age", "type": "number", "required": True}])  # fmt: skip
    tokens = []
    for stage in ("consent", "trial"):
        client = Client()
        data = client.post(f"/api/v1/studies/{study.slug}/enter", "{}", content_type="application/json").json()
        token = data["participant_token"]
        headers = {"HTTP_X_PARTICIPANT_TOKEN": token}
        if stage == "trial":
            client.post("/api/v1/participant/consent", json.dumps({"agree": True, "consent_version": study.consent_version}),
                        content_type="application/json", **headers)  # fmt: skip
            practice = client.get("/api/v1/participant/practice", **headers).json()["trials"]
            answers = {t["token"]: 0 for t in practice}
            graded = client.post("/api/v1/participant/practice", json.dumps({"answers": answers}),
                                 content_type="application/json", **headers).json()  # fmt: skip
            if not graded["passed"]:  # attempt 2 is a new draw (here the one-item pool again, reshuffled)
                right = {f["token"]: f["right_answer"] for f in graded["feedback"]}
                practice = client.get("/api/v1/participant/practice", **headers).json()["trials"]
                answers = {t["token"]: t["options"].index(right[t["token"]]) for t in practice}
                client.post("/api/v1/participant/practice", json.dumps({"answers": answers}),
                            content_type="application/json", **headers)  # fmt: skip
            assert client.get("/api/v1/participant/trial", **headers).json()["trial"] is not None
        tokens.append(token)
    return study, tokens


def test_json_api_from_its_openapi_schema_never_answers_5xx(live_study, capsys) -> None:  # type: ignore[no-untyped-def]
    study, tokens = live_study
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", get_wsgi_application())
    credentials = [None, FORGED, *tokens]
    turn = count()
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9

    for operation in operations:

        @given(case=st.one_of(*(operation.as_strategy(generation_mode=mode) for mode in schemathesis.GenerationMode)))
        @hypothesis_settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                             phases=[Phase.explicit, Phase.generate],
                             suppress_health_check=list(HealthCheck))  # fmt: skip
        def fuzz(case) -> None:  # type: ignore[no-untyped-def]
            n = next(turn)
            if case.path_parameters and "slug" in case.path_parameters and n % 2:
                case.path_parameters["slug"] = study.slug
            headers = dict(case.headers or {})
            headers.pop("X-Participant-Token", None)
            token = credentials[n % len(credentials)]
            if token is not None:
                headers["X-Participant-Token"] = token
            case.headers = headers
            response = case.call()
            statuses[response.status_code] += 1
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: "
                                f"{case.as_curl_command()[:300]}")  # fmt: skip

        fuzz()

    nul_probes = [
        ("POST", "/api/v1/studies/a%00b/enter", {}, None),
        ("POST", "/api/v1/participant/consent", {"agree": True, "consent_version": "\x00"}, tokens[0]),
        ("POST", "/api/v1/participant/trial", {"assignment": "x\x00", "choice": 0}, tokens[1]),
        ("POST", "/api/v1/participant/trial", {"assignment": "x", "choice": 0, "comment": "a\x00"}, tokens[1]),
        ("POST", "/api/v1/participant/questionnaire", {"answers": {"age": "3\x00"}}, tokens[1]),
        ("GET", "/api/v1/participant", None, "tok\x00en"),
    ]
    client = Client(raise_request_exception=False)
    for method, path, body, token in nul_probes:
        headers = {"HTTP_X_PARTICIPANT_TOKEN": token} if token else {}
        response = client.generic(method, path, json.dumps(body) if body is not None else "",
                                  content_type="application/json", **headers)  # fmt: skip
        statuses[response.status_code] += 1
        if response.status_code >= 500:
            failures.append(f"{method} {path} {body!r} -> {response.status_code}")

    sent = sum(statuses.values())
    with capsys.disabled():
        print(f"\nAPI fuzz: {sent} requests over {len(operations)} operations; statuses {dict(sorted(statuses.items()))}; "
              f"5xx: {sum(n for s, n in statuses.items() if s >= 500)}")  # fmt: skip
    assert sent >= EXAMPLES * len(operations) // 2
    assert not failures, "\n".join(failures[:10])
    assert set(statuses) - {200, 201} != set(), "the fuzzer never sent a bad request"


_text = st.one_of(
    st.text(max_size=300),
    st.sampled_from(["", "0", "1", "-1", "2", "99999999999999999999", "nan", "\x00", "' OR 1=1 --", "=cmd|' /C calc'!A0",
                     "<script>alert(1)</script>", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "a" * 5000]),
)  # fmt: skip
FORM_FIELDS = ["agree", "consent_version", "choice", "assignment", "client_response_ms", "focus_events", "comment",
               "age", "csrfmiddlewaretoken"]  # fmt: skip


def test_worker_page_forms_never_answer_5xx(live_study, capsys) -> None:  # type: ignore[no-untyped-def]
    study, tokens = live_study
    client = Client(raise_request_exception=False)  # count a 500 like a browser would see it
    pages = ["consent", "practice", "answer", "questionnaire", "complete"]
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    turn = count()

    @given(form=st.dictionaries(st.sampled_from(FORM_FIELDS) | st.text(max_size=20), _text, max_size=8),
           page=st.sampled_from(pages))  # fmt: skip
    @hypothesis_settings(max_examples=FORM_EXAMPLES * len(pages), deadline=None, database=None, derandomize=True,
                         suppress_health_check=list(HealthCheck))  # fmt: skip
    def fuzz(form: dict[str, str], page: str) -> None:
        n = next(turn)
        token = [FORGED, *tokens][n % 3]
        form = dict(form)
        if n % 4:  # mostly a valid signed form token, so the fuzz reaches the views
            form["form_token"] = form_token_make(tokens[n % 2])
        response = client.post(f"/p/{token}/{page}", form)
        statuses[response.status_code] += 1
        if response.status_code >= 500:
            failures.append(f"POST /p/<token>/{page} {form!r} -> {response.status_code}")

    fuzz()
    for path in (f"/s/{study.slug}/?workerId=%00&assignmentId=x&hitId=y", f"/s/{study.slug}/?PROLIFIC_PID=%FF%FE",
                 f"/p/{tokens[1]}/img/{FORGED}/main", f"/p/{tokens[1]}/img/x/../../etc", "/s/%00/",
                 f"/p/{tokens[0]}/practice-img/{FORGED}/left", "/p/%00/", f"/p/{tokens[1]}/?x=%00"):  # fmt: skip
        response = client.get(path)
        statuses[response.status_code] += 1
        if response.status_code >= 500:
            failures.append(f"GET {path} -> {response.status_code}")
    sent = sum(statuses.values())
    with capsys.disabled():
        print(f"\nform fuzz: {sent} requests; statuses {dict(sorted(statuses.items()))}; "
              f"5xx: {sum(n for s, n in statuses.items() if s >= 500)}")  # fmt: skip
    assert not failures, "\n".join(failures[:10])
