"""The consent template (issue #13): placeholders the researcher must fill; the version is for staff only."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from studies.fixtures.builders import make_worker_study
from studies.lib.consent import (
    DEFAULT_CONSENT_TEMPLATE,
    DEFAULT_FIELDS,
    consent_errors,
    consent_fill,
    consent_placeholders,
    consent_text_effective,
)
from studies.models import Participant, Study
from tests.studies.web.test_worker_flow import enter, post, token_from

FILLED = {"DURATION": "10 minutes", "PAY": "USD 2.00 on completion", "CONTACT": "study-team@example.org",
          "DATA USE": "Anonymous answers may be published as open data."}  # fmt: skip


# -- pure functions ---------------------------------------------------------------------------


def test_the_default_template_names_duration_pay_contact_and_data_use():
    assert consent_placeholders(DEFAULT_CONSENT_TEMPLATE) == ["DURATION", "PAY", "DATA USE", "CONTACT"]
    assert set(DEFAULT_FIELDS) == set(consent_placeholders(DEFAULT_CONSENT_TEMPLATE))


def test_placeholders_are_listed_once_in_order_of_first_appearance():
    assert consent_placeholders("[PAY] then [DURATION], [PAY] again") == ["PAY", "DURATION"]


@pytest.mark.parametrize("text", [
    "", "A plain text with no fields.", "Smith et al. [1] and [12]", "[sic] lower case", "a single letter [A]",
    "unclosed [DURATION", "[ DURATION]", "[DURATION ]", "[]",
])  # fmt: skip
def test_other_brackets_are_not_placeholders(text):
    assert consent_placeholders(text) == []


@pytest.mark.parametrize(("text", "expected"), [
    ("[DATA USE]", ["DATA USE"]), ("[DATA_USE]", ["DATA_USE"]), ("[IRB-NUMBER]", ["IRB-NUMBER"]),
    ("[PI2]", ["PI2"]), ("x[PAY]y", ["PAY"]),
])  # fmt: skip
def test_upper_case_words_in_square_brackets_are_placeholders(text, expected):
    assert consent_placeholders(text) == expected


def test_none_reads_as_empty():
    assert consent_placeholders(None) == []  # type: ignore[arg-type]


def test_filling_every_field_leaves_none():
    filled = consent_fill(DEFAULT_CONSENT_TEMPLATE, FILLED)
    assert consent_placeholders(filled) == []
    assert "about 10 minutes" in filled
    assert "study-team@example.org" in filled
    assert consent_fill("[PAY] and [OTHER]", {"PAY": "USD 1"}) == "USD 1 and [OTHER]"


def test_the_effective_text_is_the_template_when_the_study_has_none():
    assert consent_text_effective("") == DEFAULT_CONSENT_TEMPLATE
    assert consent_text_effective("  \n") == DEFAULT_CONSENT_TEMPLATE
    assert consent_text_effective("Our own text.") == "Our own text."


def test_publish_errors_name_each_unfilled_field():
    (message,) = consent_errors("")
    assert "[DURATION]" in message
    assert "[PAY]" in message
    assert "[CONTACT]" in message
    assert "[DATA USE]" in message
    assert "default consent template" in message
    (message,) = consent_errors(consent_fill(DEFAULT_CONSENT_TEMPLATE, {**FILLED, "PAY": "[PAY]"}))
    assert "[PAY]" in message
    assert "[DURATION]" not in message
    assert consent_errors(consent_fill(DEFAULT_CONSENT_TEMPLATE, FILLED)) == []
    assert consent_errors("Our own complete text, no fields.") == []


# -- the worker's consent page ----------------------------------------------------------------


def _consent_page(client, study: Study) -> tuple[str, str]:
    token = token_from(enter(client, study))
    page = client.get(reverse("studies:worker-home", args=[token]))
    assert page.status_code == 200
    return token, page.content.decode()


@pytest.mark.django_db
def test_a_study_without_consent_text_shows_the_template_with_its_fields(client):
    study = make_worker_study()
    Study.objects.filter(pk=study.pk).update(consent_text="")  # the fixture fills it; a new study has none
    study.refresh_from_db()
    _, page = _consent_page(client, study)
    for name in DEFAULT_FIELDS:
        assert f"[{name}]" in page
    assert "image-recognition software" in page


@pytest.mark.django_db
def test_the_study_consent_text_replaces_the_template(client):
    study = make_worker_study()
    study.consent_text = consent_fill(DEFAULT_CONSENT_TEMPLATE, FILLED)
    study.consent_version = "2024-05-v3"
    study.save(update_fields=["consent_text", "consent_version"])
    token, page = _consent_page(client, study)
    assert "about 10 minutes" in page
    assert "study-team@example.org" in page
    assert consent_placeholders(page) == []
    # The version is not shown to the worker, only carried in the form, which the POST checks.
    assert "Consent version" not in page
    visible = re.sub(r"<input[^>]*>", "", page)
    assert "2024-05-v3" not in visible
    assert re.search(r'<input type="hidden" name="consent_version" value="2024-05-v3">', page)
    response = post(client, "consent", token, {"decision": "agree", "consent_version": "2024-05-v3"})
    assert response.status_code == 302
    participant = Participant.objects.get(token=token)
    assert participant.status == Participant.Status.CONSENTED
    assert participant.consent_version == "2024-05-v3"
