"""Streamed CSV exports, formula escaping, pandas round trip, payment lists, the pack, the command."""

from __future__ import annotations

import io
import json
import zipfile
from decimal import Decimal

import pandas as pd
import pytest
from django.core.management import call_command
from django.urls import reverse

from studies.fixtures.synthetic_responses import synthetic_study_create
from studies.models import Item, Participant, Response, Study
from studies.services.exports import (
    csv_cell,
    csv_lines,
    exclusion_flags_compute,
    export_rows,
    payment_decisions,
)
from studies.services.participation import session_hash

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("text", ["=1+2", "+SUM(A1)", "-2+3", "@cmd", "\tx", "\rx", '=HYPERLINK("http://x")'])
def test_formula_cells_are_escaped(text):
    assert csv_cell(text) == "'" + text


@pytest.mark.parametrize(("value", "expected"), [(-2, -2), (0.5, 0.5), (None, ""), (True, "true"),
                                                  ("cat", "cat"), ([1, 0], "[1, 0]"), (float("nan"), "")])
def test_plain_cells_are_kept(value, expected):
    assert csv_cell(value) == expected


def _read(study: Study, kind: str, **kwargs) -> pd.DataFrame:
    header, rows = export_rows(study=study, kind=kind, **kwargs)
    return pd.read_csv(io.StringIO("".join(csv_lines(header, rows))), keep_default_na=False, na_values=[""])


@pytest.fixture
def study() -> Study:
    s = synthetic_study_create(n_workers=8, n_careless=2, n_fast=1, seed=6)
    # a category name that a spreadsheet would run
    Item.objects.filter(study=s, role="main").update(options=["=cmd|' /C calc'!A0", "dog"])
    return s


def test_tidy_csv_round_trips_through_pandas(study):
    frame = _read(study, "tidy")
    responses = list(Response.objects.filter(assignment__item__study=study).order_by("id").select_related(
        "assignment__item", "assignment__participant"))
    assert len(frame) == len(responses)
    for (_, row), response in zip(frame.iterrows(), responses):
        a, item, person = response.assignment, response.assignment.item, response.assignment.participant
        assert row["item"] == item.public_id
        assert row["method"] == item.method
        assert row["item_role"] == item.role
        assert row["worker_hash"] == person.worker_hash
        assert row["session_hash"] == session_hash(study=study, platform=person.platform, session_key=person.session_key)
        assert person.mturk_assignment_id not in set(frame.astype(str).to_numpy().ravel())
        assert bool(row["correct"]) == response.correct
        assert int(row["answer_option"]) == response.chosen_option
        assert int(row["response_ms"]) == response.client_response_ms
        assert json.loads(row["option_order"]) == a.option_order
        assert int(row["answer_position"]) == a.option_order.index(response.chosen_option)
        assert pd.Timestamp(row["answered_at"]) == pd.Timestamp(a.answered_at)
        assert bool(row["is_simulated"]) == person.is_simulated
        if item.role == "main":
            options = json.loads(row["options"].removeprefix("'")) if row["options"].startswith("'") else json.loads(row["options"])
            assert options == item.options
            shown = json.loads(row["options_as_shown"])
            assert shown == [item.options[k] for k in a.option_order]
    main = frame[frame["item_role"] == "main"]
    labels = main["answer_label"].tolist()
    assert "'=cmd|' /C calc'!A0" in labels
    assert "=cmd|' /C calc'!A0" not in labels
    assert not main["options"].str.startswith("=").any()
    assert set(frame["study"]) == {study.slug}


def test_tidy_exclusion_flags_match_the_report(study):
    frame = _read(study, "tidy")
    careless = set(Participant.objects.filter(study=study).order_by("id").values_list("worker_hash", flat=True)[:2])
    flagged = set(frame.loc[frame["exclude_catch_accuracy_below"].astype(bool), "worker_hash"])
    assert careless <= flagged
    assert (frame["excluded"] == (frame["exclude_catch_accuracy_below"] | frame["exclude_median_trial_time_below"])).all()
    fast = set(frame.loc[frame["exclude_median_trial_time_below"].astype(bool), "worker_hash"])
    assert len(fast) == 1
    assert frame.loc[frame["worker_hash"].isin(fast), "excluded_by"].str.contains("median_trial_time_below").all()


def test_summary_has_every_statistic_per_method(study):
    frame = _read(study, "summary")
    assert set(frame["analysis"]) == {"with_exclusions", "without_exclusions"}
    assert len(frame) == 4
    for column in ("accuracy", "wilson_low", "wilson_high", "boot_low", "boot_high", "binomial_p", "alpha_nominal",
                   "majority_accuracy", "n_judgments", "n_workers"):
        assert column in frame.columns
    pairs = _read(study, "pairwise")
    assert {"p_boot_holm", "p_naive_holm"} <= set(pairs.columns)
    assert len(pairs) == 2
    exclusions = _read(study, "exclusions")
    assert exclusions["rule"].tolist() == ["catch_accuracy_below", "median_trial_time_below", "any"]


def test_mturk_wide_csv(study):
    frame = _read(study, "mturk")
    assert len(frame) == 8
    for column in ("HITId", "AssignmentId", "WorkerId", "WorkTimeInSeconds", "Input.study", "Answer.trial_01_item",
                   "Answer.trial_12_answer"):
        assert column in frame.columns
    person = Participant.objects.filter(study=study).order_by("id").first()
    row = frame[frame["AssignmentId"] == person.mturk_assignment_id].iloc[0]
    assert row["WorkerId"] == person.platform_worker_id
    assert row["WorkTimeInSeconds"] == round((person.completed_at - person.started_at).total_seconds())
    first = person.assignments.order_by("position").first()
    assert row["Answer.trial_01_item"] == first.item.public_id


def test_payment_lists_follow_the_policy(study):
    flags = exclusion_flags_compute(study=study)
    decisions = {d.participant_id: d for d in payment_decisions(study=study, flags=flags, bonus=Decimal("0.50"))}
    people = list(Participant.objects.filter(study=study).order_by("id"))
    assert decisions[people[0].pk].action == "reject"  # careless: failed attention checks
    assert decisions[people[2].pk].action == "review"  # fast only
    mturk = _read(study, "payments-mturk", bonus="0.50")
    approved = mturk[mturk["Approve"] == "x"]
    assert len(approved) == sum(d.action == "approve" for d in decisions.values())
    assert (approved["BonusAmount"] == 0.5).all()
    assert mturk.loc[mturk["WorkerId"] == people[0].platform_worker_id, "Reject"].item() == "failed attention checks"
    prolific = synthetic_study_create(n_workers=5, n_careless=1, n_fast=0, platform=Study.Platform.PROLIFIC, seed=1)
    frame = _read(prolific, "payments-prolific")
    assert list(frame.columns) == ["participant_id", "session_id", "study_id", "action", "reason", "bonus"]
    assert frame["action"].tolist()[0] == "REJECT"
    assert set(frame["action"]) <= {"APPROVE", "REJECT", "REVIEW"}
    with pytest.raises(ValueError, match="bonus"):
        export_rows(study=study, kind="payments-mturk", bonus="lots")


def test_export_urls_stream_csv(staff_client, study):
    response = staff_client.get(reverse("studies:results_export", args=[study.slug, "tidy"]))
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    body = b"".join(response.streaming_content).decode()
    assert body.splitlines()[0].startswith("study,study_kind,item,")
    assert staff_client.get(reverse("studies:results_export", args=[study.slug, "nope"])).status_code == 404
    bad = staff_client.get(reverse("studies:results_export", args=[study.slug, "payments-mturk"]) + "?bonus=-1")
    assert bad.status_code == 400


def test_reproducibility_pack(staff_client, study):
    response = staff_client.get(reverse("studies:results_pack", args=[study.slug]))
    assert response.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    names = set(archive.namelist())
    assert {"README.txt", "study.json", "models.json", "stimuli.csv", "versions.json", "exports/tidy.csv",
            "exports/summary.csv", "exports/pairwise.csv", "exports/exclusions.csv"} <= names
    config = json.loads(archive.read("study.json"))
    assert config["seed"] == study.seed
    assert config["methods"] == study.methods
    versions = json.loads(archive.read("versions.json"))
    assert versions["packages"]["Django"]
    assert versions["python"]
    stimuli = pd.read_csv(io.BytesIO(archive.read("stimuli.csv")))
    assert len(stimuli) == Item.objects.filter(study=study).count()
    assert len(pd.read_csv(io.BytesIO(archive.read("exports/tidy.csv")))) == Response.objects.filter(
        assignment__item__study=study).count()


def test_web_process_reads_versions_without_importing_torch():
    import subprocess
    import sys

    code = ("import django; django.setup(); import sys; from studies.services.repro_pack import software_versions; "
            "v = software_versions(); assert 'torch' not in sys.modules; print(v['packages']['torch'])")
    out = subprocess.run([sys.executable, "-c", code], env={"DJANGO_SETTINGS_MODULE": "xaistudy.settings"},
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()[0].isdigit()


def test_management_command_and_admin_action(tmp_path, staff_client, study):
    target = tmp_path / "tidy.csv"
    call_command("export_study", study.slug, "--kind", "tidy", "--output", str(target))
    assert len(pd.read_csv(target)) == Response.objects.filter(assignment__item__study=study).count()
    pack = tmp_path / "pack.zip"
    call_command("export_study", str(study.pk), "--kind", "pack", "--output", str(pack))
    assert "exports/summary.csv" in zipfile.ZipFile(pack).namelist()
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no study"):
        call_command("export_study", "missing-slug")
    other = synthetic_study_create(n_workers=3, n_careless=0, n_fast=0, seed=2, exclusion_rules=[])
    response = staff_client.post(reverse("admin:studies_study_changelist"),
                                 {"action": "export_tidy_csv", "_selected_action": [study.pk, other.pk]})
    frame = pd.read_csv(io.BytesIO(b"".join(response.streaming_content)))
    assert set(frame["study"]) == {study.slug, other.slug}
    assert frame.columns[-1] == "is_simulated"
    assert "exclude_catch_accuracy_below" in frame.columns


@pytest.mark.parametrize(("value", "expected"), [("-jq7Zs_9", "-jq7Zs_9"), ("A3X9", "A3X9"),
                                                  ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
                                                  ("-2+3", "'-2+3"), ("@SUM(1)", "'@SUM(1)")])
def test_identifiers_stay_exact_unless_they_could_be_a_formula(value, expected):
    from studies.services.exports import Identifier

    assert csv_cell(Identifier(value)) == expected


def test_hostile_platform_worker_id_is_escaped_in_payment_lists(study):
    person = Participant.objects.filter(study=study).order_by("id").last()
    person.platform_worker_id = "=HYPERLINK(\"http://evil\")"
    person.save()
    frame = _read(study, "payments-mturk")
    assert "'=HYPERLINK(\"http://evil\")" in frame["WorkerId"].tolist()
