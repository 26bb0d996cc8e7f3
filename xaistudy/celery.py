"""The Celery application.

Queues: ``gpu`` (prediction and explanation chunks; one task at a time per worker, prefetch 1)
and ``default`` (bookkeeping: planning, sweeping leases, exports). Tasks take ids and call
services; only idempotent tasks set ``acks_late`` (they declare it themselves). Every task's
hard time limit stays below the broker's visibility timeout, so a running task is never
redelivered to a second worker.
"""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "xaistudy.settings")

app = Celery("xaistudy")
app.config_from_object("django.conf:settings", namespace="CELERY")


def _configure(application: Celery) -> None:
    from django.conf import settings

    visibility = settings.CELERY_VISIBILITY_TIMEOUT_S
    if settings.CELERY_TASK_TIME_LIMIT_S >= visibility:
        raise ValueError("CELERY_TASK_TIME_LIMIT_S must stay below CELERY_VISIBILITY_TIMEOUT_S")
    application.conf.update(
        task_queues=(Queue("default"), Queue("gpu")),
        task_default_queue="default",
        task_routes={"studies.tasks.gpu_*": {"queue": "gpu"}},
        task_time_limit=settings.CELERY_TASK_TIME_LIMIT_S,
        task_soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT_S,
        worker_prefetch_multiplier=1,
        task_acks_late=False,
        task_reject_on_worker_lost=False,
        broker_transport_options={"visibility_timeout": visibility},
        result_backend_transport_options={"visibility_timeout": visibility},
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        timezone="UTC",
        beat_schedule={
            "sweep-expired-leases": {"task": "studies.tasks.sweep_leases", "schedule": 60.0},
            "resume-stalled-prepare-jobs": {"task": "studies.tasks.prepare_sweep", "schedule": 300.0},
        },
    )


_configure(app)
app.autodiscover_tasks()
