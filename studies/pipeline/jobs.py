"""The life of a background ``Job`` (prepare, evaluate): one set of rules for every kind.

- **Open** (:func:`job_open`): a study has at most one active job of a kind; asking again
  returns the running one. Called while holding the study's row lock.
- **Active** (:data:`ACTIVE`): pending or running. Every stage checks it first
  (:func:`job_active`) and does nothing for a job that was cancelled, failed or finished
  meanwhile, so a late redelivery is harmless.
- **Start** (:func:`job_start`): running, with the stage and the start time (the rate and ETA of
  :func:`job_progress` count from it).
- **Attempts** (:func:`job_attempt_start`): each start of a unit of heavy work (a prepare chunk,
  a whole evaluation) is counted in ``Job.chunk_attempts`` in its own committed transaction
  *before* the work, so a worker killed during it leaves the attempt counted; a unit started
  more than :func:`chunk_max_attempts` times is given up and fails the job.
- **Fail** (:func:`job_fail`): failed, with the message (at most 4000 characters); an
  unexpected exception's message is :func:`job_error_text` (type, message, the traceback's
  last lines). **Finish** (:func:`job_finish`): done, ``done = total`` unless told otherwise.
  Both leave a job that is no longer active as it is (a cancelled job stays cancelled).

What a job's end means for its study (a failed preparation fails the study) is the caller's:
:mod:`studies.pipeline.stages` for prepare jobs, :mod:`studies.pipeline.evaluation` for evaluate
jobs. No torch; the web process imports it.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from studies.models import Job, Study

logger = logging.getLogger(__name__)

#: The statuses of a job that still runs (or waits to).
ACTIVE = (Job.Status.PENDING, Job.Status.RUNNING)
#: ``Job.error`` keeps at most this many characters, ``Job.stage`` at most 64.
ERROR_MAX = 4000


class PrepareRefused(ValueError):
    """A study step (prepare, resume, publish, pause, close) cannot be taken now; the message says why."""


def job_open(*, study: Study, kind: str) -> tuple[Job, bool]:
    """The study's active job of ``kind``, or a new pending one (stage ``queued``): ``(job, opened)``.

    Call it inside a transaction that holds the study's row lock (``select_for_update``), so two
    requests cannot both open one.
    """
    running = study.jobs.filter(kind=kind, status__in=ACTIVE).first()
    if running is not None:
        return running, False
    return Job.objects.create(study=study, kind=kind, status=Job.Status.PENDING, stage="queued"), True


def job_active(job_id: int) -> Job | None:
    """The job (with its study) if it is still active, else None."""
    job = Job.objects.select_related("study").filter(pk=job_id).first()
    if job is None or job.status not in ACTIVE:
        return None
    return job


def job_start(*, job_id: int, stage: str) -> None:
    """Mark the job running at ``stage`` from now (its rate and ETA count from here); clears its error."""
    now = timezone.now()
    Job.objects.filter(pk=job_id).update(status=Job.Status.RUNNING, stage=stage[:64], started_at=now, error="",
                                         updated_at=now)


def job_stage(*, job_id: int, stage: str, **counts: int) -> None:
    """Record the job's stage (and ``done``/``total`` when given); touches ``updated_at`` (the sweep's clock)."""
    Job.objects.filter(pk=job_id).update(stage=stage[:64], updated_at=timezone.now(), **counts)


def chunk_max_attempts() -> int:
    """How many times a unit of work may start before it fails its job (``XAISTUDY_CHUNK_MAX_ATTEMPTS``, >= 1)."""
    return max(1, int(settings.XAISTUDY_CHUNK_MAX_ATTEMPTS))


def job_attempt_start(*, job_id: int, key: str) -> int | None:
    """Count one more start of the job's unit ``key`` and return the count (None if the job is
    no longer active).

    Runs in its own transaction, committed before the caller does any heavy work, so that a
    worker killed during the computation leaves the attempt counted. (Inside an outer atomic
    block, as in a non-transactional test, it is only a savepoint.) The job row is locked, so
    concurrent chunks of one job never lose each other's counts.
    """
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_id)
        if job.status not in ACTIVE:
            return None
        attempts = dict(job.chunk_attempts or {})
        attempts[key] = int(attempts.get(key, 0)) + 1
        job.chunk_attempts = attempts
        job.save(update_fields=["chunk_attempts", "updated_at"])
    return attempts[key]


def job_error_text(exc: BaseException) -> str:
    """A failed job's message for an unexpected exception: ``Type: message`` and the traceback's last lines."""
    tail = "".join(traceback.format_exception(exc)[-3:])
    return f"{type(exc).__name__}: {exc}\n{tail}"


def job_fail(*, job_id: int, message: str, stage: str | None = None) -> Job | None:
    """Mark an active job failed with ``message`` (and ``stage`` when given); returns it, or None
    when the job was no longer active (left as it is)."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_id)
        if job.status not in ACTIVE:
            return None
        job.status, job.error, job.finished_at = Job.Status.FAILED, message[:ERROR_MAX], timezone.now()
        fields = ["status", "error", "finished_at", "updated_at"]
        if stage is not None:
            job.stage = stage[:64]
            fields.append("stage")
        job.save(update_fields=fields)
    logger.warning("%s job %s failed: %s", job.kind, job_id, message)
    return job


def job_finish(*, job_id: int, stage: str = "done", done: int | None = None, total: int | None = None) -> bool:
    """Mark an active job done at ``stage``; ``total`` and ``done`` as given (default: the job's
    total, and ``done = total``). False when the job was no longer active (left as it is)."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_id)
        if job.status not in ACTIVE:
            return False
        job.total = job.total if total is None else total
        job.done = job.total if done is None else done
        job.status, job.stage, job.finished_at = Job.Status.DONE, stage[:64], timezone.now()
        job.save(update_fields=["status", "stage", "finished_at", "done", "total", "updated_at"])
    return True


@dataclass(frozen=True)
class JobProgress:
    """What the admin shows for a job."""

    done: int
    total: int
    rate_per_s: float | None
    eta_s: float | None
    elapsed_s: float | None

    def describe(self) -> str:
        parts = [f"{self.done}/{self.total}"]
        if self.rate_per_s:
            parts.append(f"{self.rate_per_s:.2f}/s")
        if self.eta_s is not None:
            parts.append(f"ETA {_duration(self.eta_s)}")
        elif self.elapsed_s is not None:
            parts.append(f"took {_duration(self.elapsed_s)}")
        return ", ".join(parts)


def job_progress(job: Job) -> JobProgress:
    """done/total, rate since the job (re)started, and the remaining time at that rate."""
    if job.started_at is None:
        return JobProgress(job.done, job.total, None, None, None)
    end = job.finished_at or timezone.now()
    elapsed = max((end - job.started_at).total_seconds(), 1e-3)
    rate = job.done / elapsed if job.done else None
    eta = None
    if job.status in ACTIVE and rate:
        eta = max(job.total - job.done, 0) / rate
    return JobProgress(job.done, job.total, rate, eta, elapsed)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
