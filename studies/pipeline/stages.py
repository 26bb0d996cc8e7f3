"""The preparation's stages, run by the Celery tasks (``studies/tasks.py``) or inline.

Each stage takes a prepare job's id, does nothing when the job is no longer active, and turns
bad input (:class:`~studies.lib.scenes.PrepareInputError`) and unexpected errors into a failed
job with the cause (:func:`_guarded`), the study then ``failed``. The order, what each does and
the crash-safety rules are in :mod:`studies.pipeline.prepare`.

This module imports neither :mod:`studies.pipeline.prepare` nor ``studies.tasks`` (the tasks
chain the stages), and torch only inside the gpu stages (:mod:`studies.pipeline.gpu.explain_runner`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from django.db import transaction

from studies.designs import design_for
from studies.lib.scenes import PrepareInputError
from studies.models import ClassifierModel, Image, Item, Job, Prediction, Stimulus, Study
from studies.pipeline import jobs
from studies.pipeline.plan import (
    Chunk,
    Slot,
    chunk_slots,
    display_size,
    item_slots,
    items_link,
    obvious_select,
    slot_counts,
    study_chunks,
    study_options,
    study_plan,
)
from studies.pipeline.stimuli import StimulusKey, base_method, stimuli_find, stimulus_store

logger = logging.getLogger(__name__)


def job_fail(*, job_id: int, message: str) -> None:
    """Mark the prepare job failed with ``message`` and its study ``failed`` (fixable, re-preparable)."""
    with transaction.atomic():
        job = jobs.job_fail(job_id=job_id, message=message)
        if job is not None:
            Study.objects.filter(pk=job.study_id).update(status=Study.Status.FAILED)


def _guarded(stage: Callable[..., object]) -> Callable[..., object]:
    """Turn bad input and unexpected errors into a failed job with the cause, instead of a crash."""

    @functools.wraps(stage)
    def run(*, job_id: int, **kwargs: object) -> object:
        try:
            return stage(job_id=job_id, **kwargs)
        except PrepareInputError as exc:
            job_fail(job_id=job_id, message=str(exc))
        except Exception as exc:
            job_fail(job_id=job_id, message=jobs.job_error_text(exc))
        return None

    return run


@_guarded
def prepare_predict_stage(*, job_id: int) -> bool:
    """Check methods and models; store missing top-k predictions. Returns False if the job is not active."""
    from studies.pipeline.gpu import explain_runner

    job = jobs.job_active(job_id)
    if job is None:
        return False
    jobs.job_start(job_id=job_id, stage="predict")
    study = job.study
    explain_runner.methods_check(study.methods)
    images = list(study.image_set.images.order_by("pk"))
    if not images:
        raise PrepareInputError(f"image set {study.image_set.name!r} has no images")
    top_k = study_options(study).top_k
    for model in design_for(study).study_models(study):
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
    job = jobs.job_active(job_id)
    if job is None:
        return None
    jobs.job_stage(job_id=job_id, stage="plan")
    study = job.study
    summary = study_plan(study=study)
    if summary.main == 0:
        raise PrepareInputError(design_for(study).no_items_message(study))
    _unlink_stale(study)
    chunks = study_chunks(study)
    done, total = slot_counts(study)
    jobs.job_stage(job_id=job_id, stage=f"explain ({len(chunks)} chunks)", done=done, total=total)
    if not chunks:
        job_finish_if_complete(job_id=job_id)
    return chunks


def _unlink_stale(study: Study) -> None:
    items = list(study.items.select_related("stimulus_a", "stimulus_b", "stimulus_c", "stimulus_d"))
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
    from studies.pipeline.gpu import explain_runner

    job = jobs.job_active(job_id)
    if job is None:
        return None
    study = job.study
    chunk = Chunk(model_id, tuple(image_ids))
    slots = chunk_slots(study, chunk)
    if not slots:
        return 0
    existing = _existing(slots)
    if len(existing) == len({s.key for s in slots}):
        items_link(study, [(s, existing[s.key].pk) for s in slots])
        job_finish_if_complete(job_id=job_id)
        return 0
    model = next(m for m in design_for(study).study_models(study) if m.pk == model_id)
    attempt = chunk_attempt_start(job_id=job_id, chunk=chunk)
    if attempt is None:  # cancelled or failed meanwhile
        return None
    limit = jobs.chunk_max_attempts()
    if attempt > limit:
        job_fail(job_id=job_id, message=_poisoned_message(model=model, chunk=chunk, slots=slots, attempts=limit))
        return None
    images = {image.pk: image for image in Image.objects.filter(pk__in=image_ids)}
    options = study_options(study)
    # The whole chunk, every target and method (catch and practice maps too), in one call: a rerun
    # is byte-identical.
    order = sorted({s.key.image_id for s in slots})
    targets = [sorted({s.key.target_class for s in slots if s.key.image_id == i}) for i in order]
    methods = list(dict.fromkeys(s.key.method for s in slots))
    rendered = explain_runner.explain_chunk(
        model, [images[i] for i in order], targets, methods,
        options={m: options.method_options(m) for m in dict.fromkeys(base_method(m) for m in methods)},
        display_size=display_size(study, options), exact=options.exact, overlay_base=options.overlay_base,
        class_map=options.class_map or None,
        wanted={(s.key.image_id, s.key.method, s.key.target_class) for s in slots},
    )
    created = 0
    links: list[tuple[Slot, int]] = []
    for slot in slots:
        if jobs.job_active(job_id) is None:  # cancelled meanwhile: stop writing
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


def _existing(slots: list[Slot]) -> dict[StimulusKey, Stimulus]:
    """The stored stimuli of the slots' keys, by key, in one query (:func:`~studies.pipeline.stimuli.stimuli_find`)."""
    return stimuli_find(slot.key for slot in slots)


def chunk_key(chunk: Chunk) -> str:
    """The chunk's key in ``Job.chunk_attempts``: ``"<model id>:<image id>,<image id>,..."``."""
    return f"{chunk.model_id}:{','.join(str(i) for i in chunk.image_ids)}"


def chunk_attempt_start(*, job_id: int, chunk: Chunk) -> int | None:
    """Count one more start of ``chunk``; see :func:`~studies.pipeline.jobs.job_attempt_start`."""
    return jobs.job_attempt_start(job_id=job_id, key=chunk_key(chunk))


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


def job_finish_if_complete(*, job_id: int) -> bool:
    """Recount ``done`` from the items; the call that sees every slot filled finishes the job."""
    with transaction.atomic():
        job = Job.objects.select_for_update().select_related("study").get(pk=job_id)
        if job.status not in jobs.ACTIVE:
            return False
        done, total = slot_counts(job.study)
        finished = done >= total
        if not finished:
            job.done, job.total = done, total
            job.save(update_fields=["done", "total", "updated_at"])
            return False
        # every map exists: keep the catch and practice candidates that read most plainly
        selection = obvious_select(study=job.study)
        if any(selection.below_threshold.values()):
            logger.warning("study %s: obvious items below the threshold: %s", job.study_id, selection)
        done, total = slot_counts(job.study)
        jobs.job_finish(job_id=job_id, stage="done", done=done, total=total)
        Study.objects.filter(pk=job.study_id, status=Study.Status.PREPARING).update(status=Study.Status.READY)
    return True
