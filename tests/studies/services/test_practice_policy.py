"""Issue #12, item 3: the practice policy.

Prolific's rule for comprehension checks: two attempts, then the participant is asked to return the
submission (never rejected). Each attempt is another draw from the study's pool of practice items,
the feedback of a failed attempt shows the right answers on both study kinds, and after
``study.practice_attempts`` failed attempts the participant is ``screened_out``: a polite end with the
platform's instruction, no trials, no completion code, listed apart in the payment lists.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse

from studies.fixtures.builders import make_worker_study
from studies.lib.choices import practice_choices
from studies.models import Assignment, Item, Participant, Study
from studies.services.audit import study_audit
from studies.services.exports import exclusion_flags_compute, export_rows, payment_decisions
from studies.services.participation import (
    ScreenedOut,
    StepNotAllowed,
    _practice_grade_locked,
    practice_draw,
    practice_example,
    practice_grade,
    practice_items,
)
from tests.studies.web.test_worker_flow import MTURK, PROLIFIC, enter, post, token_from

pytestmark = pytest.mark.django_db


def pool_study(*, kind: str = Study.Kind.CLASS_DISCRIMINATION, pool: int = 5, per_attempt: int = 2, attempts: int = 2,
               platform: str = Study.Platform.LINK) -> Study:  # fmt: skip
    """A live study with ``pool`` practice items, ``per_attempt`` shown per attempt; trust items get a right robot."""
    study = make_worker_study(kind=kind, n_main=6, n_practice=pool, platform=platform, trials_per_participant=2)
    study.practice_trials, study.practice_attempts = per_attempt, attempts
    study.save(update_fields=["practice_trials", "practice_attempts"])
    if kind == Study.Kind.TRUST:
        for index, item in enumerate(Item.objects.filter(study=study, role=Item.Role.PRACTICE).order_by("id")):
            Item.objects.filter(pk=item.pk).update(correct_option=index % 2)
    return study


def right_choice(study: Study, token: str, attempt: int, item: Item) -> int:
    choices = practice_choices(study=study, participant_token=token, attempt=attempt, item=item)
    if study.kind == Study.Kind.TRUST:
        a_left = choices.model_a_shown_left is not False
        return 0 if (item.correct_option == 0) == a_left else 4  # "Robot A/B is clearly more reasonable"
    return choices.option_order.index(item.correct_option)


def wrong_choice(study: Study, token: str, attempt: int, item: Item) -> int:
    return 4 - right_choice(study, token, attempt, item) if study.kind == Study.Kind.TRUST else 1 - right_choice(
        study, token, attempt, item)  # fmt: skip


def consented(client: Client, study: Study, params: dict | None = None) -> str:
    token = token_from(enter(client, study, params))
    assert post(client, "consent", token, {"decision": "agree", "consent_version": study.consent_version}).status_code == 302
    return token


def answer_form(study: Study, token: str, attempt: int, *, right: bool) -> dict[str, str]:
    pick = right_choice if right else wrong_choice
    items = practice_draw(study=study, participant_token=token, attempt=attempt)
    return {"attempt": str(attempt), **{f"choice_{i.public_id}": str(pick(study, token, attempt, i)) for i in items}}


# --- the draw --------------------------------------------------------------------------------


def test_each_attempt_draws_other_items_and_skips_the_worked_example():
    study = pool_study(pool=5, per_attempt=2, attempts=2)
    example = practice_example(study=study)
    for k in range(20):
        token = f"draw-worker-{k}"
        first = practice_draw(study=study, participant_token=token, attempt=1)
        second = practice_draw(study=study, participant_token=token, attempt=2)
        assert len(first) == len(second) == 2
        assert not {i.pk for i in first} & {i.pk for i in second}  # a retry shows other items
        assert example.pk not in {i.pk for i in first + second}  # 4 items besides the example suffice
        # Re-derivable from (participant, attempt): the same draw every time.
        assert [i.pk for i in practice_draw(study=study, participant_token=token, attempt=2)] == [i.pk for i in second]
    draws = {tuple(i.pk for i in practice_draw(study=study, participant_token=f"w{k}", attempt=1)) for k in range(20)}
    assert len(draws) > 3  # participants get different draws


def test_a_pool_without_spare_items_uses_the_example_then_reuses_with_fresh_orders():
    study = pool_study(pool=3, per_attempt=2, attempts=2)
    example = practice_example(study=study)
    first = practice_draw(study=study, participant_token="small", attempt=1)
    second = practice_draw(study=study, participant_token="small", attempt=2)
    assert example.pk not in {i.pk for i in first}  # the two items that are not the example
    assert example.pk in {i.pk for i in second}  # then the example, then one item of attempt 1
    assert len({i.pk for i in first} & {i.pk for i in second}) == 1
    # An item shown again gets a fresh option order: across participants, attempt 2's order is
    # independent of attempt 1's (about half differ for two options).
    item = practice_items(study=study)[1]
    same = sum(
        practice_choices(study=study, participant_token=f"p{k}", attempt=1, item=item).option_order
        == practice_choices(study=study, participant_token=f"p{k}", attempt=2, item=item).option_order
        for k in range(200)
    )
    assert 60 < same < 140


def test_a_one_item_pool_repeats_the_item(client):
    study = pool_study(pool=1, per_attempt=2, attempts=3)
    draws = [practice_draw(study=study, participant_token="one", attempt=k) for k in (1, 2, 3)]
    assert [[i.pk for i in d] for d in draws] == [[draws[0][0].pk]] * 3
    token = consented(client, study)
    feedback = post(client, "practice", token, answer_form(study, token, 1, right=False)).content.decode()
    assert "2 more attempts." in feedback
    assert "different questions" not in feedback


# --- the HTML flow ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [Study.Kind.CLASS_DISCRIMINATION, Study.Kind.TRUST])
def test_two_failed_attempts_show_the_answers_then_screen_out(client, kind):
    study = pool_study(kind=kind, platform=Study.Platform.PROLIFIC)
    token = consented(client, study, PROLIFIC)
    page = client.get(reverse("studies:worker-practice", args=[token])).content.decode()
    assert "Attempt 1 of 2" in page
    first = practice_draw(study=study, participant_token=token, attempt=1)
    assert all(f"choice_{i.public_id}" in page for i in first)

    feedback = post(client, "practice", token, answer_form(study, token, 1, right=False))
    body = feedback.content.decode()
    assert 'data-practice-result="failed"' in body
    assert "1 more attempt, with different questions" in body
    for item in first:  # the right answer is named for every item
        if kind == Study.Kind.TRUST:
            choices = practice_choices(study=study, participant_token=token, attempt=1, item=item)
            robot = "Robot A" if (item.correct_option == 0) == (choices.model_a_shown_left is not False) else "Robot B"
            assert f"<b data-right-answer>{robot} (" in body
        else:
            assert f"<b data-right-answer>{item.options[item.correct_option]}</b>" in body
    assert Participant.objects.get(token=token).practice_attempts_used == 1

    page = client.get(reverse("studies:worker-practice", args=[token])).content.decode()
    assert "Attempt 2 of 2" in page
    second = practice_draw(study=study, participant_token=token, attempt=2)
    assert not {i.pk for i in first} & {i.pk for i in second}
    # The previous attempt's answers do not answer this one: its items are not on the page.
    assert not any(f"choice_{i.public_id}" in page for i in first)
    stale = post(client, "practice", token, answer_form(study, token, 1, right=True))
    assert stale.status_code == 302  # attempt 1 was graded already: nothing graded
    assert Participant.objects.get(token=token).practice_attempts_used == 1

    end = post(client, "practice", token, answer_form(study, token, 2, right=False))
    text = end.content.decode()
    assert "data-screened-out" in text
    assert "Please return the study on Prolific" in text
    participant = Participant.objects.get(token=token)
    assert participant.status == Participant.Status.SCREENED_OUT
    assert (participant.practice_attempts_used, participant.practice_passed, participant.completion_code) == (2, False, "")

    # The third attempt is refused with the same end page; nothing leads to trials or a code.
    third = client.get(reverse("studies:worker-practice", args=[token]))
    assert b"data-screened-out" in third.content
    assert b"data-practice-form" not in third.content
    assert b"data-screened-out" in post(client, "practice", token, answer_form(study, token, 3, right=True)).content
    assert b"data-screened-out" in client.get(reverse("studies:worker-home", args=[token])).content
    assert post(client, "complete", token).status_code == 302
    assert client.get(reverse("studies:worker-done", args=[token])).status_code == 302
    assert not Assignment.objects.filter(participant=participant).exists()
    assert Participant.objects.get(token=token).status == Participant.Status.SCREENED_OUT
    # Entering again in the same session (or from the same browser) shows the same end page.
    again = Client()
    again_token = token_from(enter(again, study, PROLIFIC))
    assert again_token == token
    assert b"data-screened-out" in again.get(reverse("studies:worker-home", args=[token])).content
    assert Participant.objects.filter(study=study).count() == 1


def test_mturk_worker_is_asked_to_return_the_hit(client):
    study = pool_study(platform=Study.Platform.MTURK, attempts=1)
    token = consented(client, study, MTURK)
    end = post(client, "practice", token, answer_form(study, token, 1, right=False)).content.decode()
    assert "data-screened-out" in end
    assert "Please return the HIT" in end
    resumed = client.get(reverse("studies:worker-entry", args=[study.slug]), MTURK)  # same browser, same HIT
    assert resumed.status_code == 302
    assert b"Please return the HIT" in client.get(resumed["Location"]).content


def test_passing_on_the_second_attempt_starts_the_trials(client):
    study = pool_study()
    token = consented(client, study)
    post(client, "practice", token, answer_form(study, token, 1, right=False))
    passed = post(client, "practice", token, answer_form(study, token, 2, right=True))
    assert b'data-practice-result="passed"' in passed.content
    participant = Participant.objects.get(token=token)
    assert participant.status == Participant.Status.IN_PROGRESS
    assert participant.practice_passed
    assert participant.practice_attempts_used == 2
    assert b"data-trial-form" in client.get(reverse("studies:worker-home", args=[token])).content
    # Practice is over: its page sends the worker to the trials, a late grading is refused.
    assert client.get(reverse("studies:worker-practice", args=[token])).status_code == 302
    with pytest.raises(StepNotAllowed):
        practice_grade(participant=participant, answers={}, attempt=3)


def test_practice_images_are_those_of_the_attempt(client):
    study = pool_study(kind=Study.Kind.TRUST)
    token = consented(client, study)
    first = practice_draw(study=study, participant_token=token, attempt=1)
    second = practice_draw(study=study, participant_token=token, attempt=2)
    url = reverse("studies:worker-practice-stimulus", args=[token, first[0].public_id, "left"])
    assert client.get(url).status_code == 200
    assert client.get(url + "?attempt=1").status_code == 200
    assert client.get(url + "?attempt=2").status_code == 404  # not reached yet, and not in that draw
    later = reverse("studies:worker-practice-stimulus", args=[token, second[0].public_id, "left"])
    assert client.get(later).status_code == 404  # attempt 2's items before attempt 2
    post(client, "practice", token, answer_form(study, token, 1, right=False))
    assert client.get(later).status_code == 200
    assert client.get(url + "?attempt=1").status_code == 200  # the feedback of attempt 1 still shows its images


# --- the API ---------------------------------------------------------------------------------


class Api:
    def __init__(self) -> None:
        self.client = Client()
        self.token = ""

    def call(self, method: str, path: str, body: dict | None = None):
        data = json.dumps(body) if body is not None else None
        return getattr(self.client, method.lower())(
            path, data=data, content_type="application/json", HTTP_X_PARTICIPANT_TOKEN=self.token
        )


def test_api_two_attempts_with_different_items_then_screened_out():
    from tests.studies.web.test_api import API_SCHEMA
    from tests.studies.web.test_api import Api as SchemaApi

    assert API_SCHEMA  # responses below are validated against the OpenAPI schema
    study = pool_study(platform=Study.Platform.PROLIFIC)
    api = SchemaApi()
    api.token = api.call("POST", f"/api/v1/studies/{study.slug}/enter", PROLIFIC,
                         template="/api/v1/studies/{slug}/enter").json()["participant_token"]  # fmt: skip
    api.call("POST", "/api/v1/participant/consent", {"agree": True, "consent_version": study.consent_version})
    first = api.call("GET", "/api/v1/participant/practice").json()
    assert (first["attempt"], first["attempts"]) == (1, 2)
    items = {t["token"]: Item.objects.get(public_id=t["token"]) for t in first["trials"]}

    def wrong_answers(trials: list[dict]) -> dict[str, int]:
        right = {t["token"]: Item.objects.get(public_id=t["token"]) for t in trials}
        return {t["token"]: 1 - t["options"].index(right[t["token"]].options[right[t["token"]].correct_option])
                for t in trials}  # fmt: skip

    wrong = wrong_answers(first["trials"])
    graded = api.call("POST", "/api/v1/participant/practice", {"answers": wrong, "attempt": 1}).json()
    assert (graded["passed"], graded["attempts_left"], graded["screened_out"]) == (False, 1, False)
    assert {f["token"]: f["right_answer"] for f in graded["feedback"]} == {
        token: item.options[item.correct_option] for token, item in items.items()
    }
    # What a script learnt from that feedback does not answer attempt 2: other items.
    learned = {f["token"]: f["correct_choice"] for f in graded["feedback"]}
    replay = api.call("POST", "/api/v1/participant/practice", {"answers": learned})
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid"
    assert api.call("POST", "/api/v1/participant/practice", {"answers": learned, "attempt": 1}).status_code == 409
    second = api.call("GET", "/api/v1/participant/practice").json()
    assert second["attempt"] == 2
    assert not {t["token"] for t in second["trials"]} & set(items)
    last = api.call("POST", "/api/v1/participant/practice",
                    {"answers": wrong_answers(second["trials"]), "attempt": 2}).json()  # fmt: skip
    assert last["screened_out"] is True
    assert last["attempts_left"] == 0
    assert last["state"]["stage"] == "screened_out"
    assert "return the study on Prolific" in last["state"]["message"]
    third = api.call("GET", "/api/v1/participant/practice")
    assert third.status_code == 409
    assert third.json()["error"] == "screened_out"
    assert api.call("POST", "/api/v1/participant/practice", {"answers": {}}).json()["error"] == "screened_out"
    assert api.call("GET", "/api/v1/participant/trial").json()["trial"] is None
    assert api.call("POST", "/api/v1/participant/complete").status_code == 409
    state = api.call("GET", "/api/v1/participant").json()["state"]
    assert state["stage"] == "screened_out"
    assert "completion" not in state


def test_api_trust_feedback_names_the_right_robot():
    study = pool_study(kind=Study.Kind.TRUST)
    api = Api()
    api.token = api.call("POST", f"/api/v1/studies/{study.slug}/enter", {}).json()["participant_token"]
    api.call("POST", "/api/v1/participant/consent", {"agree": True, "consent_version": study.consent_version})
    trials = api.call("GET", "/api/v1/participant/practice").json()["trials"]
    graded = api.call("POST", "/api/v1/participant/practice", {"answers": {t["token"]: 2 for t in trials}}).json()
    assert graded["passed"] is False  # "equally reasonable" is wrong where one robot is right
    for fb in graded["feedback"]:
        item = Item.objects.get(public_id=fb["token"])
        choices = practice_choices(study=study, participant_token=api.token, attempt=1, item=item)
        robot = "A" if (item.correct_option == 0) == (choices.model_a_shown_left is not False) else "B"
        assert (fb["correct"], fb["correct_robot"], fb["right_answer"]) == (False, robot, f"Robot {robot}")


# --- the service, payments, audit ------------------------------------------------------------


def test_screened_out_participants_are_listed_apart_in_the_payment_lists(client):
    study = pool_study(platform=Study.Platform.MTURK, attempts=1)
    screened_token = consented(client, study, MTURK)
    post(client, "practice", screened_token, answer_form(study, screened_token, 1, right=False))
    other = Client()
    other_params = {**MTURK, "assignmentId": "3ASSIGNMENT0002", "workerId": "A2WORKER"}
    consented(other, study, other_params)
    flags = exclusion_flags_compute(study=study)
    decisions = {d.participant_id: d for d in payment_decisions(study=study, flags=flags, bonus=Decimal("0"))}
    screened = Participant.objects.get(token=screened_token)
    assert decisions[screened.pk].action == "screened_out"
    assert decisions[screened.pk].reason.startswith("screened out by the practice (1 failed attempt)")
    header, rows = export_rows(study=study, kind="payments-mturk")
    table = [dict(zip(header, row, strict=True)) for row in rows]
    assert table[-1]["AssignmentId"] == screened.mturk_assignment_id  # listed last, apart
    assert (table[-1]["Approve"], table[-1]["Reject"], table[-1]["Review"]) == ("", "", "")
    assert table[-1]["ScreenedOut"].startswith("screened out by the practice")
    assert all(row["ScreenedOut"] == "" for row in table[:-1])
    tidy_header, tidy = export_rows(study=study, kind="tidy")
    assert list(tidy) == []  # no responses: the results and the tidy export have nothing of them
    assert study_audit(study_id=study.pk, check_files=False).ok


def test_prolific_payment_action_is_screened_out(client):
    study = pool_study(platform=Study.Platform.PROLIFIC, attempts=1)
    token = consented(client, study, PROLIFIC)
    post(client, "practice", token, answer_form(study, token, 1, right=False))
    header, rows = export_rows(study=study, kind="payments-prolific")
    (row,) = [dict(zip(header, r, strict=True)) for r in rows]
    assert row["action"] == "SCREENED_OUT"
    assert "asked to return the study" in row["reason"]


def test_a_completer_screened_out_in_another_session_is_left_for_review():
    study = pool_study(platform=Study.Platform.MTURK)
    common = {"study": study, "platform": "mturk", "platform_worker_id": "ASAMEWORKER", "worker_hash": "h"}
    screened = Participant.objects.create(**common, session_key="S1", status=Participant.Status.SCREENED_OUT,
                                          practice_attempts_used=2)  # fmt: skip
    completed = Participant.objects.create(**common, session_key="S2", status=Participant.Status.COMPLETED)
    decisions = {d.participant_id: d for d in payment_decisions(study=study, flags=exclusion_flags_compute(study=study))}
    assert decisions[screened.pk].action == "screened_out"
    assert decisions[completed.pk].action == "review"
    assert "another session" in decisions[completed.pk].reason


def test_grading_is_counted_once_and_the_limit_holds():
    study = pool_study(attempts=3)
    participant = Participant.objects.create(study=study, platform="link", platform_worker_id="anon1", session_key="k1",
                                             worker_hash="h", status=Participant.Status.CONSENTED)  # fmt: skip
    participant.study = study
    token = participant.token

    def wrong(attempt: int) -> dict[str, int]:
        return {i.public_id: wrong_choice(study, token, attempt, i)
                for i in practice_draw(study=study, participant_token=token, attempt=attempt)}  # fmt: skip

    result = practice_grade(participant=participant, answers=wrong(1), attempt=1)
    assert (result.attempt, result.attempts, result.attempts_left, result.screened_out) == (1, 3, 2, False)
    with pytest.raises(StepNotAllowed):  # the same attempt again (a double submit): nothing is graded
        practice_grade(participant=participant, answers=wrong(1), attempt=1)
    # Two submits that both read the row before either wrote (where row locks do not exist):
    # the conditional update on the counter lets only the first one count.
    stale = Participant.objects.select_related("study").get(pk=participant.pk)
    stale.practice_attempts_used = 0
    with pytest.raises(StepNotAllowed, match="graded already"):
        _practice_grade_locked(stale, answers=wrong(1), attempt=None)
    assert Participant.objects.get(pk=participant.pk).practice_attempts_used == 1
    # The researcher lowers the limit to 1 while the participant is between attempts: out of attempts.
    Study.objects.filter(pk=study.pk).update(practice_attempts=1)
    study.refresh_from_db()
    with pytest.raises(ScreenedOut) as refused:
        practice_grade(participant=participant, answers=wrong(2))
    assert "in the 1 attempt this study allows" in str(refused.value)
    assert Participant.objects.get(pk=participant.pk).status == Participant.Status.SCREENED_OUT


def test_audit_names_a_screened_out_participant_with_trials():
    study = pool_study()
    participant = Participant.objects.create(study=study, platform="link", platform_worker_id="anon1", session_key="k1",
                                             worker_hash="h", status=Participant.Status.SCREENED_OUT,
                                             practice_attempts_used=2)  # fmt: skip
    assert study_audit(study_id=study.pk, check_files=False).ok
    item = Item.objects.filter(study=study, role=Item.Role.MAIN).first()
    Assignment.objects.create(participant=participant, item=item, position=0, option_order=[0, 0],
                              expires_at="2030-01-01T00:00:00Z")  # fmt: skip
    codes = {p.code for p in study_audit(study_id=study.pk, check_files=False).problems}
    assert {"screened", "choices"} <= codes


def test_a_row_with_zero_attempts_still_gives_one():
    study = pool_study()
    Study.objects.filter(pk=study.pk).update(practice_attempts=0)  # bypassing the form's minimum of 1
    study.refresh_from_db()
    participant = Participant.objects.create(study=study, platform="link", platform_worker_id="anon1", session_key="k1",
                                             worker_hash="h", status=Participant.Status.CONSENTED)  # fmt: skip
    participant.study = study
    answers = {i.public_id: right_choice(study, participant.token, 1, i)
               for i in practice_draw(study=study, participant_token=participant.token, attempt=1)}  # fmt: skip
    result = practice_grade(participant=participant, answers=answers, attempt=1)
    assert result.passed
    assert result.attempts == 1
