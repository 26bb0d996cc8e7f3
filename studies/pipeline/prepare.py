"""Preparing a study: predict, plan items, explain and render every stimulus.

Pipeline (the stages are in :mod:`studies.pipeline.stages`; Celery tasks in ``studies/tasks.py``
are thin and chain them; the job's bookkeeping is :mod:`studies.pipeline.jobs`):

1. :func:`study_prepare` (web/admin/command): opens a ``Job`` (``prepare``), sets the study to
   ``preparing`` and enqueues ``gpu_prepare_predict`` after the transaction commits.
2. :func:`~studies.pipeline.stages.prepare_predict_stage` (gpu queue): checks the methods, loads every model (weights
   that do not fit the architecture and unknown CAM layers fail here, naming the model), and
   stores the top-k ``Prediction`` of each model for each image that lacks one (batched).
3. :func:`~studies.pipeline.stages.prepare_plan_stage` (default queue): plans the items (:mod:`studies.pipeline.plan`),
   unlinks stimuli whose settings changed, sets ``Job.total`` and returns the chunks that still
   have empty slots; the task enqueues one ``gpu_prepare_chunk`` per chunk.
4. :func:`~studies.pipeline.stages.prepare_chunk_stage` (gpu queue, ``acks_late`` + ``reject_on_worker_lost``): one
   ``explain`` call for all methods of the chunk, PNGs written atomically under content
   addresses, ``Stimulus`` rows created with ``get_or_create``, the items linked; then the job's
   ``done`` is recounted from the database (never incremented, so a rerun cannot double count)
   and the last chunk to finish keeps the plainest catch and practice candidates
   (:func:`~studies.pipeline.plan.obvious_select`, which deletes the others) and marks the job
   ``done`` and the study ``ready``.

Crash safety: a chunk whose worker dies is either redelivered (child killed: Celery rejects
the message because of ``reject_on_worker_lost``) or, when the whole worker died, re-enqueued
by :func:`job_resume` (admin "resume", ``manage.py prepare_study --resume``, or the
``prepare_sweep`` task for jobs without progress for a while). Every write is idempotent, so a
chunk that runs twice changes nothing the second time.

Poisoned chunks: a chunk whose computation kills its worker every time (out of memory, a
segfault in a native kernel) would be redelivered forever. Each start of a chunk's computation
is therefore counted in ``Job.chunk_attempts`` in its own committed transaction *before* the
heavy work (:func:`~studies.pipeline.stages.chunk_attempt_start`), so a worker killed right after still counts. Rule:
with ``limit = settings.XAISTUDY_CHUNK_MAX_ATTEMPTS`` (default 3), start number ``limit + 1``
computes nothing and fails the job with a message naming the chunk (model, images, items,
methods) and the attempt count; later deliveries find the job failed and do nothing. A chunk
whose stimuli all exist already is linked without counting (nothing heavy runs). Resuming a
failed or cancelled job (a deliberate act: admin, ``prepare_study --resume``) starts the counts
afresh; the sweep's resume of a stalled, still active job keeps them.

Bad input (:class:`~studies.lib.scenes.PrepareInputError`) fails the job with its message
and sets the study to ``failed``; fixing the input and preparing again starts a new job.

Publishing, pausing and closing a study are :mod:`studies.services.lifecycle`.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from studies.models import Job, Study
from studies.pipeline.jobs import ACTIVE, PrepareRefused, job_open
from studies.pipeline.stages import job_fail, prepare_chunk_stage, prepare_plan_stage, prepare_predict_stage

logger = logging.getLogger(__name__)

STALL_AFTER = timedelta(minutes=10)


# --- opening and steering the job (web side: no torch) ---------------------------------------


def study_prepare(*, study_id: int, enqueue: bool = True, background: bool = False) -> Job:
    """Open a prepare job for the study (or return the one already running) and enqueue it.

    Allowed from ``draft``, ``failed`` and ``ready`` (preparing a ready study again is a no-op
    that finishes at once). Refused for ``live`` and ``closed`` studies. (A configuration error
    fails the job at its predict stage with the message; the admin checks
    :func:`~studies.services.study_checks.study_config_errors` before it calls this.)

    ``background``: with no broker (``CELERY_TASK_ALWAYS_EAGER``, the embedded default) the task
    chain would run inside this call; ``background=True`` (the admin) runs it in a daemon thread
    instead, so the request returns at once (:func:`job_start_background`). With a broker it
    changes nothing: the tasks go to the workers either way.
    """
    with transaction.atomic():
        study = Study.objects.select_for_update().get(pk=study_id)
        if study.status in (Study.Status.LIVE, Study.Status.CLOSED):
            raise PrepareRefused(f"study {study.name!r} is {study.status}; close preparation before going live")
        job, opened = job_open(study=study, kind=Job.Kind.PREPARE)
        if not opened:
            return job
        study.status = Study.Status.PREPARING
        study.save(update_fields=["status"])
        if enqueue:
            transaction.on_commit(functools.partial(_enqueue_predict, job.pk, background))
    return job


def _enqueue_predict(job_id: int, background: bool = False) -> None:
    from studies.tasks import gpu_prepare_predict

    if background and settings.CELERY_TASK_ALWAYS_EAGER:
        job_start_background(job_id=job_id)
    else:
        gpu_prepare_predict.delay(job_id)


#: Threads started by :func:`job_start_background`, by job id (tests join them).
BACKGROUND_THREADS: dict[int, threading.Thread] = {}


def job_start_background(*, job_id: int) -> threading.Thread:
    """Run the job's task chain (predict -> plan -> chunks, eagerly) in a daemon thread.

    Used only without a broker (``CELERY_TASK_ALWAYS_EAGER``): the request that asked for the
    preparation returns at once and the job's row shows the progress. The thread has its own
    database connection, closed when it ends. A process that exits mid-job leaves the job active
    without progress: ``prepare_sweep`` / "resume" picks it up again (every stage is idempotent).
    """
    from django.db import connection

    def run() -> None:
        from studies.tasks import gpu_prepare_predict

        try:
            gpu_prepare_predict.apply(args=(job_id,))
        except Exception:  # the stages fail their job themselves; this is only a last resort
            logger.exception("background preparation of job %s crashed", job_id)
            job_fail(job_id=job_id, message="the background preparation crashed; see the server log")
        finally:
            connection.close()
            BACKGROUND_THREADS.pop(job_id, None)

    thread = threading.Thread(target=run, name=f"xaistudy-prepare-{job_id}", daemon=True)
    BACKGROUND_THREADS[job_id] = thread
    thread.start()
    return thread


def job_cancel(*, job_id: int) -> Job:
    """Stop a prepare job: pending chunks skip themselves; the study returns to ``draft``."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_id)
        if job.status in ACTIVE:
            job.status = Job.Status.CANCELLED
            job.finished_at = timezone.now()
            job.stage = f"cancelled at {job.stage or 'start'}"
            job.save(update_fields=["status", "finished_at", "stage", "updated_at"])
            Study.objects.filter(pk=job.study_id, status=Study.Status.PREPARING).update(status=Study.Status.DRAFT)
    return job


def job_resume(*, job_id: int, enqueue: bool = True, background: bool = False) -> Job:
    """Run a cancelled, failed or stalled prepare job again from the start (every stage is idempotent)."""
    with transaction.atomic():
        job = Job.objects.select_for_update().select_related("study").get(pk=job_id)
        if job.kind != Job.Kind.PREPARE:
            raise PrepareRefused(f"job {job.pk} is a {job.kind} job, not a prepare job")
        if job.status == Job.Status.DONE:
            return job
        if job.study.status in (Study.Status.LIVE, Study.Status.CLOSED):
            raise PrepareRefused(f"study {job.study.name!r} is {job.study.status}")
        other = job.study.jobs.filter(kind=Job.Kind.PREPARE, status__in=ACTIVE).exclude(pk=job.pk)
        for stale in other:
            stale.status, stale.finished_at, stale.stage = Job.Status.CANCELLED, timezone.now(), "superseded"
            stale.save(update_fields=["status", "finished_at", "stage", "updated_at"])
        fields = ["status", "error", "finished_at", "stage", "updated_at"]
        if job.status in (Job.Status.FAILED, Job.Status.CANCELLED):
            job.chunk_attempts = {}  # a deliberate resume gives every chunk its attempts again
            fields.append("chunk_attempts")
        job.status, job.error, job.finished_at = Job.Status.PENDING, "", None
        job.stage = "resumed"
        job.save(update_fields=fields)
        Study.objects.filter(pk=job.study_id).update(status=Study.Status.PREPARING)
        if enqueue:
            transaction.on_commit(functools.partial(_enqueue_predict, job.pk, background))
    return job


def jobs_sweep(*, stalled_after: timedelta = STALL_AFTER) -> list[int]:
    """Resume prepare jobs that are active but have not moved for ``stalled_after`` (dead workers)."""
    cutoff = timezone.now() - stalled_after
    stalled = Job.objects.filter(kind=Job.Kind.PREPARE, status__in=ACTIVE, updated_at__lt=cutoff)
    resumed = []
    for job in stalled:
        job_resume(job_id=job.pk)
        resumed.append(job.pk)
    return resumed


def prepare_inline(*, study_id: int, on_progress: Callable[[Job], None] | None = None) -> Job:
    """Prepare a study in this process, stage by stage (the demo and ``prepare_study --inline``)."""
    job = study_prepare(study_id=study_id, enqueue=False)
    if job.status == Job.Status.PENDING and job.stage != "queued":
        job = job_resume(job_id=job.pk, enqueue=False)
    if prepare_predict_stage(job_id=job.pk):
        for chunk in prepare_plan_stage(job_id=job.pk) or []:
            prepare_chunk_stage(job_id=job.pk, model_id=chunk.model_id, image_ids=list(chunk.image_ids))
            if on_progress is not None:
                on_progress(Job.objects.get(pk=job.pk))
    job.refresh_from_db()
    return job
