"""``manage.py export_study <slug-or-id> --kind tidy|summary|...|pack [--output FILE]``."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from studies.management.arguments import study_argument
from studies.services.exports import EXPORT_KINDS, csv_lines, export_rows
from studies.services.repro_pack import study_repro_pack_write


class Command(BaseCommand):
    help = "Export a study's judgments, statistics, MTurk/Prolific lists or its reproducibility pack."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("study", help="study id, slug or exact name")
        parser.add_argument("--kind", default="tidy", choices=[*EXPORT_KINDS, "pack"])
        parser.add_argument("--output", "-o", help="file to write (default: standard output; required for pack)")
        parser.add_argument("--exclude-simulated", action="store_true", help="leave simulated observers out of statistics")
        parser.add_argument("--bonus", default="0", help="bonus per approved participant (payment lists)")

    def handle(self, *args: object, **options: object) -> None:
        study = study_argument(str(options["study"]))
        export = str(options["kind"])  # the export's name (the option keeps its name), not the study's kind
        output = options["output"]
        include_simulated = not options["exclude_simulated"]
        if export == "pack":
            if not output:
                raise CommandError("--output FILE.zip is required for the pack")
            with Path(str(output)).open("wb") as handle:
                study_repro_pack_write(study=study, fileobj=handle, include_simulated=include_simulated)
            self.stderr.write(f"wrote {output}")
            return
        try:
            header, rows = export_rows(study=study, kind=export, include_simulated=include_simulated,
                                       bonus=str(options["bonus"]))  # fmt: skip
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        with contextlib.ExitStack() as stack:
            handle = stack.enter_context(Path(str(output)).open("w", encoding="utf-8", newline="")) if output else sys.stdout
            for line in csv_lines(header, rows):
                handle.write(line)
        if output:
            self.stderr.write(f"wrote {output}")
