"""Staff-side hardening: export parameters, admin login throttling, cookies, wording checked at save."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.urls import reverse

from studies.fixtures.builders import make_worker_study
from studies.fixtures.synthetic_responses import synthetic_study_create
from studies.lib.wording import template_error, template_fill, wording_errors
from studies.models import Response, Study
from studies.selectors.participation import DEFAULT_WORDING, example_view, study_wording
from studies.services.exports import MAX_BONUS, bonus_parse, export_rows
from studies.web.http import form_token_make

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[3]


# --- export parameters ---------------------------------------------------------------------

BAD_BONUSES = ["NaN", "nan", "sNaN", "-NaN", "inf", "-inf", "Infinity", "-1", "-0.01", "1e9", "1e999999",
               "1E-999999", "1001", "0.001", "0.505", "abc", "1,50", "0x10", "½", "9" * 41, "1.5.0"]  # fmt: skip
GOOD_BONUSES = [("0", "0.00"), ("-0", "0.00"), ("0.5", "0.50"), (" 1.25 ", "1.25"), ("1000", "1000.00"), ("", "0.00")]


@pytest.mark.parametrize("value", BAD_BONUSES)
def test_bonus_parse_refuses_anything_but_a_small_amount_in_cents(value):
    with pytest.raises(ValueError, match="bonus must be an amount from 0 to"):
        bonus_parse(value)


@pytest.mark.parametrize(("value", "expected"), GOOD_BONUSES)
def test_bonus_parse_accepts_amounts(value, expected):
    assert bonus_parse(value) == Decimal(expected)
    assert str(bonus_parse(value)) == expected
    assert bonus_parse(None) == Decimal("0.00")
    assert bonus_parse(MAX_BONUS) == MAX_BONUS


@pytest.fixture
def study() -> Study:
    return synthetic_study_create(n_workers=4, trials_per_worker=4, n_images=4, seed=3)


@pytest.mark.parametrize("kind", ["payments-mturk", "payments-prolific", "tidy", "summary"])
@pytest.mark.parametrize("value", ["NaN", "inf", "-1", "abc", "1e999999", "<script>alert(1)</script>"])
def test_export_with_a_bad_bonus_is_a_clear_400(staff_client, study, kind, value):
    url = reverse("studies:results_export", args=[study.slug, kind])
    response = staff_client.get(url, {"bonus": value})
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/plain")  # the echoed value is never HTML
    assert "bonus must be an amount from 0 to 1000" in response.content.decode()


def test_export_with_a_good_bonus_pays_it(staff_client, study):
    url = reverse("studies:results_export", args=[study.slug, "payments-mturk"])
    response = staff_client.get(url, {"bonus": "0.5"})
    assert response.status_code == 200
    assert ",0.50,study bonus," in b"".join(response.streaming_content).decode()
    with pytest.raises(ValueError, match="bonus"):
        export_rows(study=study, kind="payments-mturk", bonus="NaN")


def test_results_responses_are_never_cached(staff_client, study):
    for url in (reverse("studies:results", args=[study.slug]),
                reverse("studies:results_export", args=[study.slug, "payments-mturk"]),
                reverse("studies:results_plot", args=[study.slug, "scores", "svg"]),
                reverse("studies:results_pack", args=[study.slug])):  # fmt: skip
        response = staff_client.get(url)
        assert response.status_code == 200, url
        assert {"private", "no-store", "no-cache"} <= {p.strip() for p in response["Cache-Control"].split(",")}, url
        assert "max-age=0" in response["Cache-Control"] or "Expires" in response, url
        if response.streaming:
            b"".join(response.streaming_content)


# --- admin login throttling (django-axes) ---------------------------------------------------------


def _login(client, username: str, password: str, ip: str = "203.0.113.7"):
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password}, REMOTE_ADDR=ip)


def test_admin_login_locks_out_after_five_failures(client, django_user_model, settings):
    assert settings.AXES_FAILURE_LIMIT == 5
    django_user_model.objects.create_superuser("boss", "boss@example.org", "right-password-123")
    for _ in range(4):
        response = _login(client, "boss", "wrong")
        assert response.status_code == 200  # the login form again, with its error
        assert b"Please enter the correct username and password" in response.content
    assert _login(client, "boss", "wrong").status_code == 429  # the fifth failure locks
    locked = _login(client, "boss", "right-password-123")
    assert locked.status_code == 429
    assert b"too many login attempts" in locked.content
    assert "_auth_user_id" not in client.session
    # Locked by username and address together: the same user from elsewhere still logs in.
    other = _login(client, "boss", "right-password-123", ip="198.51.100.9")
    assert other.status_code == 302
    assert client.session["_auth_user_id"]


def test_a_successful_login_resets_the_failure_count(client, django_user_model):
    django_user_model.objects.create_superuser("boss", "boss@example.org", "right-password-123")
    for _ in range(4):
        assert _login(client, "boss", "wrong").status_code == 200
    assert _login(client, "boss", "right-password-123").status_code == 302
    client.logout()
    for _ in range(4):
        assert _login(client, "boss", "wrong").status_code == 200
    assert _login(client, "boss", "right-password-123").status_code == 302


def test_behind_the_proxy_a_spoofed_forwarded_hop_does_not_escape_the_lockout(client, django_user_model, settings):
    settings.XAISTUDY_TRUSTED_PROXY_HOPS = 1  # as in docker/compose.yml
    django_user_model.objects.create_superuser("boss", "boss@example.org", "right-password-123")

    def via_proxy(password: str, spoofed: str):  # type: ignore[no-untyped-def]
        return client.post("/admin/login/?next=/admin/", {"username": "boss", "password": password},
                           REMOTE_ADDR="172.30.0.2", HTTP_X_FORWARDED_FOR=f"{spoofed}, 203.0.113.7")  # fmt: skip

    for k in range(4):
        assert via_proxy("wrong", f"10.0.0.{k}").status_code == 200
    assert via_proxy("wrong", "10.0.0.99").status_code == 429
    assert via_proxy("right-password-123", "10.9.9.9").status_code == 429
    # Another client behind the same proxy is not locked out.
    other = client.post("/admin/login/?next=/admin/", {"username": "boss", "password": "right-password-123"},
                        REMOTE_ADDR="172.30.0.2", HTTP_X_FORWARDED_FOR="198.51.100.20")  # fmt: skip
    assert other.status_code == 302


def test_force_login_still_works_for_tests(staff_client):
    assert staff_client.get("/admin/").status_code == 200


def test_axes_client_address_is_the_rate_limiters(rf, settings):
    from studies.web.ratelimit import client_address
    from xaistudy.settings import axes_client_ip

    request = rf.get("/admin/login/", REMOTE_ADDR="192.0.2.5")
    assert axes_client_ip(request) == client_address(request) == "192.0.2.5"
    request = rf.get("/admin/login/", REMOTE_ADDR="")
    assert axes_client_ip(request) is None  # never a non-address in the inet column


# --- cookies ---------------------------------------------------------------------------------------


def test_production_cookies_are_samesite_lax(tmp_path):
    code = ("import django;django.setup();from django.conf import settings as s;"
            "print(s.SESSION_COOKIE_SAMESITE, s.CSRF_COOKIE_SAMESITE, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, "
            "s.SECURE_PROXY_SSL_HEADER)")  # fmt: skip
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL", "CELERY_"))}
    env = {**clean, "DJANGO_SETTINGS_MODULE": "xaistudy.settings_production", "DJANGO_SECRET_KEY": "x" * 60,
           "DJANGO_ALLOWED_HOSTS": "xaistudy.example.org", "XAISTUDY_VAR_DIR": str(tmp_path)}  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:4] == ["Lax", "Lax", "True", "True"]


def test_worker_flow_needs_no_session_or_csrf_cookie(client):
    """A worker answers with no cookie at all (as inside a cross-site frame that drops them)."""
    study = make_worker_study(trials_per_participant=2, n_practice=0)
    entry = client.get(reverse("studies:worker-entry", args=[study.slug]))
    token = re.match(r"^/p/([^/]+)/", urlsplit(entry["Location"]).path).group(1)
    client.cookies.clear()
    consent = client.post(reverse("studies:worker-consent", args=[token]),
                          {"form_token": form_token_make(token), "decision": "agree",
                           "consent_version": study.consent_version})  # fmt: skip
    assert consent.status_code == 302
    practice = client.post(reverse("studies:worker-practice", args=[token]), {"form_token": form_token_make(token)})
    assert practice.status_code == 302  # no practice items: straight to the trials
    page = client.get(reverse("studies:worker-home", args=[token]))
    assert b"data-trial-form" in page.content
    assignment = re.search(rb'name="assignment" value="([^"]+)"', page.content).group(1).decode()
    answer = client.post(reverse("studies:worker-answer", args=[token]),
                         {"form_token": form_token_make(token), "assignment": assignment, "choice": "0"})  # fmt: skip
    assert answer.status_code == 302
    assert Response.objects.filter(assignment__token=assignment).exists()
    assert "sessionid" not in client.cookies
    assert "csrftoken" not in client.cookies


# --- wording checked at save, and robust on the worker page -----------------------------------------


@pytest.mark.parametrize(("template", "ok"), [
    ("Both robots predicted: {label}", True), ("{label} / {label}", True), ("no placeholder", True),
    ("literal {{braces}} and {label}", True), ("{x}", False), ("{}", False), ("{0}", False),
    ("{label.upper}", False), ("{label[0]}", False), ("{label!r}", False), ("{label:>99999999}", False),
    ("{label", False), ("label}", False), ("{{label}", False), ("{label.__class__.__mro__}", False),
])  # fmt: skip
def test_template_error(template, ok):
    error = template_error(template, {"label"})
    assert (error is None) == ok, error
    filled = template_fill(template, {"label"}, label="cat")
    assert (filled is not None) == ok
    if ok:
        assert filled == template.format(label="cat")


@pytest.mark.parametrize(("wording", "field", "message"), [
    ({"predicted": "Both said {x}"}, "wording", "placeholder {x} cannot be filled"),
    ({"predicted": "Both said {label"}, "wording", "braces do not match"),
    ({"predicted": 5}, "wording", "predicted must be text"),
    ({"scale": ["a", "b"]}, "wording", "scale must be a list of 5"),
    ({"robot_c": "C"}, "wording", "unknown key(s) robot_c"),
    (["robot_a"], "wording", "must be a JSON object"),
    ("text", "wording", "must be a JSON object"),
])  # fmt: skip
def test_wording_errors(wording, field, message):
    errors = wording_errors(Study.Kind.TRUST, wording, "")
    assert message in errors[field]


def test_wording_errors_accept_good_wording():
    assert wording_errors(Study.Kind.TRUST, {}, "") == {}
    assert wording_errors(Study.Kind.TRUST, None, "Which is {best}?") == {}  # the question is never formatted
    assert wording_errors(Study.Kind.TRUST, {**DEFAULT_WORDING, "predicted": "They saw a {label}"}, "") == {}
    assert wording_errors(Study.Kind.CLASS_DISCRIMINATION, {"robot_a": "", "scale": []}, "") == {}


def _admin_form_data(study: Study, **changes: str) -> dict[str, str]:
    """The study change form as the admin would post it (every visible field, inlines empty)."""
    import json

    data = {
        "name": study.name, "kind": study.kind, "status": study.status, "methods": json.dumps(study.methods),
        "model": study.model_id or "", "model_pair": study.model_pair_id or "", "image_set": study.image_set_id,
        "judgments_per_item": study.judgments_per_item, "trials_per_participant": study.trials_per_participant,
        "catch_trials": study.catch_trials, "practice_trials": study.practice_trials,
        "practice_pass_fraction": study.practice_pass_fraction, "lease_seconds": study.lease_seconds,
        "require_both_correct": "on" if study.require_both_correct else "", "question": study.question,
        "wording": json.dumps(study.wording), "consent_text": study.consent_text,
        "public_title": study.public_title, "public_description": study.public_description,
        "min_viewport_width": study.min_viewport_width, "min_viewport_height": study.min_viewport_height,
        "consent_version": study.consent_version, "instructions": study.instructions,
        "questionnaire": json.dumps(study.questionnaire), "platform": study.platform,
        "completion_code": study.completion_code, "prolific_completion_url": study.prolific_completion_url,
        "seed": study.seed, "exclusion_group": "", "entries_per_client": study.entries_per_client,
        "entry_rate_limit": "", "explainer_options": json.dumps(study.explainer_options),
        "exclusion_rules": json.dumps(study.exclusion_rules),
        "jobs-TOTAL_FORMS": "0", "jobs-INITIAL_FORMS": "0",
        "excluded_workers-TOTAL_FORMS": "0", "excluded_workers-INITIAL_FORMS": "0",
    }  # fmt: skip
    data.update(changes)
    return {k: str(v) for k, v in data.items()}


def test_admin_refuses_a_wording_the_page_cannot_fill(staff_client):
    study = make_worker_study(kind=Study.Kind.TRUST)
    url = reverse("admin:studies_study_change", args=[study.pk])
    bad = staff_client.post(url, _admin_form_data(study, wording='{"predicted": "Both said {x}"}'))
    assert bad.status_code == 200  # the form again, with the error; never a 500
    assert "placeholder {x} cannot be filled" in bad.content.decode()
    study.refresh_from_db()
    assert study.wording == {}
    # The study is live: a wording change needs the explicit confirmation (issue #13).
    good = staff_client.post(url, _admin_form_data(study, wording='{"predicted": "Both saw a {label}"}',
                                                    confirm_live_change="on"))
    assert good.status_code == 302, good.content.decode()[:2000]
    study.refresh_from_db()
    assert study.wording == {"predicted": "Both saw a {label}"}


@pytest.mark.parametrize("stored", [
    {"predicted": "Both said {x}"}, {"predicted": "{label"}, {"predicted": "{label.__class__}"},
    {"predicted": ["{x}"], "robot_a": {"a": 1}, "scale": "bad"}, ["not", "an", "object"], "text",
])  # fmt: skip
def test_worker_pages_fall_back_to_the_default_for_a_stored_bad_wording(client, stored):
    study = make_worker_study(kind=Study.Kind.TRUST, n_practice=1)
    Study.objects.filter(pk=study.pk).update(wording=stored)  # as if saved before validation existed
    study.refresh_from_db()
    wording = study_wording(study)
    assert wording.predicted == DEFAULT_WORDING["predicted"]
    assert wording.robot_a == DEFAULT_WORDING["robot_a"]
    assert wording.scale == DEFAULT_WORDING["scale"]
    item = study.items.filter(role="practice").first()
    assert example_view(study=study, item=item).predicted == f"Both robots predicted: {item.target_label}"
    # Over HTTP: entry, consent, then the practice page shows the trust trial with the default text.
    entry = client.get(reverse("studies:worker-entry", args=[study.slug]))
    token = re.match(r"^/p/([^/]+)/", urlsplit(entry["Location"]).path).group(1)
    consent = client.post(reverse("studies:worker-consent", args=[token]),
                          {"form_token": form_token_make(token), "decision": "agree",
                           "consent_version": study.consent_version})  # fmt: skip
    assert consent.status_code == 302
    page = client.get(reverse("studies:worker-home", args=[token]))
    assert page.status_code == 200
    assert f"Both robots predicted: {item.target_label}" in page.content.decode()
    api = client.get(reverse("studies:api-participant"), HTTP_X_PARTICIPANT_TOKEN=token)
    assert api.status_code == 200
