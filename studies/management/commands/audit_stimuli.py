"""``manage.py audit_stimuli <study>``: the pre-launch validity audit; exit 1 when a check fails."""

from __future__ import annotations

import json
import sys

from django.core.management.base import BaseCommand, CommandParser

from studies.management.arguments import study_argument
from studies.services.validity import study_validity_acknowledge, study_validity_audit


class Command(BaseCommand):
    help = (
        "Can a worker answer from anything but the explanation? Measures stimulus format and file size per "
        "method, category position balance, whether catch trials can be told from main trials by simple "
        "picture statistics, a heatmap-blind observer's accuracy and the Robot A side balance; stores the "
        "report on the study (its admin page shows it; publishing needs it). Exits 1 when a check fails."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("study", help="study id, slug or exact name")
        parser.add_argument("--json", action="store_true", help="print the report as JSON")
        parser.add_argument(
            "--acknowledge", action="store_true",
            help="after reading the failures: allow publishing anyway (recorded on the study; a new audit of "
                 "changed stimuli clears it)",
        )  # fmt: skip

    def handle(self, *args: object, **options: object) -> None:
        study = study_argument(str(options["study"]))
        report = study_validity_audit(study_id=study.pk)
        if options["json"]:
            self.stdout.write(json.dumps(report.to_dict(), indent=2))
        else:
            self.stdout.write(f"validity audit of {study.name!r} (id {study.pk}), {report.ran_at}")
            for line in report.lines():
                self.stdout.write(line)
            self.stdout.write(f"{study.name!r}: {report.summary()}")
        if report.passed:
            return
        if options["acknowledge"]:
            study_validity_acknowledge(study_id=study.pk)
            self.stdout.write("failures acknowledged: the study may be published despite them")
            return
        self.stderr.write("publishing is refused until these are fixed or acknowledged (--acknowledge, or the admin)")
        sys.exit(1)
