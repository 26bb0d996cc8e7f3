"""``manage.py prepare_study``: prepare, resume or cancel a study's stimuli from the shell."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from studies.lib.scenes import PrepareInputError
from studies.management.arguments import study_argument
from studies.models import Job
from studies.pipeline.jobs import PrepareRefused, job_progress
from studies.pipeline.prepare import job_cancel, job_resume, prepare_inline, study_prepare


class Command(BaseCommand):
    help = "Prepare a study (enqueue on the Celery queues, or --inline in this process); --resume / --cancel its job."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("study", help="study id, slug or exact name")
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--inline", action="store_true", help="run every stage here (no broker needed)")
        group.add_argument("--resume", action="store_true", help="resume the latest prepare job")
        group.add_argument("--cancel", action="store_true", help="cancel the running prepare job")

    def handle(self, *args: object, **options: object) -> None:
        study = study_argument(str(options["study"]))
        latest = study.jobs.filter(kind=Job.Kind.PREPARE).order_by("-created_at").first()
        try:
            if options["cancel"]:
                if latest is None:
                    raise CommandError(f"study {study.name!r} has no prepare job")
                job = job_cancel(job_id=latest.pk)
            elif options["resume"]:
                if latest is None:
                    raise CommandError(f"study {study.name!r} has no prepare job")
                job = job_resume(job_id=latest.pk)
            elif options["inline"]:
                job = prepare_inline(study_id=study.pk)
            else:
                job = study_prepare(study_id=study.pk)
        except (PrepareRefused, PrepareInputError) as exc:
            raise CommandError(str(exc)) from exc
        job.refresh_from_db()
        self.stdout.write(f"job {job.public_id}: {job.status} {job.stage} {job_progress(job).describe()}")
        if job.status == Job.Status.FAILED:
            raise CommandError(job.error)

