"""Admin actions for preparation: prepare, cancel, resume, and the job progress column."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from studies.models import ClassifierModel, ImageSet, Job, Study

pytestmark = pytest.mark.django_db


@pytest.fixture
def study() -> Study:
    model = ClassifierModel.objects.create(name="m", arch="synthetic_cnn", class_names=["circle", "square"])
    image_set = ImageSet.objects.create(name="s", categories=["circle", "square"])
    return Study.objects.create(name="d", kind=Study.Kind.CLASS_DISCRIMINATION, model=model, image_set=image_set,
                                methods=["gradcam"])


def _action(client, action: str, study: Study):  # type: ignore[no-untyped-def]
    return client.post(reverse("admin:studies_study_changelist"),
                       {"action": action, "_selected_action": [study.pk]}, follow=True)


def test_prepare_cancel_resume_actions(staff_client, study: Study) -> None:
    response = _action(staff_client, "prepare_stimuli", study)
    assert response.status_code == 200
    job = Job.objects.get(study=study)
    study.refresh_from_db()
    assert study.status == Study.Status.PREPARING
    assert job.status == Job.Status.PENDING
    _action(staff_client, "cancel_preparation", study)
    job.refresh_from_db()
    study.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    assert study.status == Study.Status.DRAFT
    _action(staff_client, "resume_preparation", study)
    job.refresh_from_db()
    assert job.status == Job.Status.PENDING
    assert Job.objects.filter(study=study).count() == 1


def test_live_study_is_not_prepared(staff_client, study: Study) -> None:
    Study.objects.filter(pk=study.pk).update(status=Study.Status.LIVE)
    response = _action(staff_client, "prepare_stimuli", study)
    assert b"is live" in response.content
    assert not Job.objects.exists()


def test_job_list_shows_rate_eta_and_error(staff_client, study: Study, monkeypatch) -> None:
    now = timezone.now()
    # The clock stands still while the page renders, so the rate and ETA do not depend on load.
    monkeypatch.setattr(timezone, "now", lambda: now)
    Job.objects.create(study=study, kind=Job.Kind.PREPARE, status=Job.Status.RUNNING, done=300, total=900,
                       started_at=now - timezone.timedelta(seconds=100))  # 3/s, 600 left: ETA about 200 s
    Job.objects.create(study=study, kind=Job.Kind.PREPARE, status=Job.Status.FAILED, done=0, total=0,
                       error="model 'm': target layer 'x' not usable", started_at=now)
    page = staff_client.get(reverse("admin:studies_job_changelist")).content.decode()
    assert "300/900" in page
    assert "3.00/s, ETA 3m20s" in page
    assert "target layer &#x27;x&#x27; not usable" in page
