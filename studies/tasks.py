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


# --- crowd platforms (issue #17; studies/services/mturk.py, prolific.py, ledger.py) -------------
# Default queue. Every write goes through the payment ledger (a row committed under an idempotency
# key before the call, reconciled against the platform on a retry), so running one of these twice
# calls nothing twice: that is why they are acked late.


@shared_task(name="studies.tasks.platform_hit_create", acks_late=True)
def platform_hit_create(study_id: int, **options: object) -> int:
    """Create the study's MTurk HIT (``mturk.hit_create``; ``options``: reward_cents, assignments,
    lifetime_s, duration_s, ...). Idempotent through the ledger: the key is the HIT's
    ``UniqueRequestToken``, a retry finds the HIT with ``ListHITs``. Returns the ledger row's id."""
    from studies.models import Study
    from studies.services import mturk

    return mturk.hit_create(study=Study.objects.get(pk=study_id), **options).pk  # type: ignore[arg-type]


@shared_task(name="studies.tasks.platform_prolific_draft", acks_late=True)
def platform_prolific_draft(study_id: int, **options: object) -> int:
    """Create the study's Prolific draft (``prolific.study_draft_create``; ``options``: reward_cents,
    places, estimated_minutes, ...). Idempotent through the ledger: a retry finds the draft by its
    ``internal_name`` instead of creating another. Returns the ledger row's id."""
    from studies.models import Study
    from studies.services import prolific

    return prolific.study_draft_create(study=Study.objects.get(pk=study_id), **options).pk  # type: ignore[arg-type]


#: Prolific's rejection message for a failed attention check (Prolific asks for 100 characters or more).
PROLIFIC_REJECT_MESSAGE = (
    "Your submission was rejected because it failed the study's attention checks: the catch trials, "
    "which have an obvious answer, were answered wrongly too often."
)


def prolific_decide(*, study: object) -> dict[str, list[int]]:
    """Approve and reject the study's Prolific submissions by ``exports.payment_decisions`` (approve
    those it approves, reject those it rejects as ``FAILED_CHECK``; ``review`` and ``screened_out``
    are left to the researcher). Each call goes through the ledger."""
    from studies.models import Participant
    from studies.services import prolific
    from studies.services.exports import exclusion_flags_compute, payment_decisions

    decisions = payment_decisions(study=study, flags=exclusion_flags_compute(study=study))  # type: ignore[arg-type]
    people = Participant.objects.in_bulk([d.participant_id for d in decisions])
    done: dict[str, list[int]] = {"approve": [], "reject": []}
    for decision in decisions:
        participant = people[decision.participant_id]
        if participant.platform != "prolific":
            continue
        if decision.action == "approve":
            done["approve"].append(prolific.submission_approve(study=study, participant=participant).pk)  # type: ignore[arg-type]
        elif decision.action == "reject":
            row = prolific.submission_reject(study=study, participant=participant,  # type: ignore[arg-type]
                                             message=PROLIFIC_REJECT_MESSAGE, category="FAILED_CHECK")  # fmt: skip
            done["reject"].append(row.pk)
    return done


@shared_task(name="studies.tasks.platform_payments_decide", acks_late=True)
def platform_payments_decide(study_id: int) -> dict[str, int]:
    """Approve and reject the study's submissions on its platform by its payment decisions
    (MTurk: ``mturk.assignments_decide``; Prolific: ``prolific_decide``). Idempotent through the
    ledger: one row per participant and action, a confirmed one is not sent again. Returns the counts."""
    from studies.models import Study
    from studies.services import mturk

    study = Study.objects.get(pk=study_id)
    if study.platform == Study.Platform.MTURK:
        done = mturk.assignments_decide(study=study)
    elif study.platform == Study.Platform.PROLIFIC:
        done = prolific_decide(study=study)
    else:
        raise ValueError(f"study {study_id} recruits by plain link: nothing to approve on a platform")
    return {action: len(rows) for action, rows in done.items()}


def platform_payments_decide_enqueue(*, study_id: int) -> None:
    """Enqueue ``platform_payments_decide`` once the current transaction commits (the admin action)."""
    from django.db import transaction

    transaction.on_commit(lambda: platform_payments_decide.delay(study_id))


@shared_task(name="studies.tasks.platform_bonus_pay", acks_late=True)
def platform_bonus_pay(study_id: int, payments: dict[str, int], reason: str = "Bonus for your work on our study.") -> list[int]:
    """Pay bonuses (``payments``: MTurk assignment id or Prolific participant id -> cents;
    ``reason``: the text MTurk shows the worker).
    MTurk: ``mturk.bonus_send`` per participant (``UniqueRequestToken`` = the ledger key);
    Prolific: one ``prolific.bonuses_send`` bulk bonus, which lists what is already paid before
    paying. Idempotent through the ledger: a retry never pays twice. Returns the ledger rows' ids."""
    from studies.models import Participant, Study
    from studies.services import mturk, prolific

    study = Study.objects.get(pk=study_id)
    if study.platform == Study.Platform.PROLIFIC:
        return [prolific.bonuses_send(study=study, payments=payments).pk]
    if study.platform != Study.Platform.MTURK:
        raise ValueError(f"study {study_id} recruits by plain link: no platform to pay bonuses on")
    rows = []
    for assignment_id, cents in sorted(payments.items()):
        participant = Participant.objects.get(study=study, mturk_assignment_id=assignment_id)
        rows.append(mturk.bonus_send(participant=participant, amount_cents=int(cents), reason=reason).pk)
    return rows
