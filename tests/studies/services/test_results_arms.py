"""The results of a study with between-subject arms (issue 16): the analysis per arm, on the page and
in the summary CSV; a study without arms shows what it showed before.

Two ways to a study with arms: synthetic responses (``synthetic_study_create``) whose participants
are then given arms, keeping only the answers to their arm's methods (a fast study of any size);
and the worker flow itself (``make_worker_study``: entry assigns the arm, the allocation offers the
arm's items, ``response_record`` stores the answers).
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from django.core.cache import cache
from django.db import connection
from django.urls import reverse

from studies.designs import design_for
from studies.fixtures.builders import make_worker_study
from studies.fixtures.synthetic_responses import synthetic_study_create
from studies.models import Assignment, Item, Participant, Study
from studies.selectors.judgments import study_judgments_load
from studies.services.allocation import trial_lease
from studies.services.exports import csv_lines, export_rows
from studies.services.participation import PlatformIdentity, participant_enter
from studies.services.responses import response_record
from studies.services.results import study_results_compute, summary_rows

pytestmark = pytest.mark.django_db

ARMS = [{"name": "expl", "methods": ["gradcam"]}, {"name": "other", "methods": ["guided_backprop"]}]


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


def _synthetic_arm_study(*, kind: str = Study.Kind.CLASS_DISCRIMINATION, quality=(0.85, 0.6), seed: int = 21) -> Study:
    """A synthetic study whose participants alternate between the two :data:`ARMS`; each keeps only the
    answers to its arm's method (catch trials for everyone)."""
    study = synthetic_study_create(kind=kind, methods=("gradcam", "guided_backprop"), quality=quality, n_workers=16,
                                   trials_per_worker=12, n_careless=2, n_fast=1, seed=seed)  # fmt: skip
    Study.objects.filter(pk=study.pk).update(arms=ARMS)
    study.refresh_from_db()
    for k, person in enumerate(Participant.objects.filter(study=study).order_by("id")):
        arm = ARMS[k % 2]
        Participant.objects.filter(pk=person.pk).update(arm=arm["name"])
        Assignment.objects.filter(participant=person, item__role=Item.Role.MAIN).exclude(
            item__method__in=arm["methods"]).delete()
    return study


def _read(study: Study, kind: str) -> pd.DataFrame:
    header, rows = export_rows(study=study, kind=kind)
    return pd.read_csv(io.StringIO("".join(csv_lines(header, rows))), keep_default_na=False, na_values=[""])


def test_loader_gives_each_judgment_its_participants_arm():
    study = _synthetic_arm_study()
    loaded = study_judgments_load(study=study)
    j = loaded.judgments
    assert j.arm_names == ("expl", "other")
    arm_of = dict(Participant.objects.filter(study=study).values_list("id", "arm"))
    assert [j.arm_names[a] for a in j.arm] == [arm_of[p] for p in loaded.participant_id]
    without = synthetic_study_create(n_workers=3, seed=2)
    assert study_judgments_load(study=without).judgments.arm is None


def test_per_arm_rows_equal_the_whole_study_rows_of_a_study_holding_only_that_arm():
    study = _synthetic_arm_study()
    results = study_results_compute(study=study, n_boot=300)
    assert [arm.name for arm in results.arms] == ["expl", "other"]
    assert [arm.method_names for arm in results.arms] == [("gradcam",), ("guided_backprop",)]
    # the arms' judgments add up to the study's; each arm's row counts its participants' answers (ORM)
    assert sum(arm.n_judgments for arm in results.arms) == results.n_judgments
    for arm, spec in zip(results.arms, ARMS, strict=True):
        row = arm.table(with_exclusions=False).rows[0]
        answers = Assignment.objects.filter(participant__study=study, participant__arm=spec["name"],
                                            item__role=Item.Role.MAIN, status=Assignment.Status.ANSWERED)  # fmt: skip
        assert row.n_judgments == answers.count()
        assert row.n_correct == answers.filter(response__correct=True).count()
        assert row.n_workers == answers.values("participant").distinct().count()


@pytest.mark.parametrize("arm", [0, 1])
def test_an_arms_rows_are_the_whole_study_rows_of_the_study_holding_only_that_arm(arm):
    """Delete the other arm's participants and recompute: the whole study's table is the arm's table
    (rows, intervals, pairs, exclusions; the rows of methods nobody judged left out)."""
    study = _synthetic_arm_study()
    mine = study_results_compute(study=study, n_boot=300).arms[arm]
    Participant.objects.filter(study=study).exclude(arm=ARMS[arm]["name"]).delete()
    alone = study_results_compute(study=study, n_boot=300)
    for with_exclusions in (False, True):
        table, whole = mine.table(with_exclusions=with_exclusions), alone.table(with_exclusions=with_exclusions)
        assert table.rows == tuple(r for r in whole.rows if r.n_judgments), with_exclusions
        assert table.n_excluded_workers == whole.n_excluded_workers
    assert mine.analysis.exclusions.n_workers_excluded == alone.analysis.exclusions.n_workers_excluded > 0


def test_trust_study_gets_its_own_table_per_arm():
    study = _synthetic_arm_study(kind=Study.Kind.TRUST, quality=(1.2, -0.4))
    results = study_results_compute(study=study, n_boot=200)
    expl, other = (arm.table(with_exclusions=False).rows[0] for arm in results.arms)
    assert type(expl).__name__ == "TrustRow"
    assert expl.mean > other.mean


def test_summary_csv_has_an_arm_column_whole_study_first():
    study = _synthetic_arm_study()
    frame = _read(study, "summary")
    assert list(frame.columns[:3]) == ["analysis", "arm", "kind"]
    whole = frame[frame["arm"].isna()]
    assert len(whole) == 4
    assert list(frame.index[: len(whole)]) == list(whole.index)
    assert sorted(frame["arm"].dropna().unique()) == ["expl", "other"]
    for arm, method in (("expl", "gradcam"), ("other", "guided_backprop")):
        part = frame[frame["arm"] == arm]
        assert set(part["method"]) == {method}
        assert set(part["analysis"]) == {"with_exclusions", "without_exclusions"}
    results = study_results_compute(study=study)
    expected = {(r["arm"], r["analysis"], r["method"]): r["n_judgments"] for r in summary_rows(results)}
    got = {(a if isinstance(a, str) else "", b, c): n for a, b, c, n in
           frame[["arm", "analysis", "method", "n_judgments"]].itertuples(index=False)}  # fmt: skip
    assert got == expected


def test_results_page_shows_a_section_per_arm(staff_client):
    study = _synthetic_arm_study()
    response = staff_client.get(reverse("studies:results", args=[study.slug]))
    assert response.status_code == 200
    text = response.content.decode()
    assert "<h2>Per arm</h2>" in text
    sections = response.context["arm_sections"]
    assert [s["name"] for s in sections] == ["expl", "other"]
    assert [[r["method"] for r in s["rows"]] for s in sections] == [["gradcam"], ["guided_backprop"]]
    for name in ("expl", "other"):
        assert f'id="method-table-arm-{name}"' in text
    assert text.count('id="method-table"') == 1
    results = response.context["results"]
    expl = results.arms[0].table(with_exclusions=True).rows[0]
    assert sections[0]["rows"][0] == {**design_for(study).results_row(expl), "label": sections[0]["rows"][0]["label"]}


def test_study_without_arms_shows_what_it_showed_before(staff_client):
    study = synthetic_study_create(n_workers=6, seed=8)
    results = study_results_compute(study=study)
    assert results.arms == ()
    assert {r["arm"] for r in summary_rows(results)} == {""}
    response = staff_client.get(reverse("studies:results", args=[study.slug]))
    text = response.content.decode()
    assert "Per arm" not in text
    assert "method-table-arm" not in text
    assert response.context["arm_sections"] == []


def _enter(study: Study, k: int) -> Participant:
    identity = PlatformIdentity(platform="prolific", worker_id=f"{k:024x}", prolific_study_id="s" * 24,
                                prolific_session_id=f"{k:024d}")  # fmt: skip
    person = participant_enter(study=study, identity=identity).participant
    Participant.objects.filter(pk=person.pk).update(status=Participant.Status.IN_PROGRESS, practice_passed=True)
    person.refresh_from_db()
    return person


def test_worker_flow_study_with_arms_is_analysed_per_arm():
    """Entry assigns the arm, the allocation offers its items, the answers are analysed per arm."""
    study = make_worker_study(n_main=12, n_practice=0, judgments_per_item=4, trials_per_participant=3, with_files=False)
    for k, item in enumerate(Item.objects.filter(study=study, role=Item.Role.MAIN).order_by("id")):
        Item.objects.filter(pk=item.pk).update(method=("gradcam", "guided_backprop")[k % 2])
    Study.objects.filter(pk=study.pk).update(methods=["gradcam", "guided_backprop"], arms=ARMS)
    study.refresh_from_db()
    people = [_enter(study, k) for k in range(8)]
    for person in people:
        for _ in range(3):
            leases = trial_lease(participant=person, mark_shown=True).leases
            if not leases:
                break
            response_record(participant=person, assignment_token=leases[0].token, choice=person.pk % 2)
    results = study_results_compute(study=study, n_boot=100)
    assert [arm.name for arm in results.arms] == ["expl", "other"]
    for arm in results.arms:
        members = {p.pk for p in people if p.arm == arm.name}
        assert arm.n_workers == len(members) == 4
        assert arm.n_judgments == Assignment.objects.filter(participant__in=members,
                                                            status=Assignment.Status.ANSWERED).count() == 12
        assert arm.method_names == tuple(a["methods"][0] for a in ARMS if a["name"] == arm.name)


@pytest.mark.services
def test_binary_copy_and_fetchall_give_the_same_arms():
    if connection.vendor != "postgresql":
        pytest.fail("the services suite needs PostgreSQL (DATABASE_URL)", pytrace=False)
    study = _synthetic_arm_study(seed=5)
    via_copy = study_judgments_load(study=study, method="copy").judgments
    via_fetch = study_judgments_load(study=study, method="fetch").judgments
    assert via_copy.arm_names == via_fetch.arm_names == ("expl", "other")
    np.testing.assert_array_equal(via_copy.arm, via_fetch.arm)
    np.testing.assert_array_equal(via_copy.item_right_option, via_fetch.item_right_option)
    results = study_results_compute(study=study, n_boot=100)
    assert [a.table(with_exclusions=True).rows for a in results.arms] == [
        a.table(with_exclusions=True).rows
        for a in study_results_compute(study=study, n_boot=100,
                                       loaded=study_judgments_load(study=study, method="fetch")).arms]  # fmt: skip
