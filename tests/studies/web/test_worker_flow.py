"""The worker's HTML flow: entry from each platform, consent, practice, trials, completion."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from django.urls import reverse

from studies.fixtures.builders import make_worker_study
from studies.lib.choices import practice_choices
from studies.models import Assignment, ExcludedWorker, Item, Participant, Response, Study
from studies.services.participation import completion_code_derive, practice_draw
from studies.web.http import form_token_make

pytestmark = pytest.mark.django_db

MTURK = {"assignmentId": "3ASSIGNMENT0001", "hitId": "3HIT0001", "workerId": "A1WORKER", "turkSubmitTo": "https://workersandbox.mturk.com"}
PROLIFIC = {"PROLIFIC_PID": "5f1a2b3c4d5e6f7a8b9c0d1e", "STUDY_ID": "60aa00bb11cc22dd33ee44ff", "SESSION_ID": "sess0001"}


def enter(client, study: Study, params: dict | None = None):
    return client.get(reverse("studies:worker-entry", args=[study.slug]), params or {})


def token_from(response) -> str:
    path = urlsplit(response["Location"]).path
    match = re.match(r"^/p/([^/]+)/", path)
    assert match, path
    return match.group(1)


def post(client, name: str, token: str, data: dict | None = None, **extra):
    payload = {"form_token": form_token_make(token), **(data or {})}
    return client.post(reverse(f"studies:worker-{name}", args=[token]), payload, **extra)


def consent_and_practice(client, study: Study, token: str) -> None:
    assert post(client, "consent", token, {"decision": "agree", "consent_version": study.consent_version}).status_code == 302
    participant = Participant.objects.get(token=token)
    answers = {}
    for item in practice_draw(study=study, participant_token=token, attempt=1):
        choices = practice_choices(study=study, participant_token=token, attempt=1, item=item)
        right = choices.option_order.index(item.correct_option) if item.correct_option is not None and item.options else 2
        answers[f"choice_{item.public_id}"] = str(right)
    response = post(client, "practice", token, {**answers, "attempt": "1"})
    assert response.status_code == 200
    assert b'data-practice-result="passed"' in response.content
    participant.refresh_from_db()
    assert participant.practice_passed


def current_assignment(token: str) -> Assignment:
    return Assignment.objects.filter(participant__token=token, status=Assignment.Status.LEASED).order_by("position").first()


def answer_all(client, token: str, choice: str = "0") -> int:
    for answered in range(50):
        page = client.get(reverse("studies:worker-home", args=[token]))
        if b"data-trial-form" not in page.content:
            return answered
        assignment = current_assignment(token)
        assert assignment.token.encode() in page.content
        response = post(client, "answer", token, {"assignment": assignment.token, "choice": choice, "client_response_ms": "900",
                                                  "focus_events": '[{"type": "blur", "t": 10}, {"type": "focus", "t": 20}]'})
        assert response.status_code == 302
    raise AssertionError("never finished")


def test_link_flow_discrimination_end_to_end(client):
    study = make_worker_study(n_main=6, n_practice=2, trials_per_participant=3)
    response = enter(client, study)
    assert response.status_code == 302
    token = token_from(response)
    home = client.get(reverse("studies:worker-home", args=[token]))
    assert b"data-agree" in home.content
    consent_and_practice(client, study, token)
    assert answer_all(client, token) == 3
    finish = client.get(reverse("studies:worker-home", args=[token]))
    assert b"data-finish" in finish.content
    own_code = completion_code_derive(study=study, participant_token=token)
    assert own_code.encode() not in finish.content
    done = post(client, "complete", token)
    assert done.status_code == 302
    assert done["Location"].endswith("/done")
    page = client.get(done["Location"])
    assert own_code.encode() in page.content
    assert study.completion_code.encode() not in page.content  # the study-wide (Prolific) code is not shown
    participant = Participant.objects.get(token=token)
    assert participant.completion_code == own_code
    assert participant.status == Participant.Status.COMPLETED
    responses = Response.objects.filter(assignment__participant=participant)
    assert responses.count() == 3
    first = responses.select_related("assignment").first()
    assert first.client_response_ms == 900
    assert first.focus_events == [{"type": "blur", "t": 10}, {"type": "focus", "t": 20}]
    assert first.assignment.shown_at is not None
    assert first.assignment.answered_at >= first.assignment.shown_at
    assert first.chosen_option == first.assignment.option_order[0]


def test_mturk_preview_allocates_nothing(client):
    study = make_worker_study(platform=Study.Platform.MTURK, n_practice=1)
    response = enter(client, study, {"assignmentId": "ASSIGNMENT_ID_NOT_AVAILABLE", "hitId": "3HIT0001"})
    assert response.status_code == 200
    assert b"data-preview" in response.content
    assert Participant.objects.count() == 0
    assert Assignment.objects.count() == 0
    assert sum(Item.objects.values_list("n_leased", flat=True)) == 0
    assert "frame-ancestors 'self' https://worker.mturk.com" in response["Content-Security-Policy"]
    assert "X-Frame-Options" not in response


def test_mturk_completion_posts_to_external_submit(client):
    study = make_worker_study(platform=Study.Platform.MTURK, trials_per_participant=2)
    token = token_from(enter(client, study, MTURK))
    consent_and_practice(client, study, token)
    answer_all(client, token)
    assert post(client, "complete", token).status_code == 302
    page = client.get(reverse("studies:worker-done", args=[token])).content.decode()
    assert 'action="https://workersandbox.mturk.com/mturk/externalSubmit"' in page
    assert 'name="assignmentId" value="3ASSIGNMENT0001"' in page
    assert f'name="completion_code" value="{completion_code_derive(study=study, participant_token=token)}"' in page


@pytest.mark.parametrize(
    ("name", "value"),
    [("turkSubmitTo", "https://evil.example.org"), ("turkSubmitTo", "http://www.mturk.com"),
     ("turkSubmitTo", "https://www.mturk.com.evil.org"), ("workerId", "=HYPERLINK(1)"), ("workerId", "")],
)
def test_mturk_bad_parameters_are_refused(client, name, value):
    study = make_worker_study(platform=Study.Platform.MTURK)
    response = enter(client, study, {**MTURK, name: value})
    assert response.status_code == 400
    assert name.encode() in response.content
    assert Participant.objects.count() == 0


def test_prolific_completion_redirects_with_code(client):
    study = make_worker_study(platform=Study.Platform.PROLIFIC, trials_per_participant=2,
                              prolific_completion_url="https://app.prolific.com/submissions/complete")
    token = token_from(enter(client, study, PROLIFIC))
    participant = Participant.objects.get(token=token)
    assert participant.platform_worker_id == PROLIFIC["PROLIFIC_PID"]
    assert participant.prolific_session_id == "sess0001"
    consent_and_practice(client, study, token)
    answer_all(client, token)
    response = post(client, "complete", token)
    assert response.status_code == 302
    assert response["Location"] == f"https://app.prolific.com/submissions/complete?cc={study.completion_code}"


def test_returning_worker_resumes_the_same_trial(client):
    study = make_worker_study(platform=Study.Platform.PROLIFIC, trials_per_participant=3)
    token = token_from(enter(client, study, PROLIFIC))
    consent_and_practice(client, study, token)
    client.get(reverse("studies:worker-home", args=[token]))
    first = current_assignment(token)
    again = enter(client, study, {**PROLIFIC, "SESSION_ID": "sess0002"})
    assert token_from(again) == token
    page = client.get(again["Location"])
    assert first.token.encode() in page.content
    assert Participant.objects.count() == 1  # the same browser (its resume cookie) continues, re-bound
    assert Participant.objects.get().prolific_session_id == "sess0002"


def test_link_participant_resumes_by_cookie(client):
    study = make_worker_study()
    token = token_from(enter(client, study))
    assert token_from(enter(client, study)) == token
    assert Participant.objects.count() == 1


def test_finished_worker_cannot_start_again(client):
    study = make_worker_study(platform=Study.Platform.PROLIFIC, trials_per_participant=1)
    token = token_from(enter(client, study, PROLIFIC))
    consent_and_practice(client, study, token)
    answer_all(client, token)
    post(client, "complete", token)
    same_session = enter(client, study, PROLIFIC)
    assert same_session.status_code == 302
    assert same_session["Location"].endswith(f"/p/{token}/done")
    other_session = enter(client, study, {**PROLIFIC, "SESSION_ID": "sess0099"})
    assert other_session.status_code == 403
    assert b"already completed" in other_session.content
    assert Assignment.objects.filter(participant__token=token).count() == 1


def test_excluded_worker_is_refused(client):
    study = make_worker_study(platform=Study.Platform.MTURK)
    ExcludedWorker.objects.create(study=study, platform_worker_id=MTURK["workerId"], reason="pilot")
    response = enter(client, study, MTURK)
    assert response.status_code == 403
    assert b"related study" in response.content
    assert Participant.objects.count() == 0


def test_declining_consent_records_nothing_else(client):
    study = make_worker_study(platform=Study.Platform.PROLIFIC)
    token = token_from(enter(client, study, PROLIFIC))
    response = post(client, "consent", token, {"decision": "decline", "consent_version": study.consent_version})
    assert response.status_code == 302
    page = client.get(reverse("studies:worker-home", args=[token]))
    assert b"data-declined" in page.content
    participant = Participant.objects.get(token=token)
    assert participant.status == Participant.Status.DECLINED
    assert participant.consent_version == ""
    assert Assignment.objects.count() == 0
    assert Response.objects.count() == 0
    assert enter(client, study, PROLIFIC).status_code == 403


def test_closed_study_and_wrong_platform_are_refused(client):
    closed = make_worker_study(status=Study.Status.READY)
    assert enter(client, closed).status_code == 403
    mturk = make_worker_study(platform=Study.Platform.MTURK)
    assert enter(client, mturk, PROLIFIC).status_code == 403
    assert enter(client, mturk).status_code == 403


def test_forged_and_foreign_tokens_are_rejected(client):
    study = make_worker_study(trials_per_participant=2)
    alice = token_from(enter(client, study))
    client.cookies.clear()
    bob = token_from(enter(client, study))
    assert alice != bob
    for token in (alice, bob):
        consent_and_practice(client, study, token)
        client.get(reverse("studies:worker-home", args=[token]))
    assert client.get("/p/not-a-real-token/").status_code == 404
    bobs = current_assignment(bob)
    # Bob's trial submitted under Alice's token (with Alice's valid form token): unknown trial.
    assert post(client, "answer", alice, {"assignment": bobs.token, "choice": "0"}).status_code == 404
    # Alice's form token used on Bob's URL, or none at all: forbidden.
    forged = client.post(reverse("studies:worker-answer", args=[bob]),
                         {"form_token": form_token_make(alice), "assignment": bobs.token, "choice": "0"})
    assert forged.status_code == 403
    missing = client.post(reverse("studies:worker-answer", args=[bob]), {"assignment": bobs.token, "choice": "0"})
    assert missing.status_code == 403
    cross_site = post(client, "answer", bob, {"assignment": bobs.token, "choice": "0"}, HTTP_ORIGIN="https://evil.example")
    assert cross_site.status_code == 403
    # Images of Bob's trial are not served under Alice's token.
    image = reverse("studies:worker-stimulus", args=[alice, bobs.token, "main"])
    assert client.get(image).status_code == 404
    own = client.get(reverse("studies:worker-stimulus", args=[bob, bobs.token, "main"]))
    assert own.status_code == 200
    assert own["Content-Type"] == "image/png"
    assert Response.objects.count() == 0


def test_double_submit_stores_one_response_and_shows_next_trial(client):
    study = make_worker_study(trials_per_participant=3, judgments_per_item=2)
    token = token_from(enter(client, study))
    consent_and_practice(client, study, token)
    client.get(reverse("studies:worker-home", args=[token]))
    first = current_assignment(token)
    data = {"assignment": first.token, "choice": "1"}
    one = post(client, "answer", token, data)
    two = post(client, "answer", token, {**data, "choice": "0"})
    assert one.status_code == two.status_code == 302
    assert Response.objects.filter(assignment=first).count() == 1
    assert Response.objects.get(assignment=first).chosen_option == first.option_order[1]
    item = Item.objects.get(pk=first.item_id)
    assert item.n_answered == 1
    page = client.get(two["Location"])
    nxt = current_assignment(token)
    assert nxt.pk != first.pk
    assert nxt.token.encode() in page.content


def test_completion_code_only_after_all_answers_committed(client):
    study = make_worker_study(trials_per_participant=2)
    token = token_from(enter(client, study))
    consent_and_practice(client, study, token)
    client.get(reverse("studies:worker-home", args=[token]))
    early = post(client, "complete", token)
    assert early.status_code == 302
    assert early["Location"].endswith(f"/p/{token}/")
    assert Participant.objects.get(token=token).status != Participant.Status.COMPLETED
    done_early = client.get(reverse("studies:worker-done", args=[token]))
    assert done_early.status_code == 302
    answer_all(client, token)
    assert post(client, "complete", token).status_code == 302
    participant = Participant.objects.get(token=token)
    assert participant.status == Participant.Status.COMPLETED
    assert participant.completed_at is not None
    assert Response.objects.filter(assignment__participant=participant).count() == 2


def test_questionnaire_comes_before_completion(client):
    questions = [{"name": "age", "label": "Age", "type": "number", "required": True}, "Any comments?"]
    study = make_worker_study(trials_per_participant=1, questionnaire=questions)
    token = token_from(enter(client, study))
    consent_and_practice(client, study, token)
    answer_all(client, token)
    page = client.get(reverse("studies:worker-home", args=[token]))
    assert b"data-questionnaire-submit" in page.content
    assert post(client, "questionnaire", token, {"age": "abc"}).status_code == 400
    assert post(client, "questionnaire", token, {"age": "31", "q2": "fine"}).status_code == 302
    participant = Participant.objects.get(token=token)
    assert participant.questionnaire["answers"] == {"age": 31.0, "q2": "fine"}
    assert b"data-finish" in client.get(reverse("studies:worker-home", args=[token])).content


def test_failed_practice_is_repeated_with_another_attempt(client):
    """A failed attempt is counted and followed by attempt 2 (the policy: tests/studies/test_practice_policy.py)."""
    study = make_worker_study(n_practice=2)
    token = token_from(enter(client, study))
    post(client, "consent", token, {"decision": "agree", "consent_version": study.consent_version})
    answers = {}
    for item in practice_draw(study=study, participant_token=token, attempt=1):
        choices = practice_choices(study=study, participant_token=token, attempt=1, item=item)
        answers[f"choice_{item.public_id}"] = str(1 - choices.option_order.index(item.correct_option))
    response = post(client, "practice", token, {**answers, "attempt": "1"})
    assert b'data-practice-result="failed"' in response.content
    participant = Participant.objects.get(token=token)
    assert not participant.practice_passed
    assert participant.practice_attempts_used == 1
    assert b"data-agree" not in client.get(reverse("studies:worker-home", args=[token])).content
    again = client.get(reverse("studies:worker-practice", args=[token]))
    assert again.status_code == 200
    assert b'data-practice-attempt="2"' in again.content


def test_trust_trial_scores_relative_to_model_a(client):
    study = make_worker_study(kind=Study.Kind.TRUST, trials_per_participant=4, n_main=8)
    token = token_from(enter(client, study))
    consent_and_practice(client, study, token)
    for _ in range(4):
        page = client.get(reverse("studies:worker-home", args=[token])).content.decode()
        assert "Robot A" in page
        assert "Robot B" in page
        assert "Both robots predicted:" in page
        assignment = current_assignment(token)
        post(client, "answer", token, {"assignment": assignment.token, "choice": "0", "comment": " A looks at the cat "})
        response = Response.objects.get(assignment=assignment)
        assert response.score_model_a == (2 if assignment.model_a_shown_left else -2)
        assert response.comment == "A looks at the cat"
        assert response.chosen_option is None


def test_only_worker_pages_are_frameable(client):
    study = make_worker_study()
    token = token_from(enter(client, study))
    page = client.get(reverse("studies:worker-home", args=[token]))
    assert "frame-ancestors" in page["Content-Security-Policy"]
    assert "X-Frame-Options" not in page
    admin = client.get("/admin/login/")
    assert admin["X-Frame-Options"] == "DENY"


def test_entry_is_rate_limited(client, settings):
    settings.XAISTUDY_RATE_LIMITS = {"entry": (2, 60)}
    study = make_worker_study()
    codes = [enter(client, study).status_code for _ in range(3)]
    assert codes == [302, 302, 429]


def test_submit_is_rate_limited(client, settings):
    settings.XAISTUDY_RATE_LIMITS = {"submit": (1, 60)}
    study = make_worker_study(trials_per_participant=3)
    token = token_from(enter(client, study))
    consent_and_practice(client, study, token)
    client.get(reverse("studies:worker-home", args=[token]))
    first = current_assignment(token)
    assert post(client, "answer", token, {"assignment": first.token, "choice": "0"}).status_code == 302
    client.get(reverse("studies:worker-home", args=[token]))
    second = current_assignment(token)
    limited = post(client, "answer", token, {"assignment": second.token, "choice": "0"})
    assert limited.status_code == 429
    assert limited["Retry-After"] == "60"
    assert Response.objects.count() == 1


@pytest.mark.parametrize("n_main", [4, 60])
def test_trial_get_and_post_query_budget(client, django_assert_max_num_queries, n_main):
    study = make_worker_study(n_main=n_main, n_catch=2, trials_per_participant=3, with_files=False)
    token = token_from(enter(client, study))
    consent_and_practice(client, study, token)
    home = reverse("studies:worker-home", args=[token])
    with django_assert_max_num_queries(13):  # first view: allocates the trial and one ahead (a catch or a main item: 2 queries either way)
        client.get(home)
    with django_assert_max_num_queries(6):  # a reload: nothing to allocate
        client.get(home)
    assignment = current_assignment(token)
    with django_assert_max_num_queries(8):  # lookup, lock, assignment, flip, counters, insert (+ savepoint pair)
        post(client, "answer", token, {"assignment": assignment.token, "choice": "0"})
