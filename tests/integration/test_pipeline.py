"""The preparation pipeline through a real Celery worker process, PostgreSQL and Redis.

Small on purpose: random-initialised synthetic CNNs (no training) on a few 64 px scenes.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
import torch
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from studies.fixtures.builders import TEST_CONSENT, synthetic_scenes_import
from studies.models import ClassifierModel, Image, Item, Job, Prediction, Stimulus, Study
from studies.pipeline.prepare import job_resume, study_prepare
from studies.pipeline.stimuli import TEMP_PREFIX

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

METHODS = ["gradcam", "guided_backprop", "guided_gradcam"]


def _study(name: str, *, n_images: int = 3, chunk_size: int = 2) -> Study:
    import zlib

    from explainers.worlds import synthetic

    image_set = synthetic_scenes_import(n=n_images, seed=zlib.crc32(name.encode()), name=f"{name}-set")
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save(synthetic.SyntheticCNN(num_classes=4).state_dict(), buffer)
    weights = default_storage.save(f"weights/{name}.pt", ContentFile(buffer.getvalue()))
    model = ClassifierModel.objects.create(
        name=name, arch="synthetic_cnn", weights=weights, class_names=list(synthetic.CLASSES),
        target_layer=synthetic.DEFAULT_LAYER, input_size=64, mean=list(synthetic.MEAN), std=list(synthetic.STD),
    )
    return Study.objects.create(
        name=name, kind=Study.Kind.CLASS_DISCRIMINATION, model=model, image_set=image_set, methods=METHODS,
        catch_trials=1, practice_trials=1, seed=3, explainer_options={"display_size": 64, "chunk_size": chunk_size}, consent_text=TEST_CONSENT,
    )


def _wait(job: Job, until, timeout: float = 240) -> Job:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if until(job):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job.pk} stuck: {job.status} {job.stage} {job.done}/{job.total} {job.error}")


def _finished(job: Job) -> bool:
    return job.status in (Job.Status.DONE, Job.Status.FAILED, Job.Status.CANCELLED)


def _files(media: Path) -> tuple[set[str], set[str]]:
    root = media / "stimuli"
    paths = [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
    final = {str(p.relative_to(media)) for p in paths if not p.name.startswith(TEMP_PREFIX)}
    temps = {str(p.relative_to(media)) for p in paths if p.name.startswith(TEMP_PREFIX)}
    return final, temps


def _assert_complete(study: Study, media: Path, before: set[str]) -> None:
    study.refresh_from_db()
    assert study.status == Study.Status.READY
    items = study.items.all()
    assert items.filter(stimulus_a__isnull=True).count() == 0
    rows = Stimulus.objects.filter(model=study.model)
    keys = list(rows.values_list("image_id", "method", "target_class", "settings_hash"))
    assert len(keys) == len(set(keys))
    # every stimulus an item uses exists exactly once; the only others are the maps of the catch and
    # practice candidates that were not kept (plan.obvious_select), on the images set aside for them
    used = set(items.values_list("stimulus_a_id", flat=True))
    assert used <= set(rows.values_list("pk", flat=True))
    spare = set(rows.exclude(pk__in=used).values_list("image_id", flat=True))
    assert spare <= set(items.exclude(role=Item.Role.MAIN).values_list("image_id", flat=True))
    final, temps = _files(media)
    files = set(rows.values_list("file", flat=True))
    assert final - before <= files <= final
    assert not temps
    for row in rows:
        assert (media / row.file.name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_prepare_end_to_end_then_twice(celery_worker_process, services_media: Path) -> None:
    study = _study("e2e")
    baseline = _files(services_media)[0]
    job = _wait(study_prepare(study_id=study.pk), _finished)
    assert job.status == Job.Status.DONE, job.error
    # one of the three images is set aside for the practice pool (1 x 2 attempts + the example); 2 catch items
    assert job.done == job.total == study.items.count() == 2 * 2 * len(METHODS) + 2 + 3
    assert Prediction.objects.filter(model=study.model).count() == 3
    assert study.items.filter(role=Item.Role.MAIN).count() == 2 * 2 * len(METHODS)
    _assert_complete(study, services_media, baseline)
    before = (set(Stimulus.objects.values_list("pk", "sha256")), _files(services_media),
              set(Item.objects.values_list("pk", "stimulus_a_id", "tie_rank")))
    again = _wait(study_prepare(study_id=study.pk), _finished)
    assert again.pk != job.pk
    assert again.status == Job.Status.DONE
    after = (set(Stimulus.objects.values_list("pk", "sha256")), _files(services_media),
             set(Item.objects.values_list("pk", "stimulus_a_id", "tie_rank")))
    assert after == before


def test_worker_killed_mid_job_then_resumed(celery_worker_process, services_media: Path) -> None:
    study = _study("crash", n_images=6, chunk_size=1)
    baseline = _files(services_media)[0]
    job = study_prepare(study_id=study.pk)
    _wait(job, lambda j: j.done > 0 or _finished(j))
    assert job.status == Job.Status.RUNNING, "job finished before the kill"
    assert job.done < job.total
    celery_worker_process.kill()
    killed_at = Job.objects.get(pk=job.pk).done
    assert killed_at < job.total
    celery_worker_process.start()
    job_resume(job_id=job.pk)  # what the admin's "resume" (or the prepare_sweep task) does
    job = _wait(job, _finished)
    assert job.status == Job.Status.DONE, job.error
    assert job.done == job.total
    _assert_complete(study, services_media, baseline)


def test_pool_child_killed_is_redelivered(celery_worker_process, services_media: Path) -> None:
    """A child killed mid-chunk (as an OOM kill would): reject_on_worker_lost requeues the chunk."""
    import os
    import signal

    study = _study("child", n_images=4, chunk_size=1)
    baseline = _files(services_media)[0]
    job = study_prepare(study_id=study.pk)
    _wait(job, lambda j: j.stage.startswith("explain") or _finished(j))
    parent = celery_worker_process.process.pid
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    assert children, "no pool child found"
    os.kill(int(children[0]), signal.SIGKILL)
    job = _wait(job, _finished)
    assert job.status == Job.Status.DONE, job.error
    _assert_complete(study, services_media, baseline)


def test_broken_inputs_fail_with_their_message(celery_worker_process, services_media: Path, tmp_path: Path) -> None:
    weights = _study("weights")
    torch.save({"conv.weight": torch.zeros(3, 3)}, tmp_path / "wrong.pt")
    ClassifierModel.objects.filter(pk=weights.model_id).update(
        weights=default_storage.save("weights/wrong.pt", ContentFile((tmp_path / "wrong.pt").read_bytes())))
    layer = _study("layer")
    ClassifierModel.objects.filter(pk=layer.model_id).update(target_layer="features.block9")
    unreadable = _study("unreadable")
    broken = Image.objects.filter(image_set=unreadable.image_set).order_by("pk").last()
    (services_media / broken.file.name).write_bytes(b"GIF89a truncated")
    expected = {weights.pk: ["wrong", "does not fit"], layer.pk: ["features.block9"],
                unreadable.pk: [broken.original_name, "cannot be read"]}
    jobs = {study_id: study_prepare(study_id=study_id) for study_id in expected}
    for study_id, job in jobs.items():
        job = _wait(job, _finished)
        assert job.status == Job.Status.FAILED
        for text in expected[study_id]:
            assert text in job.error
        assert Study.objects.get(pk=study_id).status == Study.Status.FAILED
    # fix the layer and prepare again: the study recovers
    ClassifierModel.objects.filter(pk=layer.model_id).update(target_layer="")
    job = _wait(study_prepare(study_id=layer.pk), _finished)
    assert job.status == Job.Status.DONE, job.error
    assert Study.objects.get(pk=layer.pk).status == Study.Status.READY


def test_chunk_that_always_kills_its_worker_fails_the_job(celery_worker_process, services_media: Path) -> None:
    """A chunk whose pool child is SIGKILLed on every attempt (a chunk that always runs out of memory).

    Each attempt is counted in the database before the heavy work, so the test can kill the child
    while the chunk computes; after the default cap of 3 attempts the fourth delivery computes
    nothing and fails the job with a message naming the chunk.
    """
    import os
    import signal

    from studies.pipeline.jobs import chunk_max_attempts
    from studies.pipeline.plan import study_chunks
    from studies.pipeline.stages import chunk_key

    limit = chunk_max_attempts()  # the worker process reads the same settings
    study = _study("poison", n_images=1, chunk_size=1)
    # one image and one chunk; SmoothGrad with many samples keeps the chunk busy for seconds
    Study.objects.filter(pk=study.pk).update(methods=["smoothgrad"], explainer_options={
        "display_size": 64, "chunk_size": 1, "smoothgrad": {"samples": 4000, "batch_size": 50}})
    job = study_prepare(study_id=study.pk)
    parent = celery_worker_process.process.pid
    key = None
    for attempt in range(1, limit + 1):
        job = _wait(job, lambda j, n=attempt: len(j.chunk_attempts) == 1 and max(j.chunk_attempts.values()) >= n
                    or _finished(j), timeout=120)
        assert job.status == Job.Status.RUNNING, job.error
        assert list(job.chunk_attempts.values()) == [attempt], "the chunk finished or was counted twice"
        key = next(iter(job.chunk_attempts))
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        assert len(children) == 1, children
        os.kill(int(children[0]), signal.SIGKILL)
    job = _wait(job, _finished)
    assert job.status == Job.Status.FAILED
    assert job.chunk_attempts == {key: limit + 1}
    [chunk] = study_chunks(study, only_missing=False)
    assert key == chunk_key(chunk)
    first = job.error.splitlines()[0]
    assert first.startswith(f"chunk {key} of model 'poison' (1 images, ")
    assert first.endswith(f"was started {limit} times and never finished; not computed again")
    assert Study.objects.get(pk=study.pk).status == Study.Status.FAILED
    assert not Stimulus.objects.filter(model=study.model, method="smoothgrad").exists()
