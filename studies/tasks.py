"""Celery tasks: thin wrappers that take ids and call one service each.

Tasks whose name starts with ``gpu_`` are routed to the ``gpu`` queue (see xaistudy/celery.py).
Only idempotent tasks set ``acks_late``.
"""

from __future__ import annotations

from celery import shared_task

from studies.services.storage import image_set_verify


@shared_task(name="studies.tasks.verify_image_set", acks_late=True)
def verify_image_set(image_set_id: int) -> dict[str, object]:
    """Re-hash every stored image of a set (read-only, so safe to run twice)."""
    report = image_set_verify(image_set_id=image_set_id)
    return {"checked": report.checked, "missing": report.missing, "mismatched": report.mismatched}


# --- study preparation (studies/pipeline/prepare.py opens the job; stages.py does the work) --
# Predict and chunk tasks run on the gpu queue; they import torch only inside the service.
# Chunks are idempotent, so they are acked late and requeued when their worker child dies
# (reject_on_worker_lost); a worker that dies whole is covered by job_resume / prepare_sweep.


@shared_task(name="studies.tasks.gpu_prepare_predict", acks_late=True, reject_on_worker_lost=True)
def gpu_prepare_predict(job_id: int) -> None:
    """Stage 1: check methods and models, store top-k predictions; then plan."""
    from studies.pipeline.stages import prepare_predict_stage

    if prepare_predict_stage(job_id=job_id):
        prepare_plan.delay(job_id)


@shared_task(name="studies.tasks.prepare_plan", acks_late=True)
def prepare_plan(job_id: int) -> int:
    """Stage 2: plan the items and enqueue one gpu chunk per batch of images with empty slots."""
    from studies.pipeline.stages import prepare_plan_stage

    chunks = prepare_plan_stage(job_id=job_id) or []
    for chunk in chunks:
        gpu_prepare_chunk.delay(job_id, chunk.model_id, list(chunk.image_ids))
    return len(chunks)


@shared_task(name="studies.tasks.gpu_prepare_chunk", acks_late=True, reject_on_worker_lost=True)
def gpu_prepare_chunk(job_id: int, model_id: int, image_ids: list[int]) -> int:
    """Stage 3: explain, render and store one chunk (idempotent)."""
    from studies.pipeline.stages import prepare_chunk_stage

    return prepare_chunk_stage(job_id=job_id, model_id=model_id, image_ids=image_ids) or 0


@shared_task(name="studies.tasks.prepare_sweep")
def prepare_sweep() -> list[int]:
    """Resume prepare jobs that stopped moving (their worker died); schedule it with beat."""
    from studies.pipeline.prepare import jobs_sweep

    return jobs_sweep()


@shared_task(name="studies.tasks.sweep_leases")
def sweep_leases() -> int:
    """Expire overdue trial leases and return their slots (Celery beat, every minute)."""
    from studies.services.allocation import leases_sweep

    return leases_sweep()


# --- automatic evaluation (studies/pipeline/evaluation.py) ----------------------------------


@shared_task(name="studies.tasks.gpu_evaluate_study", acks_late=True, reject_on_worker_lost=True)
def gpu_evaluate_study(job_id: int) -> str:
    """Compute and store every automatic metric of the job's study (idempotent: rows are upserted)."""
    from studies.pipeline.evaluation import evaluation_job_run

    return evaluation_job_run(job_id=job_id).status
