"""``manage.py simulate_crowd <study>``: pilot a study with simulated participants over HTTP."""

from __future__ import annotations

import secrets
from contextlib import ExitStack

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.test.utils import override_settings

from studies.fixtures.simulation.crowd import CrowdConfig, crowd_run, wsgi_server_running
from studies.fixtures.simulation.observers import OBSERVERS
from studies.management.arguments import study_argument
from studies.models import Study
from studies.services.audit import study_audit

#: Rate limits for the in-process server only: one simulated crowd comes from one address.
PILOT_RATE_LIMITS = {"entry": (10**6, 60), "submit": (10**6, 60), "api": (10**6, 60)}


class Command(BaseCommand):
    help = (
        "Run simulated participants (models of a person, not people) through the study's JSON API "
        "over loopback; they are flagged is_simulated. Stops after --workers participants or "
        "--time-limit seconds, then audits the study."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("study", help="study id, slug or exact name")
        parser.add_argument("--workers", type=int, default=20, help="participants to simulate (default 20)")
        parser.add_argument("--concurrency", type=int, default=4, help="participants at a time (default 4)")
        parser.add_argument("--observer", default="random", choices=sorted(OBSERVERS))
        parser.add_argument("--base-url", default="", help="a running server (default: start one on 127.0.0.1)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--time-limit", type=float, default=600.0, help="seconds (default 600)")
        parser.add_argument("--no-audit", action="store_true", help="skip audit_study afterwards")

    def handle(self, *args: object, **options: object) -> None:
        study = study_argument(str(options["study"]))
        workers, concurrency = int(options["workers"]), int(options["concurrency"])  # type: ignore[arg-type]
        if not 1 <= workers <= 100_000 or not 1 <= concurrency <= 1000:
            raise CommandError("--workers must be 1..100000 and --concurrency 1..1000")
        if study.status != Study.Status.LIVE:
            raise CommandError(f"study {study.name!r} is {study.status}, not live: publish it first")
        with ExitStack() as stack:
            base_url = str(options["base_url"] or "")
            if not base_url:
                stack.enter_context(override_settings(XAISTUDY_RATE_LIMITS=PILOT_RATE_LIMITS))
                base_url = stack.enter_context(wsgi_server_running())
            config = CrowdConfig(
                base_url=base_url if base_url.endswith("/") else base_url + "/", study_slug=study.slug,
                observer=str(options["observer"]), workers=workers, concurrency=concurrency,
                seed=int(options["seed"]), time_limit_s=float(options["time_limit"]),  # type: ignore[arg-type]
                platform=study.platform, run_id=secrets.token_hex(4).upper(),
            )  # fmt: skip
            self.stdout.write(f"simulating {workers} {config.observer} participants on {base_url} ...")
            report = crowd_run(config, on_progress=lambda line: self.stderr.write(line))
        for line in report.lines():
            self.stdout.write(line)
        if not options["no_audit"]:
            audit = study_audit(study_id=study.pk)
            for problem in audit.problems:
                self.stderr.write(str(problem))
            self.stdout.write(f"audit: {audit.summary()}")
            if not audit.ok:
                raise CommandError("audit_study found problems (listed above)")
