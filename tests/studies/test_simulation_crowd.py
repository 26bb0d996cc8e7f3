"""simulate_crowd: simulated participants walk the real JSON API over loopback and are flagged."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from studies.models import Assignment, Participant, Response
from studies.services.audit import study_audit
from studies.simulation.crowd import CrowdConfig, crowd_run, wsgi_server_running
from studies.simulation.toy import toy_study_create

pytestmark = pytest.mark.django_db(transaction=True)

# The embedded SQLite test database locks whole tables across threads, so these tests run one
# participant at a time; tests/services/test_faults.py runs crowds concurrently on PostgreSQL.


def test_simulate_crowd_fills_the_study_flags_everyone_and_audits_clean(capsys: pytest.CaptureFixture[str]) -> None:
    study = toy_study_create(n_images=2, methods=("focused", "misleading"), judgments_per_item=2,
                             trials_per_participant=4)  # fmt: skip
    # 8 items x 2 judgments = 16 slots; 5 participants x 4 trials = 20 wanted: the last ones find it full.
    call_command("simulate_crowd", str(study.pk), "--workers", "5", "--concurrency", "1",
                 "--observer", "heatmap_reader", "--time-limit", "120")  # fmt: skip
    out = capsys.readouterr().out
    assert "audit: " in out
    assert "clean" in out
    assert Response.objects.filter(assignment__item__study=study).count() == 16
    assert set(Participant.objects.filter(study=study).values_list("is_simulated", flat=True)) == {True}
    assert Participant.objects.filter(study=study, status="completed").count() == 4
    assert not Assignment.objects.filter(item__study=study, status="leased").exists()
    assert "judgments=16" in out
    assert study_audit(study_id=study.pk).ok


def test_heatmap_reader_over_http_gets_focused_right_and_misleading_wrong() -> None:
    study = toy_study_create(n_images=3, methods=("focused", "misleading"), judgments_per_item=4,
                             trials_per_participant=12)  # fmt: skip
    with wsgi_server_running() as base_url:
        report = crowd_run(CrowdConfig(base_url=base_url, study_slug=study.slug, observer="heatmap_reader",
                                       workers=4, concurrency=1, time_limit_s=180))  # fmt: skip
    assert report.stats.outcomes["completed"] == 4
    assert report.stats.server_errors == 0
    responses = Response.objects.filter(assignment__item__study=study)
    focused = responses.filter(assignment__item__method="focused")
    misleading = responses.filter(assignment__item__method="misleading")
    assert focused.count() == misleading.count() == 24
    # The reader's overlay reading is imperfect (a reddish object reads warm), and option order
    # depends on the random participant tokens, so the margins are wide (24 judgments each).
    assert focused.filter(correct=True).count() >= 15
    assert misleading.filter(correct=True).count() <= 9


def test_unknown_observer_and_unpublished_study_are_clear_errors() -> None:
    from django.core.management.base import CommandError

    study = toy_study_create(n_images=1, status="draft")
    with pytest.raises(CommandError, match="not live"):
        call_command("simulate_crowd", str(study.pk))
    with pytest.raises(CommandError, match="invalid choice"):
        call_command("simulate_crowd", str(study.pk), "--observer", "psychic")


def test_admin_pilot_action_runs_simulated_workers(staff_client) -> None:  # type: ignore[no-untyped-def]
    study = toy_study_create(n_images=2, methods=("focused",), judgments_per_item=5, trials_per_participant=2)
    draft = toy_study_create(n_images=1, status="draft", name="not yet live")
    response = staff_client.post("/admin/studies/study/", {"action": "pilot_simulated",
                                                           "_selected_action": [study.pk, draft.pk]}, follow=True)  # fmt: skip
    text = response.content.decode()
    assert "judgments=10" in text
    assert "is draft, not live" in text
    assert Participant.objects.filter(study=study, is_simulated=True, status="completed").count() == 5
    assert not Participant.objects.filter(study=draft).exists()
