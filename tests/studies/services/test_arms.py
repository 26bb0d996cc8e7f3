"""Between-subject arms (issue 16, item 1): validation, balanced assignment at entry, allocation by arm,
the export column, the audit."""

from __future__ import annotations

import io
import random

import pandas as pd
import pytest
from django.db.models import F

from studies.fixtures.builders import make_worker_study
from studies.lib.arms import arm_methods, arm_pick, arms_errors
from studies.models import Assignment, Item, Participant, Study
from studies.selectors.allocation import arm_counts, planned_trials
from studies.services.allocation import trial_lease
from studies.services.audit import study_audit
from studies.services.exports import csv_lines, export_rows
from studies.services.participation import PlatformIdentity, participant_enter
from studies.services.responses import response_record
from studies.services.study_checks import study_config_errors

pytestmark = pytest.mark.django_db

METHODS = ["gradcam", "rise", "lime"]
ARMS = [{"name": m, "methods": [m]} for m in METHODS]


def _arm_study(*, n_main: int = 12, arms: list | None = None, trials: int = 3, quota: int = 3) -> Study:
    """A live study whose main items cycle through :data:`METHODS`, with ``arms`` (default: one arm per method)."""
    study = make_worker_study(n_main=n_main, n_practice=0, judgments_per_item=quota, trials_per_participant=trials,
                              with_files=False)  # fmt: skip
    for k, item in enumerate(Item.objects.filter(study=study, role=Item.Role.MAIN).order_by("id")):
        Item.objects.filter(pk=item.pk).update(method=METHODS[k % len(METHODS)])
    Study.objects.filter(pk=study.pk).update(methods=METHODS, arms=ARMS if arms is None else arms)
    study.refresh_from_db()
    return study


def _enter(study: Study, k: int) -> Participant:
    identity = PlatformIdentity(platform="prolific", worker_id=f"{k:024x}", prolific_study_id="s" * 24,
                                prolific_session_id=f"{k:024d}")  # fmt: skip
    return participant_enter(study=study, identity=identity).participant


def _start(participant: Participant) -> Participant:
    Participant.objects.filter(pk=participant.pk).update(status=Participant.Status.IN_PROGRESS, practice_passed=True)
    participant.refresh_from_db()
    return participant


def _leases(participant: Participant) -> list[Assignment]:
    return trial_lease(participant=participant, mark_shown=True).leases


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arms", "expected"),
    [
        ({"name": "a"}, "must be a list"),
        (["gradcam"], "must be an object"),
        ([{"name": "1bad", "methods": ["gradcam"]}, {"name": "b", "methods": ["rise", "lime"]}], "must be an identifier"),
        ([{"name": "", "methods": ["gradcam"]}, {"name": "b", "methods": ["rise", "lime"]}], "must be an identifier"),
        ([{"name": "a", "methods": ["gradcam"]}, {"name": "a", "methods": ["rise", "lime"]}], "used twice"),
        ([{"name": "a", "methods": []}, {"name": "b", "methods": METHODS}], "non-empty list"),
        ([{"name": "a", "methods": ["gradcam", "saliency"]}, {"name": "b", "methods": ["rise", "lime"]}],
         "'saliency' not among the study's methods"),
        ([{"name": "a", "methods": ["gradcam"]}, {"name": "b", "methods": ["rise"]}], "lime are in no arm"),
        ([{"name": "a", "methods": ["gradcam"], "colour": "red"}, {"name": "b", "methods": ["rise", "lime"]}],
         "unknown key"),
    ],
)  # fmt: skip
def test_bad_arms_are_refused_with_a_clear_message(arms: object, expected: str) -> None:
    errors = arms_errors(arms, METHODS)
    assert any(expected in e for e in errors), errors
    study = Study(name="x", kind=Study.Kind.CLASS_DISCRIMINATION, methods=METHODS, arms=arms)
    assert any(expected in e for e in study_config_errors(study=study, n_main_items=10).get("arms", [])), expected


def test_good_arms_and_no_arms_pass() -> None:
    assert arms_errors([], METHODS) == []
    assert arms_errors(ARMS, METHODS) == []
    assert arms_errors([{"name": "control-1", "methods": ["gradcam"]}, {"name": "all_of_them", "methods": METHODS}],
                       METHODS) == []  # fmt: skip
    study = Study(name="x", kind=Study.Kind.CLASS_DISCRIMINATION, methods=METHODS, arms=ARMS)
    assert "arms" not in study_config_errors(study=study, n_main_items=10)
    assert arm_methods(ARMS, "rise") == ("rise",)
    assert arm_methods(ARMS, "") is None
    assert arm_methods(ARMS, "nope") == ()


def test_arm_pick_takes_the_fewest_and_draws_among_ties() -> None:
    assert arm_pick(["a", "b", "c"], {"a": 2, "b": 1, "c": 2}, random.Random(0)) == "b"
    drawn = {arm_pick(["a", "b", "c"], {"a": 1, "b": 1, "c": 1}, random.Random(seed)) for seed in range(40)}
    assert drawn == {"a", "b", "c"}, "ties are drawn, not always the first arm"


# --- assignment ------------------------------------------------------------------------------------


def test_ten_entries_into_three_arms_are_balanced() -> None:
    study = _arm_study()
    people = [_enter(study, k) for k in range(10)]
    counts = arm_counts(study=study)
    assert sum(counts.values()) == 10
    assert set(counts) == set(METHODS)
    assert max(counts.values()) - min(counts.values()) <= 1, counts
    assert all(p.arm in METHODS for p in people)


def test_declined_and_screened_out_do_not_count() -> None:
    study = _arm_study()
    first = [_enter(study, k) for k in range(3)]  # one per arm
    left = first[0]
    Participant.objects.filter(pk=left.pk).update(status=Participant.Status.DECLINED)
    assert _enter(study, 3).arm == left.arm, "the arm that lost a counted participant is refilled first"


def test_a_resumed_participant_keeps_its_arm() -> None:
    study = _arm_study()
    first = _enter(study, 1)
    [_enter(study, k) for k in range(2, 8)]
    again = _enter(study, 1)
    assert again.pk == first.pk
    assert again.arm == first.arm


def test_a_study_without_arms_assigns_none() -> None:
    study = _arm_study(arms=[])
    assert _enter(study, 1).arm == ""
    assert arm_counts(study=study) == {}


# --- allocation ------------------------------------------------------------------------------------


def test_allocation_offers_only_the_arms_methods() -> None:
    study = _arm_study(n_main=12, trials=3, quota=3)
    people = [_start(_enter(study, k)) for k in range(9)]
    for person in people:
        while True:
            leases = _leases(person)
            if not leases:
                break
            response_record(participant=person, assignment_token=leases[0].token, choice=0)
    for person in people:
        methods = set(Assignment.objects.filter(participant=person).values_list("item__method", flat=True))
        assert methods == {person.arm}, (person.arm, methods)
        assert Assignment.objects.filter(participant=person, status=Assignment.Status.ANSWERED).count() == 3
    assert not Item.objects.filter(study=study).annotate(u=F("n_answered") + F("n_leased")).filter(u__gt=3).exists()
    assert study_audit(study_id=study.pk, check_files=False).ok


def test_planned_trials_do_not_exceed_the_arms_items() -> None:
    study = _arm_study(n_main=6, trials=4, quota=5,
                       arms=[{"name": "big", "methods": ["gradcam", "rise"]}, {"name": "small", "methods": ["lime"]}])
    # fmt: skip
    small = big = None
    k = 0
    while small is None or big is None:
        person = _enter(study, k)
        k += 1
        if person.arm == "small":
            small = person
        else:
            big = person
    assert planned_trials(study=study, participant=small) == (2, 0), "the lime arm has 2 main items"
    assert planned_trials(study=study, participant=big) == (4, 0)
    assert planned_trials(study=study) == (4, 0), "without a participant: the study's plan, unchanged"


# --- export and audit ------------------------------------------------------------------------------


def test_tidy_and_mturk_exports_carry_the_arm() -> None:
    study = _arm_study()
    person = _start(_enter(study, 1))
    lease = _leases(person)[0]
    response_record(participant=person, assignment_token=lease.token, choice=0)
    header, rows = export_rows(study=study, kind="tidy")
    frame = pd.read_csv(io.StringIO("".join(csv_lines(header, rows))))
    assert list(frame["arm"]) == [person.arm]
    header, rows = export_rows(study=study, kind="mturk")
    row = dict(zip(header, next(iter(rows)), strict=True))
    assert row["Answer.arm"] == person.arm


def test_audit_catches_a_tampered_arm() -> None:
    study = _arm_study()
    people = [_start(_enter(study, k)) for k in range(6)]
    for person in people:
        lease = _leases(person)[0]
        response_record(participant=person, assignment_token=lease.token, choice=0)
    assert study_audit(study_id=study.pk, check_files=False).ok
    victim = people[0]
    other = next(m for m in METHODS if m != victim.arm)
    Participant.objects.filter(pk=victim.pk).update(arm=other)  # now holds an item outside its arm
    problems = [p for p in study_audit(study_id=study.pk, check_files=False).problems if p.code == "arms"]
    assert any(f"participant {victim.pk} of arm {other!r} holds a main item" in p.message for p in problems), problems
    Participant.objects.filter(pk=victim.pk).update(arm="nonexistent")
    problems = [p for p in study_audit(study_id=study.pk, check_files=False).problems if p.code == "arms"]
    assert any("not one of the study's arms" in p.message for p in problems), problems
    # Imbalance: three more participants forced into one arm.
    Participant.objects.filter(pk=victim.pk).update(arm=victim.arm)
    Participant.objects.filter(pk__in=[p.pk for p in people[1:4]]).update(arm=METHODS[0])
    problems = [p for p in study_audit(study_id=study.pk, check_files=False).problems if p.code == "arms"]
    assert any("differ by" in p.message for p in problems), problems


# --- results page ----------------------------------------------------------------------------------


def test_results_page_counts_participants_per_arm_only_with_arms(staff_client) -> None:  # type: ignore[no-untyped-def]
    from django.core.cache import cache
    from django.urls import reverse

    from studies.fixtures.synthetic_responses import synthetic_study_create

    cache.clear()
    study = synthetic_study_create(n_workers=6, n_careless=0, n_fast=0, seed=4)
    url = reverse("studies:results", args=[study.slug])
    assert 'id="arms-table"' not in staff_client.get(url).content.decode()
    Study.objects.filter(pk=study.pk).update(arms=[{"name": "g", "methods": ["gradcam"]},
                                                   {"name": "b", "methods": ["guided_backprop"]}])  # fmt: skip
    ids = list(Participant.objects.filter(study=study).order_by("id").values_list("id", flat=True))
    Participant.objects.filter(pk__in=ids[:4]).update(arm="g")
    Participant.objects.filter(pk__in=ids[4:]).update(arm="b")
    cache.clear()
    text = staff_client.get(url).content.decode()
    assert 'id="arms-table"' in text
    assert '<td><code>g</code></td><td>gradcam</td><td class="num">4</td>' in text
    assert '<td><code>b</code></td><td>guided_backprop</td><td class="num">2</td>' in text
    cache.clear()


def test_live_study_arms_never_change(staff_client):
    """Participants were assigned to the stored arms: the admin refuses another set while live."""
    import json

    from django.urls import reverse

    from studies.fixtures.builders import admin_change_form_data
    from studies.models import Participant

    study = make_worker_study(status=Study.Status.LIVE, platform=Study.Platform.MTURK)
    Participant.objects.create(study=study, platform=study.platform, platform_worker_id="W1", session_key="s1")
    arms = [{"name": "only", "methods": list(study.methods)}]
    response = staff_client.post(reverse("admin:studies_study_change", args=[study.pk]),
                                 admin_change_form_data(staff_client, study, arms=json.dumps(arms),
                                                        confirm_live_change=True))  # fmt: skip
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "participants were assigned to these arms" in errors["arms"][0]
    study.refresh_from_db()
    assert study.arms == []
