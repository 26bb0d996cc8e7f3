"""``manage.py preregister <study>``: write the study's pre-registration as Markdown or OSF JSON."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from studies.management.arguments import study_argument
from studies.services.preregistration import preregistration_make


class Command(BaseCommand):
    help = (
        "Write a pre-registration generated from the study (OSF Preregistration sections) with the hash "
        "of its configuration, which the results page shows again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("study", help="study id, slug or exact name")
        parser.add_argument("--hypotheses", metavar="FILE", help="a text file with the researcher's hypotheses")
        parser.add_argument("--format", choices=("md", "json"), default="md", help="Markdown (default) or OSF JSON")
        parser.add_argument("--out", metavar="PATH", help="write here instead of standard output")
        parser.add_argument("--plan-workers", type=int, metavar="N",
                            help="justify the sample size with plan_sample's simulation at N workers (the pilot's "
                                 "accuracies, or --accuracy)")  # fmt: skip
        parser.add_argument("--accuracy", action="append", default=[], metavar="METHOD=P",
                            help="assumed accuracy of a method for --plan-workers (repeat per method)")

    def handle(self, *args: object, **options: object) -> None:
        study = study_argument(str(options["study"]))
        hypotheses = ""
        if options["hypotheses"]:
            try:
                hypotheses = Path(str(options["hypotheses"])).read_text(encoding="utf-8")
            except OSError as exc:
                raise CommandError(f"cannot read the hypotheses: {exc}") from exc
        plan = None
        if options["plan_workers"]:
            plan = _sample_plan(study, int(options["plan_workers"]), list(options["accuracy"] or []))
        prereg = preregistration_make(study=study, hypotheses=hypotheses, sample_plan=plan)
        if options["format"] == "json":
            text = json.dumps(prereg.osf_json(), indent=2, ensure_ascii=False) + "\n"
        else:
            text = prereg.markdown()
        if options["out"]:
            Path(str(options["out"])).write_text(text, encoding="utf-8")
            self.stdout.write(f"wrote {options['out']} (configuration hash {prereg.config_hash})")
        else:
            self.stdout.write(text)


def _sample_plan(study, workers: int, accuracy: list[str]) -> dict:  # type: ignore[no-untyped-def]
    """``sample_plan_make`` at ``workers`` workers as the pre-registration's sample-size justification."""
    from studies.services.sample_plan import sample_plan_make

    try:
        accuracies = {m: float(v) for m, v in (a.split("=", 1) for a in accuracy)} or None
        plan = sample_plan_make(study=study, workers=workers, accuracies=accuracies).as_dict()
    except ValueError as exc:
        raise CommandError(f"sample plan: {exc}") from exc
    result = plan["results"][0]
    widths = ", ".join(f"{m} {w:.3f}" for m, w in result["ci_width"].items())
    power = ", ".join(f"{pair} {p:.2f}" for pair, p in result["power"].items()) or "no pairs"
    plan["justification"] = (
        f"Simulated with the study's own analysis (manage.py plan_sample): {workers} workers x "
        f"{result['trials_per_worker']} trials, {result['judgments_per_item']} judgments per item; expected "
        f"95% CI width per method: {widths}; power per pairwise comparison: {power}."
    )
    return plan
