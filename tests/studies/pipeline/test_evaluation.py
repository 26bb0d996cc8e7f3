"""Automatic evaluation of a study (studies/pipeline/evaluation.py) on a tiny synthetic study.

Embedded settings: SQLite, Celery eager. The model is the synthetic CNN trained once per test
session (``explainers.worlds.synthetic.train_cnn_cached`` in the session's temp folder, shared
with tests/explainers); two scenes, ``steps=8``, coarse occlusion, so each evaluation takes a few seconds.
"""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from studies.fixtures.builders import synthetic_model_create, synthetic_scenes_import
from studies.models import (
    Assignment,
    ClassifierModel,
    EvaluationResult,
    Item,
    Job,
    ModelPair,
    Participant,
    Response,
    Study,
)
from studies.pipeline.evaluation import (
    SANITY_METRIC,
    study_evaluate,
    study_evaluation_current,
    study_evaluation_start,
)
from studies.pipeline.plan import study_plan

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

METHODS = ["gradcam", "saliency"]
CONTROLS = ["control:random", "control:sobel", "control:gaussian"]
METRICS = ["deletion_auc", "insertion_auc", "occlusion_spearman", "pointing_game", "energy_in_region",
           "localization_error", SANITY_METRIC]
N_IMAGES = 2
EVALUATION = {"steps": 8, "sanity_units": 2, "sanity_steps": 3}
OPTIONS = {"display_size": 64, "evaluation": EVALUATION, "occlusion": {"window": 16, "stride": 8}}


@pytest.fixture(scope="session")
def trained_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    from explainers.worlds import synthetic

    cache = tmp_path_factory.getbasetemp() / "synthetic-cnn-cache"  # same folder as tests/explainers/conftest.py
    cache.mkdir(exist_ok=True)
    _model, _metrics, path = synthetic.train_cnn_cached(cache, biased=False, seed=0, config=synthetic.QUICK_CONFIG)
    from explainers.zoo import file_sha256

    return path, file_sha256(path)


def _image_set(name: str = "scenes"):
    return synthetic_scenes_import(n=N_IMAGES, seed=31, name=name, with_masks=True, cue="none")


def _model(name: str, weights: tuple[Path, str] | None, tmp_path: Path) -> ClassifierModel:
    """The trained model (``weights``), or with ``None`` an untrained twin."""
    return synthetic_model_create(name=name, directory=tmp_path, seed=5, weights=weights)


@pytest.fixture
def study(trained_weights, tmp_path: Path) -> Study:
    return Study.objects.create(
        name="eval", kind=Study.Kind.CLASS_DISCRIMINATION, model=_model("trained", trained_weights, tmp_path),
        image_set=_image_set(), methods=METHODS, seed=7, catch_trials=0, practice_trials=0,
        explainer_options=OPTIONS,
    )


def _rows(study: Study) -> dict[tuple[str, str], EvaluationResult]:
    return {(r.method, r.metric): r for r in EvaluationResult.objects.filter(study=study)}


def test_evaluation_writes_every_metric_for_methods_and_controls(study):
    report = study_evaluate(study_id=study.pk)
    rows = _rows(study)
    assert set(rows) == {(m, metric) for m in METHODS + CONTROLS for metric in METRICS}
    assert report.rows == len(rows)
    assert report.images == N_IMAGES
    assert report.units == 2 * N_IMAGES
    for (method, metric), row in rows.items():
        s = row.summary
        n_units = EVALUATION["sanity_units"] if metric == SANITY_METRIC else 2 * N_IMAGES
        assert len(row.values) == n_units == len(s["units"]), (method, metric)
        assert all(v is None or math.isfinite(v) for v in row.values)
        assert s["n"] >= 1, (method, metric, s)
        assert math.isfinite(s["mean"]), (method, metric, s)
        assert s["low"] <= s["mean"] <= s["high"], (method, metric, s)
        assert s["settings"]["steps"] == 8
        assert s["model"] == "trained"
    # Units are each image with each of its two categories (no items yet).
    units = rows[("gradcam", "deletion_auc")].summary["units"]
    assert len({tuple(u) for u in units}) == 2 * N_IMAGES
    # Read against the controls: Grad-CAM of a trained CNN puts more energy on the object than noise.
    assert rows[("gradcam", "energy_in_region")].summary["mean"] > rows[("control:random", "energy_in_region")].summary["mean"]
    # A control ignores the weights: its map never changes under randomization (similarity 1, fails).
    sobel = rows[("control:sobel", SANITY_METRIC)].summary
    assert sobel["mean"] == pytest.approx(1.0)
    assert sobel["verdict"]["passed"] is False
    gradcam = rows[("gradcam", SANITY_METRIC)].summary
    assert gradcam["cascade"]["steps"][0] == "original"
    assert len(gradcam["cascade"]["steps"]) == 1 + 3
    assert gradcam["cascade"]["mean"][0] == 1.0
    assert gradcam["mean"] < 0.9


def test_evaluation_is_idempotent_and_drops_removed_methods(study):
    study_evaluate(study_id=study.pk)
    first = {key: (row.pk, row.values, row.summary["mean"]) for key, row in _rows(study).items()}
    study.methods = ["gradcam"]
    study.save(update_fields=["methods"])
    report = study_evaluate(study_id=study.pk)
    second = {key: (row.pk, row.values, row.summary["mean"]) for key, row in _rows(study).items()}
    assert report.deleted == len(METRICS)  # saliency's rows
    assert {m for m, _ in second} == {"gradcam", *CONTROLS}
    assert second == {key: value for key, value in first.items() if key[0] != "saliency"}  # updated in place
    assert EvaluationResult.objects.filter(study=study).count() == len(second)
    assert study_evaluation_current(study=study)
    study.model.weights_sha256 = "0" * 64  # retrained weights: the stored results are stale
    study.model.save(update_fields=["weights_sha256"])
    assert not study_evaluation_current(study=study)


def test_trust_study_stores_both_models_per_method(trained_weights, tmp_path):
    pair = ModelPair.objects.create(name="p", model_a=_model("untrained", None, tmp_path),
                                    model_b=_model("trained", trained_weights, tmp_path))
    study = Study.objects.create(name="t", kind=Study.Kind.TRUST, model_pair=pair, image_set=_image_set("t-scenes"),
                                 methods=["gradcam"], explainer_options={**OPTIONS, "evaluation": {**EVALUATION, "max_images": 1}})
    study_evaluate(study_id=study.pk)
    rows = _rows(study)
    assert {metric for _, metric in rows} == {f"{m}:{side}" for m in METRICS for side in "AB"}
    assert rows[("gradcam", "insertion_auc:A")].summary["model"] == "untrained"
    assert rows[("gradcam", "insertion_auc:B")].summary["model"] == "trained"
    assert len(rows[("gradcam", "insertion_auc:B")].values) == 2  # max_images=1, two categories


def test_admin_action_runs_the_job_through_the_eager_task_with_progress(study, staff_client,
                                                                        django_capture_on_commit_callbacks):
    url = reverse("admin:studies_study_changelist")
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(url, {"action": "evaluate_explanations", "_selected_action": [study.pk]})
    assert response.status_code == 302
    job = study.jobs.get(kind=Job.Kind.EVALUATE)
    assert job.status == Job.Status.DONE, job.error
    assert job.total > 1
    assert job.done == job.total
    assert job.started_at
    assert job.finished_at
    assert EvaluationResult.objects.filter(study=study).count() == (len(METHODS) + len(CONTROLS)) * len(METRICS)


def test_job_failure_keeps_the_cause_and_the_study_status(study, django_capture_on_commit_callbacks):
    study.methods = ["no_such_method"]
    study.save(update_fields=["methods"])
    with django_capture_on_commit_callbacks(execute=True):
        job = study_evaluation_start(study_id=study.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert "no_such_method" in job.error
    study.refresh_from_db()
    assert study.status == Study.Status.DRAFT


class WorkerLost(BaseException):
    """Stands in for SIGKILL: not an ``Exception``, so no handler in the job runner runs after it."""


@pytest.mark.django_db(transaction=True)
def test_an_evaluation_that_kills_its_worker_every_time_is_given_up(study, settings, monkeypatch):
    from studies.pipeline import evaluation
    from studies.tasks import gpu_evaluate_study

    settings.XAISTUDY_CHUNK_MAX_ATTEMPTS = 2
    job = study_evaluation_start(study_id=study.pk, enqueue=False)
    calls: list[int] = []

    def dies(**kwargs: object) -> object:
        calls.append(1)
        raise WorkerLost

    monkeypatch.setattr(evaluation, "study_evaluate", dies)
    for attempt in (1, 2):  # each delivery the way Celery redelivers it: the task entry point
        with pytest.raises(WorkerLost):
            gpu_evaluate_study(job.pk)
        job.refresh_from_db()  # counted and committed before the work, so the "crash" kept it
        assert job.chunk_attempts == {"evaluate": attempt}
        assert job.status == Job.Status.RUNNING
    assert gpu_evaluate_study(job.pk) == Job.Status.FAILED  # delivery N+1: not run again
    assert len(calls) == 2
    job.refresh_from_db()
    assert job.error.splitlines()[0] == (
        f"the evaluation of study {study.pk} was started 2 times and never finished "
        "(its worker died each time, e.g. out of memory); not run again."
    )
    assert "XAISTUDY_CHUNK_MAX_ATTEMPTS=2" in job.error
    assert gpu_evaluate_study(job.pk) == Job.Status.FAILED  # a later redelivery does nothing
    assert len(calls) == 2
    assert not EvaluationResult.objects.filter(study=study).exists()
    fresh = study_evaluation_start(study_id=study.pk, enqueue=False)  # a new evaluation starts afresh
    assert fresh.pk != job.pk
    assert fresh.chunk_attempts in ({}, None)


def test_command_prints_the_table(study, capsys):
    call_command("evaluate_study", study.slug, "--steps", "4", "--max-images", "1")
    out = capsys.readouterr().out
    assert "done" in out
    assert "control:sobel" in out
    assert "sanity" in out
    row = EvaluationResult.objects.get(study=study, method="gradcam", metric="insertion_auc")
    assert row.summary["settings"]["steps"] == 4
    assert f"{row.summary['mean']:.3f} [{row.summary['low']:.3f},{row.summary['high']:.3f}]" in out


def _answer_every_item(study: Study) -> None:
    """One made-up judgment per main item (half right), enough for a human score per method."""
    now = timezone.now()
    for index, item in enumerate(Item.objects.filter(study=study, role=Item.Role.MAIN).order_by("pk")):
        participant = Participant.objects.create(study=study, platform=Study.Platform.LINK,
                                                 platform_worker_id=f"w{index}", worker_hash=f"h{index}",
                                                 status=Participant.Status.COMPLETED)
        assignment = Assignment.objects.create(participant=participant, item=item, position=0,
                                               status=Assignment.Status.ANSWERED, option_order=[0, 1],
                                               expires_at=now + timedelta(minutes=5), shown_at=now, answered_at=now)
        chosen = item.correct_option if index % 2 == 0 else 1 - item.correct_option
        Response.objects.create(assignment=assignment, chosen_option=chosen, correct=chosen == item.correct_option,
                                client_response_ms=1500)


def test_results_page_shows_metrics_beside_human_scores_and_the_sanity_plot(study, staff_client):
    study_plan(study=study)
    _answer_every_item(study)
    study_evaluate(study_id=study.pk)
    response = staff_client.get(reverse("studies:results", args=[study.slug]))
    assert response.status_code == 200
    text = response.content.decode()
    table = text[text.index('id="evaluation-table"'):]
    table = table[: table.index("</table>")]
    rows = {r["method"]: r for r in response.context["evaluation_rows"]}
    assert set(rows) == set(METHODS + CONTROLS)
    for method in METHODS:  # the human score and the metrics in the same row
        assert rows[method]["human"] is not None
        assert rows[method]["human_low"] is not None
        assert all(cell is not None for cell in rows[method]["cells"])
    for control in CONTROLS:
        assert control in table
        assert rows[control]["human"] is None
    gradcam = EvaluationResult.objects.get(study=study, method="gradcam", metric="insertion_auc").summary
    assert f"{gradcam['mean']:.3f} [{gradcam['low']:.3f}, {gradcam['high']:.3f}]" in table
    assert f"{rows['gradcam']['human']:.3f}" in table
    plot = reverse("studies:results_sanity_plot", args=[study.slug, "png"])
    assert plot in text
    assert "sanity" in text.lower()
    image = staff_client.get(plot)
    assert image.status_code == 200
    assert image["Content-Type"] == "image/png"
    assert image.content[:4] == b"\x89PNG"
    staff_client.logout()
    assert staff_client.get(plot).status_code == 302  # staff only


def test_web_side_of_the_evaluation_never_imports_torch(tmp_path):
    import os
    import subprocess
    import sys

    code = ("import django; django.setup(); import sys; import studies.web.results, studies.admin, studies.tasks; "
            "import studies.pipeline.evaluation as e; e.sanity_figure([]); "
            "assert 'torch' not in sys.modules, 'torch imported'; assert 'matplotlib.pyplot' not in sys.modules")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "xaistudy.settings", "XAISTUDY_VAR_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
