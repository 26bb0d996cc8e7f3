"""``manage.py demo``: build both worlds, prepare four studies, set them live, serve on localhost.

A second run reuses everything that exists (worlds cached, rows found by name, stimuli by key).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from studies.fixtures.accounts import demo_admin_ensure
from studies.models import Job, Study


class ProgressBar:
    """A one-line terminal bar: ``label [#####-----] done/total rate ETA``."""

    def __init__(self, label: str, stream: TextIO, width: int = 28):
        self.label, self.stream, self.width = label, stream, width
        self.started = time.monotonic()
        self.tty = stream.isatty()

    def update(self, done: int, total: int, *, final: bool = False) -> None:
        if not self.tty and not final:
            return
        elapsed = time.monotonic() - self.started
        filled = int(self.width * done / total) if total else self.width
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = f" ETA {int((total - done) / rate)}s" if rate and done < total else f" {elapsed:.1f}s"
        line = f"{self.label:<58} [{'#' * filled}{'-' * (self.width - filled)}] {done}/{total} {rate:.1f}/s{eta}"
        self.stream.write(("\r" if self.tty else "") + line + ("\n" if final else ""))
        self.stream.flush()


def _follow(job: Job, bar: ProgressBar) -> Job:
    """Poll a job row that Celery workers advance, drawing its progress, until it stops."""
    while job.status in (Job.Status.PENDING, Job.Status.RUNNING):
        time.sleep(0.5)
        job.refresh_from_db()
        bar.update(job.done, job.total)
    return job


#: Demo studies whose explanations are evaluated automatically (the photo one with --evaluate-photos).
EVALUATED_STUDIES = ("What do you see? (synthetic scenes)",)
EVALUATED_PHOTO_STUDIES = ("What do you see? (photos, EfficientNet-Lite0)",)


class Command(BaseCommand):
    help = "Set up the demo (admin login, both worlds, four prepared live studies) and serve it on localhost."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--no-serve", action="store_true", help="set everything up, then exit")
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-evaluate", action="store_true", help="skip the automatic evaluation")
        parser.add_argument("--evaluate-photos", action="store_true",
                            help="also evaluate the photo discrimination study (minutes on a CPU)")

    def handle(self, *args: object, **options: object) -> None:
        from studies.fixtures.worlds import demo_studies_ensure, photo_world_ensure, synthetic_world_ensure
        from studies.services.lifecycle import PrepareRefused, study_publish

        started = time.monotonic()
        call_command("migrate", interactive=False, verbosity=0)
        username, password = demo_admin_ensure(username="admin", password_file=settings.VAR_DIR / "demo-admin-password.txt")
        base = f"http://{options['host']}:{options['port']}"
        self.stdout.write(f"admin login: {username} / {password}")
        synthetic = self._step("synthetic world (2 CNNs, scenes)", synthetic_world_ensure)
        try:
            photos = self._step("photo world (EfficientNet-Lite0/Lite2, composites)", photo_world_ensure)
        except ImportError as exc:  # the photo world module is optional until it ships
            self.stderr.write(f"photo world skipped: {exc}")
            photos = None
        evaluated = () if options["no_evaluate"] else EVALUATED_STUDIES + (
            EVALUATED_PHOTO_STUDIES if options["evaluate_photos"] else ())
        for study in demo_studies_ensure(synthetic=synthetic, photos=photos):
            self._prepare(study)
            study.refresh_from_db()
            if study.status == Study.Status.READY:
                try:
                    study_publish(study_id=study.pk)
                except PrepareRefused as exc:  # e.g. the validity audit failed: it stays ready, not live
                    self.stderr.write(f"{study.name}: not published: {exc}")
            if study.name in evaluated:
                self._evaluate(study)
        self.stdout.write(f"demo ready in {time.monotonic() - started:.0f}s")
        for study in Study.objects.filter(status=Study.Status.LIVE).order_by("name"):
            self.stdout.write(f"  {study.name}: {base}/s/{study.slug}/")
        self.stdout.write(f"admin: {base}/admin/  login: {username} / {password}")
        if options["no_serve"]:
            return
        self.stdout.write(f"serving on {base}/ (Ctrl-C to stop)")
        call_command("runserver", f"{options['host']}:{options['port']}", use_reloader=False)

    def _step(self, label: str, action: Callable[[], object]) -> object:
        self.stdout.write(f"{label} ...", ending="")
        self.stdout.flush()
        began = time.monotonic()
        result = action()
        reused = getattr(result, "reused", False)
        self.stdout.write(f" {'reused' if reused else 'built'} ({time.monotonic() - began:.1f}s)")
        return result

    def _prepare(self, study: Study) -> None:
        from studies.pipeline.prepare import prepare_inline, study_prepare

        if study.status in (Study.Status.LIVE, Study.Status.CLOSED):
            self.stdout.write(f"{study.name}: {study.status} (reused)")
            return
        bar = ProgressBar(study.name, sys.stdout)
        if settings.CELERY_TASK_ALWAYS_EAGER:
            job = prepare_inline(study_id=study.pk, on_progress=lambda j: bar.update(j.done, j.total))
        else:  # a broker is configured: the Celery workers do it; follow the job row
            job = _follow(study_prepare(study_id=study.pk), bar)
        bar.update(job.done, job.total, final=True)
        if job.status != Job.Status.DONE:
            self.stderr.write(f"{study.name}: preparation {job.status}: {job.error}")

    def _evaluate(self, study: Study) -> None:
        from studies.pipeline.evaluation import (
            evaluation_inline,
            evaluation_table_lines,
            study_evaluation_current,
            study_evaluation_start,
        )

        label = f"evaluate: {study.name}"
        if study_evaluation_current(study=study):
            self.stdout.write(f"{label}: reused (manage.py evaluate_study to recompute)")
            return
        bar = ProgressBar(label, sys.stdout)
        if settings.CELERY_TASK_ALWAYS_EAGER:
            job = evaluation_inline(study_id=study.pk, on_progress=lambda _stage, done, total: bar.update(done, total))
        else:
            job = _follow(study_evaluation_start(study_id=study.pk), bar)
        bar.update(job.done, job.total, final=True)
        if job.status != Job.Status.DONE:
            self.stderr.write(f"{label}: {job.status}: {job.error}")
            return
        for line in evaluation_table_lines(study=study):
            self.stdout.write("  " + line)
