"""A pilot with simulated workers, started from the admin: a small bounded ``simulate_crowd``.

It serves the site on a loopback port inside the current process (``crowd.wsgi_server_running``)
and sends ``workers`` simulated participants through the real JSON API, flagged
``is_simulated``, then audits the study. Bounded to ``time_limit_s`` so an admin request returns.
"""

from __future__ import annotations

import secrets

from django.test.utils import override_settings

from studies.models import Study
from studies.services.audit import study_audit
from studies.simulation.crowd import CrowdConfig, crowd_run, wsgi_server_running

PILOT_RATE_LIMITS = {"entry": (10**6, 60), "submit": (10**6, 60), "api": (10**6, 60)}


def pilot_run(*, study_id: int, workers: int = 5, observer: str = "heatmap_reader", time_limit_s: float = 60.0) -> list[str]:
    """Run a small simulated pilot on a live study; return the report lines (audit last).

    Raises:
        ValueError: the study is not live.
    """
    study = Study.objects.get(pk=study_id)
    if study.status != Study.Status.LIVE:
        raise ValueError(f"study {study.name!r} is {study.status}, not live")
    with override_settings(XAISTUDY_RATE_LIMITS=PILOT_RATE_LIMITS), wsgi_server_running() as base_url:
        report = crowd_run(CrowdConfig(base_url=base_url, study_slug=study.slug, observer=observer, workers=workers,
                                       concurrency=1, time_limit_s=time_limit_s, platform=study.platform,
                                       run_id="P" + secrets.token_hex(3).upper()))  # fmt: skip
    audit = study_audit(study_id=study.pk)
    return [*report.lines(), f"audit: {audit.summary()}", *(str(p) for p in audit.problems)]
