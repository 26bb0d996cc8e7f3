"""The automatic evaluation through a real Celery worker process, PostgreSQL and Redis.

Small on purpose: a random-initialised synthetic CNN on two 64 px scenes, ``steps=4``, coarse
occlusion; what is asserted is the plumbing (gpu queue, job progress, rows written by the
worker, a redelivered task changing nothing).
"""

from __future__ import annotations

import io
import math
import time

import pytest
import torch
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from studies.fixtures.builders import synthetic_scenes_import
from studies.models import ClassifierModel, EvaluationResult, Job, Study
from studies.pipeline.evaluation import SANITY_METRIC, study_evaluation_start

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def _study() -> Study:
    from explainers.worlds import synthetic

    image_set = synthetic_scenes_import(n=2, seed=5, name="eval-set")
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save(synthetic.SyntheticCNN(num_classes=4).state_dict(), buffer)
    weights = default_storage.save("weights/eval.pt", ContentFile(buffer.getvalue()))
    model = ClassifierModel.objects.create(
        name="eval", arch="synthetic_cnn", weights=weights, class_names=list(synthetic.CLASSES),
        target_layer=synthetic.DEFAULT_LAYER, input_size=64, mean=list(synthetic.MEAN), std=list(synthetic.STD),
    )
    return Study.objects.create(
        name="eval", kind=Study.Kind.CLASS_DISCRIMINATION, model=model, image_set=image_set, methods=["gradcam"],
        seed=3, explainer_options={"occlusion": {"window": 16, "stride": 8},
                                   "evaluation": {"steps": 4, "sanity_units": 2, "sanity_steps": 2}},
    )


def _wait(job: Job, timeout: float = 300) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.status in (Job.Status.DONE, Job.Status.FAILED):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job.pk} stuck: {job.status} {job.stage} {job.done}/{job.total} {job.error}")


def test_gpu_evaluate_study_through_the_worker(celery_worker_process, services_media):
    study = _study()
    job = _wait(study_evaluation_start(study_id=study.pk))
    assert job.status == Job.Status.DONE, job.error
    assert job.done == job.total
    assert job.total > 1
    rows = {(r.method, r.metric): r for r in EvaluationResult.objects.filter(study=study)}
    assert {m for m, _ in rows} == {"gradcam", "control:random", "control:sobel", "control:gaussian"}
    assert ("gradcam", SANITY_METRIC) in rows
    for row in rows.values():
        assert math.isfinite(row.summary["mean"])
    before = {key: (row.pk, row.values) for key, row in rows.items()}
    # Delivered again (e.g. acks_late after a lost worker): a new job recomputes, same rows.
    again = _wait(study_evaluation_start(study_id=study.pk))
    assert again.pk != job.pk
    assert again.status == Job.Status.DONE, again.error
    after = {(r.method, r.metric): (r.pk, r.values) for r in EvaluationResult.objects.filter(study=study)}
    assert after == before
