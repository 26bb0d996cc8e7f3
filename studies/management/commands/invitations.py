"""``manage.py invitations <study> --count N [--base-url URL]``: signed single-use entry links.

For a study with ``require_invitation`` (link studies): one line per person, to hand out one each.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.core.management.base import BaseCommand, CommandParser
from django.urls import reverse

from studies.management.arguments import study_argument
from studies.services.invitations import invitations_make


class Command(BaseCommand):
    help = "Print N signed, single-use invitation links for a study (one per line)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("study", type=study_argument, help="id, slug or exact name")
        parser.add_argument("--count", type=int, default=1)
        parser.add_argument("--base-url", default="", help="e.g. https://studies.example.org (default: path only)")

    def handle(self, *args: object, **options: object) -> None:
        study = options["study"]
        path = reverse("studies:worker-entry", args=[study.slug])
        base = str(options["base_url"]).rstrip("/")
        for invitation in invitations_make(study=study, count=int(options["count"])):  # type: ignore[call-overload]
            self.stdout.write(f"{base}{path}?{urlencode({'inv': invitation})}")
        if not study.require_invitation:
            self.stderr.write("note: this study does not require invitations yet (Study.require_invitation)")
