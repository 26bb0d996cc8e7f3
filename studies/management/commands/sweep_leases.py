"""``manage.py sweep_leases``: expire overdue trial leases and give their slots back."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from studies.services.allocation import leases_sweep


class Command(BaseCommand):
    help = "Expire overdue trial leases so that their items can be given to other workers."

    def handle(self, *args: object, **options: object) -> None:
        swept = leases_sweep()
        self.stdout.write(f"expired {swept} lease(s)")
