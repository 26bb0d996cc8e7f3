"""plan_sample: the service and the command on a database study."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from studies.fixtures.builders import make_worker_study
from studies.fixtures.synthetic_responses import synthetic_study_create
from studies.models import Study
from studies.services.sample_plan import sample_plan_make

pytestmark = pytest.mark.django_db


def _accuracy_args(study: Study, values: list[float]) -> list[str]:
    out: list[str] = []
    for method, value in zip(study.methods, values, strict=False):
        out += ["--accuracy", f"{method}={value}"]
    return out


def test_command_prints_a_table_per_worker_count() -> None:
    study = make_worker_study()
    out = StringIO()
    call_command("plan_sample", str(study.pk), "--workers", "10,20", "--n-sim", "30", "--n-boot", "50",
                 *_accuracy_args(study, [0.9, 0.6, 0.7, 0.8]), stdout=out)  # fmt: skip
    text = out.getvalue()
    assert "10 workers" in text
    assert "20 workers" in text
    assert "CI width" in text


def test_service_plan_as_dict() -> None:
    study = make_worker_study()
    acc = {m: 0.8 - 0.1 * i for i, m in enumerate(study.methods)}
    plan = sample_plan_make(study=study, workers=[5, 10], accuracies=acc, n_sim=20, n_boot=30)
    d = plan.as_dict()
    assert d["source"] == "assumed"
    assert [r["workers"] for r in d["results"]] == [5, 10]
    assert set(d["results"][0]["ci_width"]) == set(study.methods)
    with pytest.raises(ValueError, match="every method"):
        sample_plan_make(study=study, workers=5, accuracies={"nope": 0.5}, n_sim=5, n_boot=10)


def test_pilot_accuracies_from_the_study() -> None:
    study = synthetic_study_create(quality=(0.9, 0.5), n_careless=0, n_fast=0, n_workers=20)
    plan = sample_plan_make(study=study, workers=[10], n_sim=20, n_boot=30)
    assert plan.source == "pilot"
    assert sum(plan.pilot_n) > 0
    acc = dict(zip(plan.method_names, plan.accuracies, strict=True))
    assert acc["gradcam"] > acc["guided_backprop"]


def test_trust_study_is_refused() -> None:
    study = make_worker_study(kind=Study.Kind.TRUST)
    with pytest.raises(ValueError, match="only accuracy-scored designs are planned for now"):
        sample_plan_make(study=study, workers=10, n_sim=5)
    with pytest.raises(CommandError, match="only accuracy-scored designs"):
        call_command("plan_sample", str(study.pk), "--workers", "10", stdout=StringIO())


def test_command_pilot_prints_pair_power() -> None:
    study = synthetic_study_create(quality=(0.9, 0.5), n_careless=0, n_fast=0, n_workers=20)
    out = StringIO()
    call_command("plan_sample", study.slug, "--workers", "40", "--n-sim", "30", "--n-boot", "50", stdout=out)
    text = out.getvalue()
    assert "accuracies (pilot)" in text
    assert "gradcam - guided_backprop" in text
    assert "power" in text
