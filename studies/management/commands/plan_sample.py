"""``manage.py plan_sample <study> --workers 10,20,40``: power and expected CI width before paying."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from studies.management.arguments import study_argument
from studies.services.sample_plan import SamplePlan, sample_plan_make


def _workers(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise CommandError(f"--workers takes comma-separated integers, got {text!r}") from exc
    if not counts or min(counts) < 1:
        raise CommandError(f"--workers takes positive integers, got {text!r}")
    return counts


def _accuracies(pairs: list[str] | None) -> dict[str, float] | None:
    if not pairs:
        return None
    out: dict[str, float] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise CommandError(f"--accuracy takes METHOD=ACCURACY (e.g. gradcam=0.8), got {pair!r}")
    return out


def plan_text(plan: SamplePlan) -> str:
    """The plan as text tables: one per number of workers."""
    lines = [
        f"accuracies ({plan.source}): "
        + ", ".join(f"{m}={a:.3f}" for m, a in zip(plan.method_names, plan.accuracies, strict=True))
        + (f"  [pilot judgments: {', '.join(map(str, plan.pilot_n))}]" if plan.pilot_n else ""),
        f"worker sd {plan.worker_sd:g}, item sd {plan.item_sd:g} (logit); {plan.trials_per_worker} trials per worker, "
        f"{plan.judgments_per_item} judgments per item; {plan.n_sim} simulated studies x {plan.n_boot} bootstrap "
        f"replicates, seed {plan.seed}",
    ]
    width = max(len(m) for m in plan.method_names)
    pair_names = [f"{a} - {b}" for a, b in plan.results[0].pairs] if plan.results else []
    pwidth = max([len(p) for p in pair_names] + [4])
    for r in plan.results:
        lines += ["", f"{r.workers} workers ({r.n_items} items per method):",
                  f"  {'method':<{width}}  judgments  CI width (bootstrap)  CI width (Wilson)"]  # fmt: skip
        for m, n, ci, wi in zip(r.method_names, r.n_judgments, r.ci_width, r.wilson_width, strict=True):
            lines.append(f"  {m:<{width}}  {n:>9}  {ci:>20.3f}  {wi:>17.3f}")
        if r.pairs:
            lines.append(f"  {'pair':<{pwidth}}  power  diff CI width")
            for name, p, dw in zip(pair_names, r.power, r.diff_width, strict=True):
                lines.append(f"  {name:<{pwidth}}  {p:>5.2f}  {dw:>13.3f}")
    return "\n".join(lines)


class Command(BaseCommand):
    help = (
        "Simulate the study's analysis for planned numbers of workers and print, per method, the expected "
        "width of its 95% cluster-bootstrap interval and, per pair of methods, the power (share of simulated "
        "studies whose difference interval excludes 0). Accuracies are assumed (--accuracy) or taken from the "
        "study's answered judgments (a pilot)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("study", help="study id, slug or exact name")
        parser.add_argument(
            "--workers", required=True, help="numbers of workers, comma-separated (e.g. 10,20,40)"
        )
        parser.add_argument("--judgments-per-item", type=int, default=None, help="default: the study's")
        parser.add_argument("--accuracy", action="append", metavar="METHOD=ACC",
                            help="assumed accuracy of a method (repeat for each); default: the pilot's")  # fmt: skip
        parser.add_argument(
            "--worker-sd", type=float, default=0.5, help="worker sd, logit scale (default 0.5)"
        )
        parser.add_argument("--item-sd", type=float, default=0.5, help="item sd, logit scale (default 0.5)")
        parser.add_argument("--n-sim", type=int, default=200, help="simulated studies (default 200)")
        parser.add_argument(
            "--n-boot", type=int, default=200, help="bootstrap replicates per study (default 200)"
        )
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--json", action="store_true", help="print the plan as JSON instead of tables")

    def handle(self, *args: object, **options: object) -> None:
        study = study_argument(str(options["study"]))
        try:
            plan = sample_plan_make(
                study=study,
                workers=_workers(str(options["workers"])),
                judgments_per_item=options["judgments_per_item"],  # type: ignore[arg-type]
                accuracies=_accuracies(options["accuracy"]),  # type: ignore[arg-type]
                worker_sd=float(options["worker_sd"]),  # type: ignore[arg-type]
                item_sd=float(options["item_sd"]),  # type: ignore[arg-type]
                n_sim=int(options["n_sim"]),  # type: ignore[call-overload]
                n_boot=int(options["n_boot"]),  # type: ignore[call-overload]
                seed=int(options["seed"]),  # type: ignore[call-overload]
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if options["json"]:
            self.stdout.write(json.dumps(plan.as_dict(), indent=2))
        else:
            self.stdout.write(f"{study.name!r}: sample plan\n" + plan_text(plan))
