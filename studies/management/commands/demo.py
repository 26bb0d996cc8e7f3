"""``manage.py demo``: set up the demo and serve it on localhost, printing the URLs."""

from __future__ import annotations

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from studies.services.accounts import demo_admin_ensure


class Command(BaseCommand):
    help = "Migrate, create the demo admin login, and serve on localhost."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--no-serve", action="store_true", help="set everything up, then exit")
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args: object, **options: object) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        username, password = demo_admin_ensure(username="admin", password_file=settings.VAR_DIR / "demo-admin-password.txt")
        base = f"http://{options['host']}:{options['port']}"
        self.stdout.write(f"admin: {base}/admin/  login: {username} / {password}")
        if options["no_serve"]:
            return
        self.stdout.write(f"serving on {base}/ (Ctrl-C to stop)")
        call_command("runserver", f"{options['host']}:{options['port']}", use_reloader=False)
