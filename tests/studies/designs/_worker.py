"""A worker through the JSON API, for the design tests: enter, consent, pass the practice."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from django.test import Client

from studies.models import Study


def api(client: Client, method: str, path: str, token: str, body: dict | None = None):  # type: ignore[no-untyped-def]
    """One call of the worker API with the participant token header."""
    data = json.dumps(body) if body is not None else None
    return getattr(client, method)(path, data=data, content_type="application/json", HTTP_X_PARTICIPANT_TOKEN=token)


def worker_through_practice(study: Study, *, right_choice: Callable[[dict[str, Any]], int],
                            check_trial: Callable[[dict[str, Any]], None] = lambda trial: None) -> tuple[Client, str]:
    """A new worker who enters ``study``, consents and passes the practice, answering each practice
    trial (its API payload) with ``right_choice(trial)`` after ``check_trial(trial)``."""
    client = Client()
    entered = client.post(f"/api/v1/studies/{study.slug}/enter", data="{}", content_type="application/json")
    assert entered.status_code == 201, entered.content
    token = entered.json()["participant_token"]
    assert entered.json()["study"]["kind"] == study.kind
    consent = api(client, "post", "/api/v1/participant/consent", token,
                  {"agree": True, "consent_version": study.consent_version})  # fmt: skip
    assert consent.json()["state"]["stage"] == "practice", consent.content
    practice = api(client, "get", "/api/v1/participant/practice", token).json()
    answers = {}
    for trial in practice["trials"]:
        check_trial(trial)
        answers[trial["token"]] = right_choice(trial)
    graded = api(client, "post", "/api/v1/participant/practice", token, {"answers": answers}).json()
    assert graded["passed"] is True, graded
    return client, token


def kind_enums(schema: Any) -> list[list[str]]:
    """Every ``enum`` of the OpenAPI document that lists the study kinds (the ones naming
    ``class_discrimination``), wherever it sits."""

    def walk(node: Any) -> Iterator[dict]:
        if isinstance(node, dict):
            yield node
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    return [node["enum"] for node in walk(schema) if "class_discrimination" in (node.get("enum") or [])]
