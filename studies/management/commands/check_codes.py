"""``manage.py check_codes <study> <results.csv>``: is each submitted completion code the worker's own?

Reads MTurk's batch results CSV (``AssignmentId``, ``WorkerId``, ``Answer.completion_code``) or any
CSV with an id column and a ``completion_code``/``code`` column; prints one verdict per row and a
count per verdict. Exit status 1 when any row is not ``ok``.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from studies.management.arguments import study_argument
from studies.services.participation import completion_codes_check


class Command(BaseCommand):
    help = "Check the completion codes of a platform's results CSV against each participant's own code."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("study", type=study_argument, help="id, slug or exact name")
        parser.add_argument("csv", type=Path)

    def handle(self, *args: object, **options: object) -> None:
        path = options["csv"]
        try:
            with open(path, newline="", encoding="utf-8-sig") as handle:  # type: ignore[call-overload]
                rows = list(csv.DictReader(handle))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise CommandError(f"cannot read {path}: {exc}") from exc
        checks = completion_codes_check(study=options["study"], rows=rows)  # type: ignore[arg-type]
        for check in checks:
            self.stdout.write(f"line {check.line}\t{check.platform_id}\t{check.verdict}")
        counts = Counter(check.verdict for check in checks)
        self.stdout.write(", ".join(f"{verdict}: {n}" for verdict, n in sorted(counts.items())) or "no rows")
        if any(check.verdict != "ok" for check in checks):
            raise SystemExit(1)
