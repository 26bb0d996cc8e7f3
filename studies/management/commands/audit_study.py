"""``manage.py audit_study <study>``: reconcile a study's books; exit 1 and name each problem."""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandParser

from studies.management.arguments import study_argument
from studies.services.audit import study_audit


class Command(BaseCommand):
    help = (
        "Check that every acknowledged submit has exactly one response, quotas and counters hold, "
        "no worker saw an item twice and stimulus files match their hashes. Exits 1 on any problem."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("study", help="study id, slug or exact name")
        parser.add_argument("--skip-files", action="store_true", help="do not re-hash stimulus files")

    def handle(self, *args: object, **options: object) -> None:
        study = study_argument(str(options["study"]))
        report = study_audit(study_id=study.pk, check_files=not options["skip_files"])
        for problem in report.problems:
            self.stderr.write(str(problem))
        self.stdout.write(f"{study.name!r}: {report.summary()}")
        if not report.ok:
            sys.exit(1)
