"""``manage.py build_worlds``: the two offline worlds as models, pairs and image sets (cached)."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandParser

from studies.fixtures.worlds import photo_world_ensure, synthetic_world_ensure


class Command(BaseCommand):
    help = "Build (or reuse) the synthetic and photo worlds under XAISTUDY_WORLDS_DIR and load them into the database."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--only", choices=["synthetic", "photos"], help="build one world only")

    def handle(self, *args: object, **options: object) -> None:
        for name, build in (("synthetic", synthetic_world_ensure), ("photos", photo_world_ensure)):
            if options["only"] and options["only"] != name:
                continue
            started = time.perf_counter()
            rows = build()
            sets = ", ".join(f"{s.name} ({s.images.count()} images)" for s in rows.image_sets.values())
            self.stdout.write(f"{name}: models {', '.join(m.name for m in rows.models.values())}; pair {rows.pair.name}; "
                              f"image sets {sets}; {'reused' if rows.reused else 'built'} in {time.perf_counter() - started:.1f}s")
            for model, metrics in rows.metrics.items():
                shown = {k: round(v, 3) for k, v in metrics.items() if k.startswith("top2_")}
                self.stdout.write(f"  {model}: {shown}")
