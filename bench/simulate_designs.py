"""Run the demo's newer-design studies (issue #16) with simulated observers; print each design's table.

    python bench/simulate_designs.py [--studies "Image study E,Image study G"] [--observers random,heatmap_reader]

Needs the demo (``manage.py demo --no-serve`` first, same ``DATABASE_URL``). For each study (by
public title; default: every live study of a design other than the two Grad-CAM ones) and each
observer, the live study is copied (``bench/simulate_demo.study_copy``: same items and stimuli,
fresh counters), ``simulate_crowd`` fills every main slot over loopback HTTP, and the design's own
analysis (``studies.services.results``) prints one line per row: the design's score columns, with
their intervals (agreement and AI-assisted decision: on right and wrong predictions too; forward
simulation: per arm and the utility). A random observer should score chance within its interval.
Simulated observers are models of a person, not people; an observer that cannot play a design
(a map reader on a trial without a map) still answers, and its figures mean nothing there.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import asdict, is_dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "xaistudy.settings")

GRAD_CAM_DESIGNS = ("class_discrimination", "trust")


def _row_text(row: object) -> str:
    values = asdict(row) if is_dataclass(row) else dict(vars(row))
    shown = {k: round(v, 3) if isinstance(v, float) else v for k, v in values.items()
             if isinstance(v, int | float | str) and not isinstance(v, bool)}  # fmt: skip
    return "  ".join(f"{k}={v}" for k, v in shown.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", default="", help="public titles, comma-separated (default: the newer designs')")
    parser.add_argument("--observers", default="random,heatmap_reader")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import django

    django.setup()
    from django.core.management import call_command
    from simulate_demo import study_copy

    from studies.models import Item, Response, Study
    from studies.services.results import study_results_compute

    live = Study.objects.filter(status=Study.Status.LIVE).exclude(kind__in=GRAD_CAM_DESIGNS)
    titles = [t for t in args.studies.split(",") if t]
    sources = [s for s in live.order_by("public_title") if not titles or s.public_title in titles]
    for source in sources:
        n_main = Item.objects.filter(study=source, role=Item.Role.MAIN).count()
        slots = n_main * source.judgments_per_item
        workers = 3 * math.ceil(slots / max(1, source.trials_per_participant)) + 4
        for observer in args.observers.split(","):
            copy = study_copy(source, observer)
            call_command("simulate_crowd", str(copy.pk), "--workers", str(workers), "--concurrency", "1",
                         "--observer", observer, "--seed", str(args.seed), "--time-limit", "900")
            filled = Response.objects.filter(assignment__item__study=copy, assignment__item__role=Item.Role.MAIN).count()
            results = study_results_compute(study=copy, include_simulated=True, seed=args.seed)
            print(f"\n{source.public_title} ({source.kind}) | {observer}: {filled}/{slots} main slots, "
                  f"{results.n_workers} workers")
            for row in results.table(with_exclusions=False).rows:
                print("  " + _row_text(row))


if __name__ == "__main__":
    main()
