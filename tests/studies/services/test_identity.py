"""Identity (issue #11): a public worker id yields nothing; exclusion lists, groups, codes, invitations.

The takeover scenario over real HTTP on PostgreSQL is ``tests/integration/test_identity_http.py``;
these are the same rules through Django's test client, plus the cases around them.
"""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from studies.fixtures.builders import make_worker_study
from studies.models import ExcludedWorker, ExclusionGroup, Participant, Study
from studies.services.audit import study_audit
from studies.services.exclusion import exclusion_group_import, platform_id_normalize
from studies.services.invitations import invitation_make
from studies.services.participation import completion_code_derive, completion_code_matches
from tests.studies.web.test_worker_flow import (
    MTURK,
    PROLIFIC,
    answer_all,
    consent_and_practice,
    enter,
    post,
    token_from,
)

pytestmark = pytest.mark.django_db


def _complete(client: Client, study: Study, params: dict | None = None) -> str:
    token = token_from(enter(client, study, params))
    consent_and_practice(client, study, token)
    answer_all(client, token)
    assert post(client, "complete", token).status_code == 302
    return token


@pytest.mark.parametrize(
    ("platform", "victim", "attacker"),
    [
        (Study.Platform.MTURK, MTURK, {**MTURK, "assignmentId": "3ATTACKER0001", "workerId": "a1worker"}),
        (Study.Platform.PROLIFIC, PROLIFIC, {**PROLIFIC, "SESSION_ID": "attackersession"}),
    ],
)
def test_public_worker_id_yields_nothing_of_the_victim(platform, victim, attacker):
    study = make_worker_study(platform=platform, trials_per_participant=2, judgments_per_item=5)
    victim_client, attacker_client = Client(), Client()
    victim_token = token_from(enter(victim_client, study, victim))
    consent_and_practice(victim_client, study, victim_token)
    before = Participant.objects.get(token=victim_token)

    entered = enter(attacker_client, study, attacker)
    assert entered.status_code == 302
    attacker_token = token_from(entered)
    assert attacker_token != victim_token
    assert victim_token.encode() not in entered.content
    # Declining in the victim's name declines only the attacker's own participant.
    post(attacker_client, "consent", attacker_token, {"decision": "decline", "consent_version": study.consent_version})
    after = Participant.objects.get(token=victim_token)
    assert after.status == before.status == Participant.Status.IN_PROGRESS
    for name in ("mturk_assignment_id", "mturk_hit_id", "mturk_submit_to", "prolific_session_id", "session_key"):
        assert getattr(after, name) == getattr(before, name), name

    answer_all(victim_client, victim_token)
    assert post(victim_client, "complete", victim_token).status_code == 302
    victim_row = Participant.objects.get(token=victim_token)
    assert victim_row.status == Participant.Status.COMPLETED
    if platform == Study.Platform.MTURK:
        page = victim_client.get(reverse("studies:worker-done", args=[victim_token])).content.decode()
        assert 'name="assignmentId" value="3ASSIGNMENT0001"' in page
    # The attacker's own (declined) participant cannot enter again; the victim's is untouched.
    assert enter(attacker_client, study, attacker).status_code == 403
    assert Participant.objects.get(token=victim_token).status == Participant.Status.COMPLETED


def test_attacker_first_does_not_lock_the_worker_out():
    study = make_worker_study(platform=Study.Platform.MTURK, trials_per_participant=2)
    attacker = Client()
    token = token_from(enter(attacker, study, {**MTURK, "assignmentId": "3FORGED"}))
    post(attacker, "consent", token, {"decision": "decline", "consent_version": study.consent_version})
    victim = Client()
    victim_token = _complete(victim, study, MTURK)
    assert victim_token != token
    assert Participant.objects.get(token=victim_token).mturk_assignment_id == MTURK["assignmentId"]


def test_same_browser_continues_after_returning_the_hit_and_is_rebound():
    study = make_worker_study(platform=Study.Platform.MTURK, trials_per_participant=3)
    client = Client()
    token = token_from(enter(client, study, MTURK))
    consent_and_practice(client, study, token)
    again = enter(client, study, {**MTURK, "assignmentId": "3ASSIGNMENT0002"})
    assert token_from(again) == token
    participant = Participant.objects.get(token=token)
    assert participant.mturk_assignment_id == participant.session_key == "3ASSIGNMENT0002"
    # Another browser with the old assignment id is somebody else now: a new participant.
    other = token_from(enter(Client(), study, MTURK))
    assert other != token


def test_an_assignment_cannot_be_claimed_under_another_worker_id():
    study = make_worker_study(platform=Study.Platform.MTURK)
    enter(Client(), study, MTURK)
    response = enter(Client(), study, {**MTURK, "workerId": "A2OTHER"})
    assert response.status_code == 400
    assert Participant.objects.count() == 1


def test_ids_are_normalised_so_case_cannot_dodge_a_repeat():
    study = make_worker_study(platform=Study.Platform.MTURK, trials_per_participant=1)
    _complete(Client(), study, MTURK)
    lower = {**MTURK, "workerId": " a1worker ", "assignmentId": "3ASSIGNMENT0009"}
    response = enter(Client(), study, lower)
    assert response.status_code == 403
    assert b"already completed" in response.content
    assert platform_id_normalize(platform="prolific", worker_id=" 5F1A ") == "5f1a"


@pytest.mark.parametrize("listed", ["a1worker", "A1WORKER", " A1Worker "])
def test_case_variant_exclusion(listed):
    study = make_worker_study(platform=Study.Platform.MTURK)
    ExcludedWorker.objects.create(study=study, platform_worker_id=listed)
    for variant in ("A1WORKER", "a1worker", "A1worker"):
        response = enter(Client(), study, {**MTURK, "workerId": variant})
        assert response.status_code == 403, variant
        assert b"related study" in response.content
    assert Participant.objects.count() == 0


def test_exclusion_group_across_two_studies():
    group = ExclusionGroup.objects.create(name="gradcam-2026")
    first = make_worker_study(platform=Study.Platform.PROLIFIC, trials_per_participant=1)
    second = make_worker_study(platform=Study.Platform.PROLIFIC, trials_per_participant=1)
    Study.objects.filter(pk__in=[first.pk, second.pk]).update(exclusion_group=group)
    first.refresh_from_db()
    second.refresh_from_db()
    # Only entering the first study is not taking part in it (someone else may have used the id).
    token = token_from(enter(Client(), first, PROLIFIC))
    assert enter(Client(), second, {**PROLIFIC, "SESSION_ID": "s2a"}).status_code == 302
    Participant.objects.filter(study=second).delete()
    client = Client()
    consent_and_practice(client, first, token)
    answer_all(client, token)
    assert post(client, "complete", token).status_code == 302
    refused = enter(Client(), second, {**PROLIFIC, "PROLIFIC_PID": PROLIFIC["PROLIFIC_PID"].upper(), "SESSION_ID": "s2b"})
    assert refused.status_code == 403
    assert b"related study" in refused.content
    # A study outside the group is not affected.
    assert enter(Client(), make_worker_study(platform=Study.Platform.PROLIFIC), PROLIFIC).status_code == 302


def test_exclusion_group_list_imported_from_csv():
    group = ExclusionGroup.objects.create(name="pilot-pool")
    study = make_worker_study(platform=Study.Platform.MTURK)
    Study.objects.filter(pk=study.pk).update(exclusion_group=group)
    bad = exclusion_group_import(group=group, csv_text="WorkerId,HITId\nA1WORKER,h\n=cmd|x,h\n", platform="mturk")
    assert bad.added == 0
    assert bad.errors
    assert "line 3" in bad.errors[0]
    result = exclusion_group_import(group=group, csv_text="WorkerId,HITId\na1worker,h\nA9OTHER,h\nA1WORKER,h\n", platform="mturk")
    assert (result.added, result.already, result.errors) == (2, 0, [])
    assert exclusion_group_import(group=group, csv_text="A9OTHER\n", platform="mturk").already == 1
    assert enter(Client(), study, MTURK).status_code == 403
    assert enter(Client(), study, {**MTURK, "workerId": "A2FREE", "assignmentId": "3X"}).status_code == 302


def test_two_completers_get_different_codes_and_a_code_is_refused_for_another():
    study = make_worker_study(trials_per_participant=2, judgments_per_item=4)
    first, second = _complete(Client(), study), _complete(Client(), study)
    a, b = Participant.objects.get(token=first), Participant.objects.get(token=second)
    assert a.completion_code
    assert b.completion_code
    assert a.completion_code != b.completion_code
    assert a.completion_code == completion_code_derive(study=study, participant_token=first)
    assert completion_code_matches(participant=a, code=a.completion_code.lower())
    assert not completion_code_matches(participant=b, code=a.completion_code)
    assert not completion_code_matches(participant=a, code=study.completion_code)
    assert study_audit(study_id=study.pk, check_files=False).ok
    Participant.objects.filter(pk=b.pk).update(completion_code=a.completion_code)
    problems = study_audit(study_id=study.pk, check_files=False).problems
    assert [p.code for p in problems] == ["codes"]


def test_check_codes_command_reads_mturk_results(tmp_path):
    study = make_worker_study(platform=Study.Platform.MTURK, trials_per_participant=1, judgments_per_item=4)
    first = _complete(Client(), study, MTURK)
    second_params = {**MTURK, "workerId": "A2SECOND", "assignmentId": "3ASSIGNMENT0002"}
    _complete(Client(), study, second_params)
    code = Participant.objects.get(token=first).completion_code
    results = tmp_path / "Batch_results.csv"
    results.write_text(
        "AssignmentId,WorkerId,Answer.completion_code\n"
        f"3ASSIGNMENT0001,A1WORKER,{code}\n3ASSIGNMENT0002,A2SECOND,{code}\n3NOBODY,A3,{code}\n"
    )
    out = io.StringIO()
    with pytest.raises(SystemExit):
        call_command("check_codes", study.slug, str(results), stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[:3] == ["line 2\t3ASSIGNMENT0001\tok", "line 3\t3ASSIGNMENT0002\twrong_code", "line 4\t3NOBODY\tunknown"]


def test_invitations_are_signed_and_single_use():
    study = make_worker_study()
    Study.objects.filter(pk=study.pk).update(require_invitation=True)
    study.refresh_from_db()
    assert enter(Client(), study).status_code == 403
    assert enter(Client(), study, {"inv": "abc:forged"}).status_code == 403
    other = make_worker_study()
    assert enter(Client(), study, {"inv": invitation_make(study=other)}).status_code == 403
    invitation = invitation_make(study=study)
    browser = Client()
    token = token_from(enter(browser, study, {"inv": invitation}))
    assert token_from(enter(browser, study, {"inv": invitation})) == token  # the same browser resumes
    refused = enter(Client(), study, {"inv": invitation})
    assert refused.status_code == 403
    assert b"invitation" in refused.content
    assert Participant.objects.filter(study=study).count() == 1


def test_invitations_command_prints_links():
    study = make_worker_study()
    out = io.StringIO()
    call_command("invitations", study.slug, "--count", "3", "--base-url", "https://x.example.org/", stdout=out, stderr=io.StringIO())
    links = out.getvalue().split()
    assert len(set(links)) == 3
    assert all(link.startswith(f"https://x.example.org/s/{study.slug}/?inv=") for link in links)


def test_unfinished_participants_per_client_are_capped_per_study():
    study = make_worker_study(judgments_per_item=20, trials_per_participant=1)
    Study.objects.filter(pk=study.pk).update(entries_per_client=2)
    study.refresh_from_db()
    finisher = Client()
    first = token_from(enter(finisher, study))
    assert enter(Client(), study).status_code == 302
    third = enter(Client(), study)
    assert third.status_code == 403
    assert b"network" in third.content
    assert enter(Client(REMOTE_ADDR="10.0.0.9"), study).status_code == 302
    assert token_from(enter(finisher, study)) == first  # resuming is not a new entry
    # A participant who completes no longer counts: a lab's next person can start.
    consent_and_practice(finisher, study, first)
    answer_all(finisher, first)
    assert post(finisher, "complete", first).status_code == 302
    assert enter(Client(), study).status_code == 302
    # Another study keeps its own count, and the stored key names no address.
    assert enter(Client(), make_worker_study()).status_code == 302
    assert "127.0.0.1" not in set(Participant.objects.values_list("entry_client", flat=True))
