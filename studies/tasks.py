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


@shared_task(name="studies.tasks.sweep_leases")
def sweep_leases() -> int:
    """Expire overdue trial leases and return their slots (Celery beat, every minute)."""
    from studies.services.allocation import leases_sweep

    return leases_sweep()
