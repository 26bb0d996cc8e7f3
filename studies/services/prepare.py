"""Preparing a study: predict, plan items, explain and render every stimulus, publish.

Pipeline (each stage is a function here; Celery tasks in ``studies/tasks.py`` are thin):

1. :func:`study_prepare` (web/admin/command): opens a ``Job`` (``prepare``), sets the study to
   ``preparing`` and enqueues ``gpu_prepare_predict`` after the transaction commits.
2. :func:`prepare_predict_stage` (gpu queue): checks the methods, loads every model (weights
   that do not fit the architecture and unknown CAM layers fail here, naming the model), and
   stores the top-k ``Prediction`` of each model for each image that lacks one (batched).
3. :func:`prepare_plan_stage` (default queue): plans the items (:mod:`studies.services.plan`),
   unlinks stimuli whose settings changed, sets ``Job.total`` and returns the chunks that still
   have empty slots; the task enqueues one ``gpu_prepare_chunk`` per chunk.
4. :func:`prepare_chunk_stage` (gpu queue, ``acks_late`` + ``reject_on_worker_lost``): one
   ``explain`` call for all methods of the chunk, PNGs written atomically under content
   addresses, ``Stimulus`` rows created with ``get_or_create``, the items linked; then the job's
   ``done`` is recounted from the database (never incremented, so a rerun cannot double count)
   and the last chunk to finish keeps the plainest catch and practice candidates
   (:func:`~studies.services.plan.obvious_select`, which deletes the others) and marks the job
   ``done`` and the study ``ready``.

Crash safety: a chunk whose worker dies is either redelivered (child killed: Celery rejects
the message because of ``reject_on_worker_lost``) or, when the whole worker died, re-enqueued
by :func:`job_resume` (admin "resume", ``manage.py prepare_study --resume``, or the
``prepare_sweep`` task for jobs without progress for a while). Every write is idempotent, so a
chunk that runs twice changes nothing the second time.

Poisoned chunks: a chunk whose computation kills its worker every time (out of memory, a
segfault in a native kernel) would be redelivered forever. Each start of a chunk's computation
is therefore counted in ``Job.chunk_attempts`` in its own committed transaction *before* the
heavy work (:func:`chunk_attempt_start`), so a worker killed right after still counts. Rule:
with ``limit = settings.XAISTUDY_CHUNK_MAX_ATTEMPTS`` (default 3), start number ``limit + 1``
computes nothing and fails the job with a message naming the chunk (model, images, items,
methods) and the attempt count; later deliveries find the job failed and do nothing. A chunk
whose stimuli all exist already is linked without counting (nothing heavy runs). Resuming a
failed or cancelled job (a deliberate act: admin, ``prepare_study --resume``) starts the counts
afresh; the sweep's resume of a stalled, still active job keeps them.

Bad input (:class:`~studies.services.plan.PrepareInputError`) fails the job with its message
and sets the study to ``failed``; fixing the input and preparing again starts a new job.
"""

from __future__ import annotations

import functools
import logging
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from studies.models import ClassifierModel, Image, Item, Job, Prediction, Stimulus, Study
from studies.services.plan import (
    DEFAULT_TOP_K,
    Chunk,
    PrepareInputError,
    Slot,
    chunk_slots,
    display_size,
    exact_maps,
    item_slots,
    items_link,
    method_options,
    obvious_select,
    overlay_base,
    slot_counts,
    study_chunks,
    study_models,
    study_plan,
)
from studies.services.stimuli import base_method, stimulus_store

logger = logging.getLogger(__name__)

ACTIVE = (Job.Status.PENDING, Job.Status.RUNNING)
STALL_AFTER = timedelta(minutes=10)


class PrepareRefused(ValueError):
    """The study cannot be prepared now (live, closed); the message says why."""


# --- lifecycle (web side: no torch) ----------------------------------------------------------


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
        running = study.jobs.filter(kind=Job.Kind.PREPARE, status__in=ACTIVE).first()
        if running is not None:
            return running
        job = Job.objects.create(study=study, kind=Job.Kind.PREPARE, status=Job.Status.PENDING, stage="queued")
        study.status = Study.Status.PREPARING
        study.save(update_fields=["status"])
        if enqueue:
            transaction.on_commit(functools.partial(_enqueue_predict, job.pk, background))
    return job


def _errors_text(errors: dict[str, list[str]]) -> str:
    return "; ".join(f"{field}: {message}" for field, messages in errors.items() for message in messages)


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


# --- stages (run in Celery workers or inline; import torch lazily) ---------------------------


def _active_job(job_id: int) -> Job | None:
    job = Job.objects.select_related("study").filter(pk=job_id).first()
    if job is None or job.status not in ACTIVE:
        return None
    return job


def job_fail(*, job_id: int, message: str) -> None:
    """Mark the job failed with ``message`` and the study ``failed`` (fixable, re-preparable)."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_id)
        if job.status not in ACTIVE:
            return
        job.status, job.error, job.finished_at = Job.Status.FAILED, message[:4000], timezone.now()
        job.save(update_fields=["status", "error", "finished_at", "updated_at"])
        Study.objects.filter(pk=job.study_id).update(status=Study.Status.FAILED)
    logger.warning("prepare job %s failed: %s", job_id, message)


def _guarded(stage: Callable[..., object]) -> Callable[..., object]:
    """Turn bad input and unexpected errors into a failed job with the cause, instead of a crash."""

    @functools.wraps(stage)
    def run(*, job_id: int, **kwargs: object) -> object:
        try:
            return stage(job_id=job_id, **kwargs)
        except PrepareInputError as exc:
            job_fail(job_id=job_id, message=str(exc))
        except Exception as exc:
            tail = "".join(traceback.format_exception(exc)[-3:])
            job_fail(job_id=job_id, message=f"{type(exc).__name__}: {exc}\n{tail}")
        return None

    return run


@_guarded
def prepare_predict_stage(*, job_id: int) -> bool:
    """Check methods and models; store missing top-k predictions. Returns False if the job is not active."""
    from studies.services import explain_runner

    job = _active_job(job_id)
    if job is None:
        return False
    Job.objects.filter(pk=job_id).update(status=Job.Status.RUNNING, stage="predict", started_at=timezone.now(),
                                         updated_at=timezone.now())
    study = job.study
    explain_runner.methods_check(study.methods)
    images = list(study.image_set.images.order_by("pk"))
    if not images:
        raise PrepareInputError(f"image set {study.image_set.name!r} has no images")
    top_k = int((study.explainer_options or {}).get("top_k") or DEFAULT_TOP_K)
    for model in study_models(study):
        explain_runner.model_load(model)
        digest = model.weights_sha256 or ""
        have = set(Prediction.objects.filter(model=model, weights_sha256=digest).values_list("image_id", flat=True))
        missing = [image for image in images if image.pk not in have]
        if not missing:
            continue
        rows = [
            Prediction(model=model, image=image, weights_sha256=digest, top_classes=classes, top_scores=scores)
            for image, (classes, scores) in zip(missing, explain_runner.predict_topk(model, missing, k=top_k), strict=True)
        ]
        Prediction.objects.bulk_create(rows, ignore_conflicts=True)
    return True


@_guarded
def prepare_plan_stage(*, job_id: int) -> list[Chunk] | None:
    """Plan items, unlink stale stimuli, set ``total`` and return the chunks with empty slots."""
    job = _active_job(job_id)
    if job is None:
        return None
    Job.objects.filter(pk=job_id).update(stage="plan", updated_at=timezone.now())
    study = job.study
    summary = study_plan(study=study)
    if summary.main == 0:
        raise PrepareInputError(_no_items_message(study))
    _unlink_stale(study)
    chunks = study_chunks(study)
    done, total = slot_counts(study)
    Job.objects.filter(pk=job_id).update(stage=f"explain ({len(chunks)} chunks)", done=done, total=total,
                                         updated_at=timezone.now())
    if not chunks:
        job_finish_if_complete(job_id=job_id)
    return chunks


def _no_items_message(study: Study) -> str:
    if study.kind == Study.Kind.TRUST:
        return (f"no image of {study.image_set.name!r} is predicted correctly by both models of "
                f"{study.model_pair.name!r}; untick require_both_correct or use other images")
    return f"no image of {study.image_set.name!r} has exactly two categories"


def _unlink_stale(study: Study) -> None:
    items = list(study.items.select_related("stimulus_a", "stimulus_b"))
    for slot in item_slots(study, items):
        item = next(i for i in items if i.pk == slot.item_id)
        linked: Stimulus | None = getattr(item, f"stimulus_{slot.side}")
        if linked is None:
            continue
        actual = (linked.image_id, linked.model_id, linked.method, linked.target_class, linked.settings_hash)
        if actual != (slot.key.image_id, slot.key.model_id, slot.key.method, slot.key.target_class, slot.key.settings_hash):
            Item.objects.filter(pk=item.pk).update(**{f"stimulus_{slot.side}": None})


@_guarded
def prepare_chunk_stage(*, job_id: int, model_id: int, image_ids: list[int]) -> int | None:
    """Explain and render one chunk; returns the number of stimulus rows created."""
    from studies.services import explain_runner

    job = _active_job(job_id)
    if job is None:
        return None
    study = job.study
    chunk = Chunk(model_id, tuple(image_ids))
    slots = chunk_slots(study, chunk)
    if not slots:
        return 0
    existing = {s.key: found for s in slots if (found := _existing(s)) is not None}
    if len(existing) == len({s.key for s in slots}):
        items_link(study, [(s, existing[s.key].pk) for s in slots])
        job_finish_if_complete(job_id=job_id)
        return 0
    model = next(m for m in study_models(study) if m.pk == model_id)
    attempt = chunk_attempt_start(job_id=job_id, chunk=chunk)
    if attempt is None:  # cancelled or failed meanwhile
        return None
    limit = chunk_max_attempts()
    if attempt > limit:
        job_fail(job_id=job_id, message=_poisoned_message(model=model, chunk=chunk, slots=slots, attempts=limit))
        return None
    images = {image.pk: image for image in Image.objects.filter(pk__in=image_ids)}
    size = display_size(study)
    # The whole chunk, every target and method (catch and practice maps too), in one call: a rerun
    # is byte-identical.
    order = sorted({s.key.image_id for s in slots})
    targets = [sorted({s.key.target_class for s in slots if s.key.image_id == i}) for i in order]
    methods = list(dict.fromkeys(s.key.method for s in slots))
    options = {m: method_options(study, m) for m in dict.fromkeys(base_method(m) for m in methods)}
    rendered = explain_runner.explain_chunk(
        model, [images[i] for i in order], targets, methods, options=options, display_size=size,
        exact=exact_maps(study), overlay_base=overlay_base(study),
        class_map=(study.explainer_options or {}).get("class_map") or None,
        wanted={(s.key.image_id, s.key.method, s.key.target_class) for s in slots},
    )
    created = 0
    links: list[tuple[Slot, int]] = []
    for slot in slots:
        if _active_job(job_id) is None:  # cancelled meanwhile: stop writing
            return created
        stimulus = existing.get(slot.key)
        if stimulus is None:
            data = rendered[(slot.key.image_id, slot.key.method, slot.key.target_class)]
            stimulus, was_created = stimulus_store(key=slot.key, settings=slot.settings, data=data)
            existing[slot.key] = stimulus
            created += was_created
        links.append((slot, stimulus.pk))
    items_link(study, links)
    job_finish_if_complete(job_id=job_id)
    return created


def chunk_max_attempts() -> int:
    """How many times a chunk may start before it fails its job (``XAISTUDY_CHUNK_MAX_ATTEMPTS``, >= 1)."""
    return max(1, int(settings.XAISTUDY_CHUNK_MAX_ATTEMPTS))


def chunk_key(chunk: Chunk) -> str:
    """The chunk's key in ``Job.chunk_attempts``: ``"<model id>:<image id>,<image id>,..."``."""
    return f"{chunk.model_id}:{','.join(str(i) for i in chunk.image_ids)}"


def chunk_attempt_start(*, job_id: int, chunk: Chunk) -> int | None:
    """Count one more start of ``chunk``; see :func:`job_attempt_start`."""
    return job_attempt_start(job_id=job_id, key=chunk_key(chunk))


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


def _poisoned_message(*, model: ClassifierModel, chunk: Chunk, slots: list[Slot], attempts: int) -> str:
    items = len({s.item_id for s in slots})
    methods = list(dict.fromkeys(base_method(s.key.method) for s in slots))  # engine methods (catch maps are gated ones)
    names = dict(Image.objects.filter(pk__in=chunk.image_ids).values_list("pk", "original_name"))
    images = ", ".join(f"{i} ({names.get(i, '?')})" for i in chunk.image_ids)
    return (
        f"chunk {chunk_key(chunk)} of model {model.name!r} "
        f"({len(chunk.image_ids)} images, {items} items, {len(methods)} methods, {len(slots)} stimuli) "
        f"was started {attempts} times and never finished; not computed again\n"
        f"Its worker was lost on every attempt (killed, e.g. out of memory, or crashed), so the chunk is "
        f"given up after XAISTUDY_CHUNK_MAX_ATTEMPTS={attempts}. Images: {images}. Methods: {', '.join(methods)}. "
        f"Lower explainer_options['chunk_size'] or give the gpu worker more memory, then resume the job "
        f"(a resume starts the counts afresh)."
    )


def _existing(slot: Slot) -> Stimulus | None:
    key = slot.key
    return Stimulus.objects.filter(image_id=key.image_id, model_id=key.model_id, method=key.method,
                                   target_class=key.target_class, settings_hash=key.settings_hash).first()


def job_finish_if_complete(*, job_id: int) -> bool:
    """Recount ``done`` from the items; the call that sees every slot filled finishes the job."""
    with transaction.atomic():
        job = Job.objects.select_for_update().select_related("study").get(pk=job_id)
        if job.status not in ACTIVE:
            return False
        done, total = slot_counts(job.study)
        finished = done >= total
        if finished:  # every map exists: keep the catch and practice candidates that read most plainly
            selection = obvious_select(study=job.study)
            if any(selection.below_threshold.values()):
                logger.warning("study %s: obvious items below the threshold: %s", job.study_id, selection)
            done, total = slot_counts(job.study)
        job.done, job.total = done, total
        fields = ["done", "total", "updated_at"]
        if finished:
            job.status, job.stage, job.finished_at = Job.Status.DONE, "done", timezone.now()
            fields += ["status", "stage", "finished_at"]
            Study.objects.filter(pk=job.study_id, status=Study.Status.PREPARING).update(status=Study.Status.READY)
        job.save(update_fields=fields)
    return finished


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


class ConfigRefused(PrepareRefused):
    """The study's configuration has errors; ``errors`` maps each field to its messages."""

    def __init__(self, study_name: str, errors: dict[str, list[str]]):
        super().__init__(f"study {study_name!r} cannot go live: {_errors_text(errors)}")
        self.errors = errors


def study_publish(*, study_id: int) -> Study:
    """Set a ready study live (the worker entry then accepts participants).

    Refused (:class:`PrepareRefused`, with the reason) unless the study is ready, its
    configuration passes :func:`~studies.services.study_checks.study_config_errors` with the real
    number of main items (:class:`ConfigRefused`, by field: e.g. more trials per participant
    than main items) and its consent text has no unfilled ``[FIELD]`` (``studies.consent``), every
    main item has its stimuli, and the pre-launch validity audit passed
    or its failures were acknowledged (:func:`studies.services.validity.validity_publish_refusal`,
    which reruns a missing or stale audit first). A study that is live already stays live. A
    paused study (``ready`` with participants) is published again the same way.
    """
    from studies.consent import consent_errors
    from studies.services.study_checks import study_config_errors
    from studies.services.validity import validity_publish_refusal

    def stimuli_missing(study: Study) -> bool:
        return study.items.filter(role=Item.Role.MAIN).filter(Q(stimulus_a__isnull=True)).exists()

    def config_check(study: Study) -> None:
        n_main = study.items.filter(role=Item.Role.MAIN).count()
        errors = study_config_errors(study=study, n_main_items=n_main)
        if consent := consent_errors(study.consent_text):  # a draft may keep [PAY]; a live study may not
            errors["consent_text"] = consent
        if errors:
            raise ConfigRefused(study.name, errors)

    current = Study.objects.get(pk=study_id)
    refusal = None
    if current.status == Study.Status.READY and not stimuli_missing(current):
        config_check(current)
        refusal = validity_publish_refusal(study_id=study_id)  # reads every stimulus: outside the row lock
    with transaction.atomic():
        study = Study.objects.select_for_update().get(pk=study_id)
        if study.status not in (Study.Status.READY, Study.Status.LIVE):
            raise PrepareRefused(f"study {study.name!r} is {study.get_status_display()}; prepare it first")
        if stimuli_missing(study):
            raise PrepareRefused(f"study {study.name!r} has items without stimuli; prepare it again")
        if study.status == Study.Status.LIVE:
            return study
        config_check(study)
        if current.status != Study.Status.READY:  # it became ready meanwhile: audit now
            refusal = validity_publish_refusal(study_id=study_id)
        if refusal is not None:
            raise PrepareRefused(refusal)
        study.status = Study.Status.LIVE
        study.save(update_fields=["status"])
    return study


def study_pause(*, study_id: int) -> Study:
    """Stop new entries to a live study: it goes back to ``ready``, Publish opens it again.

    While paused the entry link refuses everyone with "This study is not open at the moment"
    (returning workers too, since entering again goes through that check); participants whose
    pages are open keep their token and may finish their trials and be paid. A paused study is
    ``ready`` with participants: the admin's live-change guard still applies to it.
    """
    with transaction.atomic():
        study = Study.objects.select_for_update().get(pk=study_id)
        if study.status != Study.Status.LIVE:
            raise PrepareRefused(f"study {study.name!r} is {study.get_status_display()}; only a live study can be paused")
        study.status = Study.Status.READY
        study.save(update_fields=["status"])
    return study


def study_close(*, study_id: int) -> Study:
    """End a study for good (``closed``): no new entries, no preparation, no publishing again.

    Participants whose pages are open may still finish (as when paused), so nobody who worked
    loses their pay; the results and exports stay. Refused while a preparation job is running
    (cancel it first). A closed study stays closed (calling this again is a no-op).
    """
    with transaction.atomic():
        study = Study.objects.select_for_update().get(pk=study_id)
        if study.status == Study.Status.CLOSED:
            return study
        if study.jobs.filter(kind=Job.Kind.PREPARE, status__in=ACTIVE).exists():
            raise PrepareRefused(f"study {study.name!r} is being prepared; cancel the preparation first")
        study.status = Study.Status.CLOSED
        study.save(update_fields=["status"])
    return study
