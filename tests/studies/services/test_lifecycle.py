"""A researcher is guarded from mistakes (issue #13): validation at save, the lifecycle actions
(Prepare, Publish, Pause, Close), the live-change guard, the platform's own set-up and a
Prepare that never blocks the request."""

from __future__ import annotations

import threading
import time

import pytest
from django.urls import reverse

from studies.fixtures.builders import admin_change_form_data, make_worker_study
from studies.models import Item, Job, Participant, Study
from studies.pipeline import prepare, stages
from studies.services import lifecycle

pytestmark = pytest.mark.django_db


def _errors(response) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, "the form should come back with errors"
    return {field: list(errors) for field, errors in response.context["adminform"].form.errors.items()}


def _snapshot(study: Study) -> dict[str, object]:
    return dict(Study.objects.filter(pk=study.pk).values()[0])


# --- validation at save ----------------------------------------------------------------------


def test_methods_are_a_checkbox_list_with_descriptions(staff_client):
    from explainers.registry import METHODS

    page = staff_client.get(reverse("admin:studies_study_add")).content.decode()
    for name, spec in METHODS.items():
        assert f'value="{name}"' in page
        assert spec.doc.split("'")[0][:30] in page
    assert 'type="checkbox" name="methods"' in page


@pytest.mark.parametrize(("field", "change", "message"), [
    ("methods", {"methods": ["gradcam", "no_such_method"]}, "unknown method 'no_such_method'"),
    ("wording", {"wording": '{"predicted": "It said {x}"}'}, "placeholder {x} cannot be filled"),
    ("trials_per_participant", {"trials_per_participant": "9"}, "9 trials per participant, but the study has 6 main items"),
    ("catch_trials", {"catch_trials": "3"}, "catch trials must be fewer"),
])  # fmt: skip
def test_a_bad_setting_is_a_form_error_naming_the_field_and_nothing_changes(staff_client, field, change, message):
    study = make_worker_study(status=Study.Status.READY, n_main=6, trials_per_participant=3)
    before = _snapshot(study)
    response = staff_client.post(reverse("admin:studies_study_change", args=[study.pk]),
                                 admin_change_form_data(staff_client, study, **change))  # fmt: skip
    errors = _errors(response)
    assert any(message in text for text in errors.get(field, [])), errors
    assert _snapshot(study) == before


def test_a_good_change_saves_and_the_methods_are_stored_as_a_list(staff_client):
    study = make_worker_study(status=Study.Status.DRAFT, with_files=False)
    response = staff_client.post(reverse("admin:studies_study_change", args=[study.pk]),
                                 admin_change_form_data(staff_client, study, methods=["gradcam", "rise", "occlusion"]))  # fmt: skip
    assert response.status_code == 302, _errors(response)
    study.refresh_from_db()
    assert study.methods == ["gradcam", "rise", "occlusion"]


def test_status_is_read_only_in_the_form(staff_client):
    study = make_worker_study(status=Study.Status.READY)
    response = staff_client.post(reverse("admin:studies_study_change", args=[study.pk]),
                                 admin_change_form_data(staff_client, study, status="live"))  # fmt: skip
    assert response.status_code == 302
    study.refresh_from_db()
    assert study.status == Study.Status.READY


# --- publish, pause, close -------------------------------------------------------------------


def _step(client, study: Study, step: str):  # type: ignore[no-untyped-def]
    return client.post(reverse("admin:studies_study_lifecycle", args=[study.pk, step]), follow=True)


def test_publish_before_prepare_is_refused_with_the_reason(staff_client):
    study = make_worker_study(status=Study.Status.DRAFT, with_files=False)
    text = _step(staff_client, study, "publish").content.decode()
    assert "Publish refused" in text
    assert "is draft; prepare it first" in text
    study.refresh_from_db()
    assert study.status == Study.Status.DRAFT


def test_publish_refuses_more_trials_than_main_items_naming_the_field(staff_client):
    study = make_worker_study(status=Study.Status.READY, n_main=4, trials_per_participant=3)
    Study.objects.filter(pk=study.pk).update(trials_per_participant=20)  # as if saved before the check existed
    text = _step(staff_client, study, "publish").content.decode()
    assert "trials_per_participant: 20 trials per participant, but the study has 4 main items" in text
    study.refresh_from_db()
    assert study.status == Study.Status.READY
    with pytest.raises(lifecycle.ConfigRefused) as refused:
        lifecycle.study_publish(study_id=study.pk)
    assert set(refused.value.errors) == {"trials_per_participant"}


def test_publish_pause_publish_close(staff_client, client):
    study = make_worker_study(status=Study.Status.READY)
    Study.objects.filter(pk=study.pk).update(validity_report={}, validity_acknowledged=False)
    # The audit of the factory's tiny solid-colour PNGs may fail: then acknowledge it, as a researcher would.
    text = _step(staff_client, study, "publish").content.decode()
    study.refresh_from_db()
    if study.status != Study.Status.LIVE:
        assert "validity audit" in text
        Study.objects.filter(pk=study.pk).update(validity_acknowledged=True)
        _step(staff_client, study, "publish")
        study.refresh_from_db()
    assert study.status == Study.Status.LIVE
    entry = reverse("studies:worker-entry", args=[study.slug])
    assert client.get(entry).status_code in (200, 302)
    participant = Participant.objects.filter(study=study).first()
    assert "paused" in _step(staff_client, study, "pause").content.decode()
    study.refresh_from_db()
    assert study.status == Study.Status.READY
    refused = client.get(entry, follow=True)
    assert "This study is not open at the moment." in refused.content.decode()
    if participant is not None:  # a participant already in: the token pages still answer
        assert client.get(reverse("studies:worker-home", args=[participant.token])).status_code in (200, 302)
    _step(staff_client, study, "publish")
    study.refresh_from_db()
    assert study.status == Study.Status.LIVE
    assert "is closed" in _step(staff_client, study, "close").content.decode()
    study.refresh_from_db()
    assert study.status == Study.Status.CLOSED
    assert "Publish refused" in _step(staff_client, study, "publish").content.decode()
    assert "Pause refused" in _step(staff_client, study, "pause").content.decode()
    study.refresh_from_db()
    assert study.status == Study.Status.CLOSED


def test_close_is_refused_while_preparing():
    study = make_worker_study(status=Study.Status.PREPARING, with_files=False)
    Job.objects.create(study=study, kind=Job.Kind.PREPARE, status=Job.Status.RUNNING)
    with pytest.raises(lifecycle.PrepareRefused, match="cancel the preparation first"):
        lifecycle.study_close(study_id=study.pk)


def test_the_change_page_offers_the_buttons_of_the_status(staff_client):
    study = make_worker_study(status=Study.Status.READY)
    page = staff_client.get(reverse("admin:studies_study_change", args=[study.pk])).content.decode()
    assert 'id="lifecycle-button-publish"' in page
    assert 'id="lifecycle-button-pause"' not in page
    Study.objects.filter(pk=study.pk).update(status=Study.Status.LIVE)
    page = staff_client.get(reverse("admin:studies_study_change", args=[study.pk])).content.decode()
    assert 'id="lifecycle-button-pause"' in page
    assert 'id="lifecycle-button-publish"' not in page


# --- changing a live study -------------------------------------------------------------------


def _enter(study: Study, n: int = 2) -> None:
    for index in range(n):
        Participant.objects.create(study=study, platform=study.platform, platform_worker_id=f"W{index}",
                                   session_key=f"s{index}")  # fmt: skip


def test_live_study_methods_never_change(staff_client):
    study = make_worker_study(status=Study.Status.LIVE, platform=Study.Platform.MTURK)
    _enter(study)
    response = staff_client.post(reverse("admin:studies_study_change", args=[study.pk]),
                                 admin_change_form_data(staff_client, study, methods=["gradcam", "rise"], confirm_live_change=True))  # fmt: skip
    errors = _errors(response)
    assert "stimuli are prepared" in errors["methods"][0]
    study.refresh_from_db()
    assert study.methods == ["gradcam"]


def test_live_study_platform_change_needs_the_confirmation(staff_client):
    study = make_worker_study(status=Study.Status.LIVE, platform=Study.Platform.MTURK)
    _enter(study)
    url = reverse("admin:studies_study_change", args=[study.pk])
    errors = _errors(staff_client.post(url, admin_change_form_data(staff_client, study, platform="prolific")))
    assert "2 participant(s) already entered through Amazon Mechanical Turk" in errors["platform"][0]
    study.refresh_from_db()
    assert study.platform == Study.Platform.MTURK
    saved = staff_client.post(url, admin_change_form_data(staff_client, study, platform="prolific", confirm_live_change=True))
    assert saved.status_code == 302
    study.refresh_from_db()
    assert study.platform == Study.Platform.PROLIFIC


def test_paused_study_with_participants_is_guarded_too(staff_client):
    study = make_worker_study(status=Study.Status.READY)
    _enter(study, 1)
    errors = _errors(staff_client.post(reverse("admin:studies_study_change", args=[study.pk]),
                                       admin_change_form_data(staff_client, study, question="Which one?")))  # fmt: skip
    assert "the study is paused: 1 participant(s) already entered" in errors["question"][0]


def test_ready_study_whose_methods_change_goes_back_to_draft(staff_client):
    study = make_worker_study(status=Study.Status.READY)
    saved = staff_client.post(reverse("admin:studies_study_change", args=[study.pk]),
                              admin_change_form_data(staff_client, study, methods=["gradcam", "rise"]))  # fmt: skip
    assert saved.status_code == 302
    study.refresh_from_db()
    assert study.status == Study.Status.DRAFT


# --- the platform's own set-up ---------------------------------------------------------------


@pytest.mark.parametrize(("platform", "shown", "hidden"), [
    ("mturk", ["ExternalQuestion"], ["PROLIFIC_PID", "Prolific: completion"]),
    ("prolific", ["PROLIFIC_PID", "Prolific: completion URL", "Prolific: completion code"], ["ExternalQuestion"]),
    ("link", ["Study link"], ["ExternalQuestion", "PROLIFIC_PID"]),
])  # fmt: skip
def test_the_page_shows_only_the_platforms_setup(staff_client, settings, platform, shown, hidden):
    settings.XAISTUDY_PUBLIC_URL = "https://studies.example.org"
    study = make_worker_study(status=Study.Status.READY, platform=platform)
    page = staff_client.get(reverse("admin:studies_study_change", args=[study.pk])).content.decode()
    block = page[page.index("field-platform_setup"):]
    block = block[:block.index("field-exclusion_group")]  # the next row of the form
    assert f"https://studies.example.org/s/{study.slug}/" in block
    for text in shown:
        assert text in block, text
    for text in hidden:
        assert text not in block, text
    assert "XAISTUDY_PUBLIC_URL is not set" not in page


def test_a_missing_public_url_is_warned(staff_client, settings):
    settings.XAISTUDY_PUBLIC_URL = ""
    study = make_worker_study(status=Study.Status.READY, platform="mturk")
    page = staff_client.get(reverse("admin:studies_study_change", args=[study.pk])).content.decode()
    assert "XAISTUDY_PUBLIC_URL is not set" in page


# --- Prepare never blocks the request --------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_prepare_returns_at_once_and_the_job_runs_in_a_thread(staff_client, monkeypatch, settings):
    assert settings.CELERY_TASK_ALWAYS_EAGER
    release = threading.Event()
    started = threading.Event()

    def slow_predict(*, job_id: int) -> bool:
        started.set()
        assert release.wait(10)
        Job.objects.filter(pk=job_id).update(status=Job.Status.DONE, stage="done")
        return False

    monkeypatch.setattr(stages, "prepare_predict_stage", slow_predict)
    study = make_worker_study(status=Study.Status.DRAFT, with_files=False)
    Item.objects.filter(study=study).delete()
    t0 = time.monotonic()
    response = staff_client.post(reverse("admin:studies_study_lifecycle", args=[study.pk, "prepare"]), follow=True)
    elapsed = time.monotonic() - t0
    assert "preparation started" in response.content.decode()
    assert started.wait(5), "the background thread did not start the job"
    assert elapsed < 2.0
    job = Job.objects.get(study=study)
    assert job.status == Job.Status.PENDING  # still running in the thread while the request is answered
    page = staff_client.get(reverse("admin:studies_study_change", args=[study.pk])).content.decode()
    assert 'id="prepare-progress"' in page
    thread = prepare.BACKGROUND_THREADS.get(job.pk)
    release.set()
    if thread is not None:
        thread.join(10)
    job.refresh_from_db()
    assert job.status == Job.Status.DONE


def test_with_a_broker_prepare_enqueues_as_before(monkeypatch, settings, django_capture_on_commit_callbacks):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    sent: list[int] = []
    from studies import tasks

    monkeypatch.setattr(tasks.gpu_prepare_predict, "delay", lambda job_id: sent.append(job_id))
    monkeypatch.setattr(prepare, "job_start_background", lambda **kw: pytest.fail("no thread with a broker"))
    study = make_worker_study(status=Study.Status.DRAFT, with_files=False)
    with django_capture_on_commit_callbacks(execute=True):
        job = prepare.study_prepare(study_id=study.pk, background=True)
    assert sent == [job.pk]
