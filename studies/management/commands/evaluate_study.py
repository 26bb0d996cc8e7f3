"""``manage.py evaluate_study <study>``: compute the automatic metrics of a study's explanations.

Runs here by default (no broker needed) and prints the table; ``--queue`` enqueues the
``gpu_evaluate_study`` task instead and returns at once (follow the job in the admin).
"""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError, CommandParser

from studies.management.arguments import study_argument
from studies.models import Job
from studies.pipeline.evaluation import (
    EvaluationRefused,
    evaluation_inline,
    evaluation_table_lines,
    study_evaluation_start,
)
from studies.pipeline.jobs import job_progress


class Command(BaseCommand):
    help = "Evaluate a study's explanations (deletion/insertion, occlusion correlation, localization, sanity, controls)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("study", help="study id, slug or exact name")
        parser.add_argument("--queue", action="store_true", help="enqueue on the gpu queue instead of running here")
        parser.add_argument("--steps", type=int, default=None, help="deletion/insertion steps (default 16)")
        parser.add_argument("--sanity-units", type=int, default=None, help="units in the sanity cascade (default 4)")
        parser.add_argument("--max-images", type=int, default=None, help="evaluate only the first N images")

    def handle(self, *args: object, **options: object) -> None:
        study = study_argument(str(options["study"]))
        started = time.monotonic()
        try:
            if options["queue"]:
                job = study_evaluation_start(study_id=study.pk)
                self.stdout.write(f"job {job.public_id}: {job.status} (queued on the gpu queue)")
                return
            job = evaluation_inline(study_id=study.pk, steps=options["steps"], sanity_units=options["sanity_units"],
                                    max_images=options["max_images"])
        except EvaluationRefused as exc:
            raise CommandError(str(exc)) from exc
        if job.status == Job.Status.FAILED:
            raise CommandError(job.error)
        self.stdout.write(f"job {job.public_id}: {job.status} {job.stage} {job_progress(job).describe()}")
        for line in evaluation_table_lines(study=study):
            self.stdout.write(line)
        self.stdout.write(f"evaluation results stored in {time.monotonic() - started:.1f}s")
