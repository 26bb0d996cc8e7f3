"""The pre-registration export: the configuration hash, the Markdown and OSF JSON, the command, the results page."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.urls import reverse

from studies.fixtures.builders import make_worker_study
from studies.models import Image, Study
from studies.services.preregistration import preregistration_make, study_config_hash

pytestmark = pytest.mark.django_db

KINDS = ["class_discrimination", "trust", "agreement"]
HEADINGS = ["Hypotheses", "Design", "Randomization", "Sampling plan", "Variables", "Exclusion rules",
            "Analysis plan", "Configuration hash"]  # fmt: skip


@pytest.fixture(params=KINDS)
def study(request) -> Study:
    return make_worker_study(kind=request.param, with_files=False)


def test_hash_is_stable_and_ignores_name_and_status(study):
    first = study_config_hash(study)
    assert len(first) == 64
    assert study_config_hash(Study.objects.get(pk=study.pk)) == first
    study.name, study.status = "renamed", Study.Status.CLOSED
    study.save()
    assert study_config_hash(Study.objects.get(pk=study.pk)) == first


@pytest.mark.parametrize("change", ["method", "seed", "rule", "image"])
def test_hash_changes_with_what_runs(study, change):
    before = study_config_hash(study)
    if change == "method":
        study.methods = [*study.methods, "rise"]
    elif change == "seed":
        study.seed += 1
    elif change == "rule":
        study.exclusion_rules = [{"rule": "total_time_below", "seconds": 30}]
    study.save()
    if change == "image":
        image = Image.objects.filter(image_set_id=study.image_set_id).first()
        image.sha256 = "f" * 64
        image.save()
    assert study_config_hash(Study.objects.get(pk=study.pk)) != before


def test_markdown_and_json_carry_every_section_and_the_hash(study):
    study.exclusion_rules = [{"rule": "catch_accuracy_below", "threshold": 0.8}]
    study.save()
    prereg = preregistration_make(study=study)
    digest = study_config_hash(study)
    text = prereg.markdown()
    for heading in HEADINGS:
        assert f"## {heading}" in text
    assert digest in text
    assert "To be written by the researcher." in text
    assert "Not computed." in text
    assert "catch-trial accuracy is below 0.8" in text
    data = json.loads(json.dumps(prereg.osf_json()))
    assert data["config_hash"] == data["configuration_hash"] == digest
    assert data["sampling_plan"]["planned_judgments"] == data["sampling_plan"]["main_items"] * study.judgments_per_item
    written = preregistration_make(study=study, hypotheses="H1: gradcam beats chance.",
                                   sample_plan={"justification": "power 0.8 at d = 0.3"}).osf_json()  # fmt: skip
    assert written["hypotheses"] == "H1: gradcam beats chance."
    assert written["sampling_plan"]["sample_size_justification"] == "power 0.8 at d = 0.3"


def test_design_section_comes_from_the_design(study):
    from studies.designs.registry import design_for

    data = preregistration_make(study=study).osf_json()
    design = design_for(study)
    assert data["design"]["design"] == design.label
    assert design.analysis_table in data["analysis_plan"]["analysis"]
    assert "within-subject" in data["design"]["assignment"]


def test_command_writes_both_formats(study, tmp_path):
    hypotheses = tmp_path / "h.txt"
    hypotheses.write_text("H1: maps help.", encoding="utf-8")
    md, js = tmp_path / "p.md", tmp_path / "p.json"
    call_command("preregister", study.slug, "--hypotheses", str(hypotheses), "--out", str(md))
    call_command("preregister", str(study.pk), "--format", "json", "--out", str(js))
    digest = study_config_hash(study)
    assert digest in md.read_text(encoding="utf-8")
    assert "H1: maps help." in md.read_text(encoding="utf-8")
    assert json.loads(js.read_text(encoding="utf-8"))["config_hash"] == digest


def test_results_page_shows_the_same_hash(staff_client):
    study = make_worker_study(with_files=False)
    digest = study_config_hash(study)
    text = staff_client.get(reverse("studies:results", args=[study.slug])).content.decode()
    assert f'data-config-hash="{digest}"' in text
    assert f"Configuration hash: <code>{digest[:16]}</code>" in text


def test_command_justifies_the_sample_size_with_the_simulation(tmp_path):
    """``--plan-workers`` runs plan_sample's simulation and writes its figures as the justification."""
    study = make_worker_study(with_files=False)
    method = study.methods[0]
    out = tmp_path / "p.json"
    call_command("preregister", study.slug, "--format", "json", "--out", str(out), "--plan-workers", "12",
                 "--accuracy", f"{method}=0.8")  # fmt: skip
    text = json.dumps(json.loads(out.read_text(encoding="utf-8")))
    assert "Simulated with the study's own analysis" in text
    assert "12 workers" in text
    assert f"{method} 0." in text, "the expected CI width of the method"
