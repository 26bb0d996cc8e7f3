"""Run the demo's synthetic "What do you see?" study with simulated observers; print per-method tables.

    python bench/simulate_demo.py [--study "What do you see? (synthetic scenes)"] [--observers heatmap_reader,random]

Needs the demo's studies (``manage.py demo --no-serve`` first, same ``DATABASE_URL``). For each
observer the live study is copied (same items and stimuli, fresh counters and a new slug) so
the observers' judgments never mix, then ``simulate_crowd`` fills every slot over loopback HTTP
(judgments_per_item x items), and the analysis (``studies.services.results``) prints accuracy
per method with the Wilson 95% interval, the two-way cluster bootstrap interval and the
binomial test against chance. Simulated observers are models of a person, not people.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "xaistudy.settings")


def study_copy(study, suffix: str):  # type: ignore[no-untyped-def]
    """A live copy of ``study`` with the same items (new public ids, zero counters)."""
    from django.db import transaction

    from studies.models import Item, Study, new_token

    items = list(Item.objects.filter(study=study).order_by("pk"))
    with transaction.atomic():
        copy = Study.objects.get(pk=study.pk)
        copy.pk = None
        copy.slug = new_token()
        copy.name = f"{study.name} [{suffix}]"
        copy.status = Study.Status.LIVE
        copy.save()
        for item in items:
            item.pk = None
            item.study = copy
            item.public_id = new_token()
            item.n_leased = item.n_answered = 0
        Item.objects.bulk_create(items)
    return copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="What do you see? (synthetic scenes)")
    parser.add_argument("--observers", default="heatmap_reader,random")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import django

    django.setup()
    from django.core.management import call_command

    from studies.models import Item, Study
    from studies.services.results import study_results_compute

    source = Study.objects.filter(name=args.study).order_by("created_at").first()
    if source is None:
        raise SystemExit(f"no study named {args.study!r}: run `manage.py demo --no-serve` first")
    n_main = Item.objects.filter(study=source, role="main").count()
    slots = n_main * source.judgments_per_item
    workers = math.ceil(slots / source.trials_per_participant) + 2
    print(f"{source.name}: {n_main} main items x {source.judgments_per_item} judgments = {slots} slots; "
          f"methods {source.methods}; {workers} simulated participants per observer")  # fmt: skip
    for observer in args.observers.split(","):
        copy = study_copy(source, observer)
        call_command("simulate_crowd", str(copy.pk), "--workers", str(workers), "--concurrency", str(args.concurrency),
                     "--observer", observer, "--seed", str(args.seed), "--time-limit", "1800")  # fmt: skip
        results = study_results_compute(study=copy, include_simulated=True, seed=args.seed)
        table = results.table(with_exclusions=False)
        print(f"\n{observer}: {results.n_judgments} main judgments, {results.n_workers} simulated participants")
        print(f"{'method':<22} {'n':>5} {'acc':>6} {'Wilson 95%':>15} {'bootstrap 95%':>15} {'p vs chance':>11}")
        for row in table.rows:
            print(f"{row.method:<22} {row.n_judgments:>5} {row.accuracy:>6.3f} "
                  f"[{row.wilson_low:.3f}, {row.wilson_high:.3f}] [{row.boot_low:.3f}, {row.boot_high:.3f}] "
                  f"{row.binomial_p:>11.3g}")  # fmt: skip


if __name__ == "__main__":
    main()
