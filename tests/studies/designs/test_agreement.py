"""The HIVE agreement design ("Is the model's prediction correct?", ``studies/designs/agreement.py``).

Modelled on ``test_yes_no.py``: the planner's items (balanced right and wrong predictions, their
right answers from the stored ``Prediction`` rows, on hand-made predictions and on the synthetic
world's real ones), a worker's page and API trial, the scoring of every scale position, the
results split by whether the prediction was correct, the export and the OpenAPI kind enum.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from django.template.loader import render_to_string
from django.test import Client
from django.urls import reverse

from studies.designs import design_for, designs, kind_choices
from studies.designs.agreement import PREDICTED, SCALE
from studies.fixtures.builders import (
    make_worker_study,
    predicted_images_create,
    synthetic_model_create,
    synthetic_scenes_import,
)
from studies.models import Item, Job, Participant, Prediction, Response, Study
from tests.studies.designs._worker import api, kind_enums, worker_through_practice

pytestmark = pytest.mark.django_db
DESIGN = design_for("agreement")


# ---------------------------------------------------------------------------------------------- registry


def test_registered_from_the_package() -> None:
    assert DESIGN.name == "agreement"
    assert ("agreement", DESIGN.label) in kind_choices()
    assert "agreement" in [design.name for design in designs()]
    assert DESIGN.models_from == "model"
    assert DESIGN.default_question == "Is the model's prediction correct?"


# ---------------------------------------------------------------------------------------------- planning


def _study_with_predictions(top1: list[int], *, seed: int = 12345) -> Study:
    """An agreement study on images of a cat and a dog; image k's stored top-1 class is ``top1[k]``
    (classes: cat, dog, car, tree: 0 and 1 are right, 2 and 3 wrong)."""
    study = make_worker_study(kind="agreement", n_main=0, n_practice=0, name="plan")
    study.methods = ["gradcam", "guided_backprop"]
    study.practice_trials = 0
    study.seed = seed
    study.save()
    predicted_images_create(study=study, top1=top1)
    return study


def test_planner_balances_right_and_wrong_predictions() -> None:
    from studies.pipeline.plan import study_plan

    study = _study_with_predictions([0, 1, 0, 2, 1, 3, 0, 1, 2])  # 6 right, 3 wrong
    summary = study_plan(study=study)
    main = list(study.items.filter(role=Item.Role.MAIN).select_related("image"))
    assert summary.main == len(main) == 3 * 2 * 2  # 3 right + 3 wrong predictions, x two methods
    assert all(item.options == ["incorrect", "correct"] for item in main)
    for item in main:
        top1 = Prediction.objects.get(model=study.model, image=item.image).top_classes[0]
        assert item.target_class == top1
        assert item.target_label == study.model.class_names[top1]
        assert item.correct_option == int(item.target_label in item.image.categories)
    per_image = {(item.image_id, item.correct_option) for item in main}
    assert sorted(c for _, c in per_image) == [0, 0, 0, 1, 1, 1]
    # seeded: the same study plans the same images; another seed may keep other right ones
    again = {item.image_id for item in main}
    study_plan(study=study)
    assert {item.image_id for item in study.items.filter(role=Item.Role.MAIN)} == again


def test_planner_refuses_predictions_all_right() -> None:
    from studies.pipeline.plan import study_plan

    study = _study_with_predictions([0, 1, 0, 1])
    assert DESIGN.main_targets(study, list(study.image_set.images.all()), [study.model],
                               DESIGN.options(study)) == {}  # fmt: skip
    assert "predicts right" in DESIGN.no_items_message(study)
    assert study_plan(study=study).main == 0


def test_plan_and_prepare_on_the_synthetic_world(tmp_path: Path) -> None:
    """The real pipeline: predictions of an (untrained, seeded) synthetic CNN, maps of the predicted class."""
    from studies.fixtures.builders import TEST_CONSENT
    from studies.pipeline.prepare import prepare_inline

    study = Study.objects.create(
        name="agreement", kind="agreement", model=synthetic_model_create(name="m", directory=tmp_path, seed=0),
        image_set=synthetic_scenes_import(n=8, seed=7), methods=["gradcam"],
        catch_trials=1, practice_trials=1, seed=123, consent_text=TEST_CONSENT,
        explainer_options={"display_size": 64, "chunk_size": 4},
    )  # fmt: skip
    job = prepare_inline(study_id=study.pk)
    assert job.status == Job.Status.DONE, job.error
    main = list(study.items.filter(role=Item.Role.MAIN).select_related("image"))
    assert main
    right = [item for item in main if item.correct_option == 1]
    wrong = [item for item in main if item.correct_option == 0]
    assert len(right) == len(wrong) > 0, (len(right), len(wrong))
    for item in main:
        top1 = Prediction.objects.get(model=study.model, image=item.image).top_classes[0]
        assert item.target_class == top1
        assert (item.target_label in item.image.categories) == (item.correct_option == 1)
        assert item.stimulus_a is not None
        assert item.stimulus_a.target_class == top1
    obvious = list(study.items.exclude(role=Item.Role.MAIN))
    assert {item.role for item in obvious} == {Item.Role.CATCH, Item.Role.PRACTICE}
    assert all(item.correct_option == 1 and item.target_label in item.image.categories for item in obvious)


# ---------------------------------------------------------------------------------------------- the worker


def _right_choice(item: Item) -> int:
    return 3 if item.correct_option == 1 else 0


def _make_wrong(item: Item) -> None:
    """Turn a main item into an incorrect prediction ("car" on a cat-and-dog picture)."""
    item.target_label, item.target_class, item.correct_option = "car", 2, 0
    item.save(update_fields=["target_label", "target_class", "correct_option"])


def _agreement_study(**kwargs) -> Study:  # type: ignore[no-untyped-def]
    study = make_worker_study(kind="agreement", **kwargs)
    main = list(study.items.filter(role=Item.Role.MAIN).order_by("pk"))
    for item in main[1::2]:
        _make_wrong(item)
    return study


def _check_practice_trial(trial: dict) -> None:
    assert trial["scale"] == list(SCALE)


def _worker_through_practice(study: Study) -> tuple[Client, str]:
    return worker_through_practice(
        study, check_trial=_check_practice_trial,
        right_choice=lambda trial: _right_choice(Item.objects.get(public_id=trial["token"])),
    )


def test_worker_reads_the_prediction_and_the_scale_and_is_scored() -> None:
    study = _agreement_study(n_main=4, n_catch=1, trials_per_participant=4)
    assert set(study.items.filter(role=Item.Role.MAIN).values_list("correct_option", flat=True)) == {0, 1}
    client, token = _worker_through_practice(study)
    seen = set()
    first = True
    while (trial := api(client, "get", "/api/v1/participant/trial", token).json()["trial"]) is not None:
        item = Item.objects.get(assignments__token=trial["token"])
        assert trial["kind"] == "agreement"
        assert trial["options"] == []
        assert trial["scale"] == list(SCALE)
        assert trial["predicted"] == PREDICTED.format(label=item.target_label) == f"The model predicts: {item.target_label}"
        assert trial["question"] == "Is the model's prediction correct?"
        assert [image["side"] for image in trial["images"]] == ["main"]
        if first:
            page = client.get(reverse("studies:worker-home", args=[token]))
            assert page.status_code == 200
            html = page.content.decode()
            assert 'class="choices scale agreement"' in html, "the design's own template draws the trial"
            assert f"The model predicts: {item.target_label}" in html
            assert all(label in html for label in SCALE)
            for bad in (4, -1):
                refused = api(client, "post", "/api/v1/participant/trial", token,
                               {"assignment": trial["token"], "choice": bad})  # fmt: skip
                assert refused.status_code == 400, refused.content
                assert "choice" in refused.content.decode()
            first = False
        choice = _right_choice(item) if item.role == Item.Role.CATCH or item.correct_option == 1 else 1
        outcome = api(client, "post", "/api/v1/participant/trial", token,
                       {"assignment": trial["token"], "choice": choice, "client_response_ms": 1500}).json()  # fmt: skip
        assert outcome["outcome"] == "recorded", outcome
        response = Response.objects.get(assignment__token=trial["token"])
        assert response.chosen_option == choice
        assert response.correct is True
        assert response.score_model_a is None
        seen.add(item.correct_option)
    assert seen == {0, 1}, "the worker met a correct and an incorrect prediction"
    assert api(client, "post", "/api/v1/participant/complete", token).status_code == 200


@pytest.mark.parametrize(("correct_option", "expected"), [
    (1, [False, False, True, True]),  # a correct prediction: right iff judged correct (2, 3)
    (0, [True, True, False, False]),  # an incorrect one: right iff judged incorrect (0, 1)
])  # fmt: skip
def test_scoring_of_every_scale_position(correct_option: int, expected: list[bool]) -> None:
    item = Item(options=["incorrect", "correct"], correct_option=correct_option, target_label="cat")
    assert DESIGN.answer_range([]) == (4, "scale position")
    for choice, right in enumerate(expected):
        assert DESIGN.answer_score(item=item, option_order=[], model_a_shown_left=None, choice=choice) == (choice, right, None)
        assert DESIGN.correct_expected(chosen_option=choice, correct_option=correct_option) is right
    assert DESIGN.answer_score(item=Item(options=[], correct_option=None), option_order=[], model_a_shown_left=None,
                               choice=3) == (3, None, None)  # fmt: skip
    assert DESIGN.practice_feedback(item=item, option_order=[], model_a_shown_left=None)[0] == (3 if correct_option else 0)


# ---------------------------------------------------------------------------------------------- results


@pytest.fixture
def answered() -> Study:
    """An agreement study (3 correct and 3 incorrect predictions) that three workers completed,
    each always answering "Definitely correct"."""
    study = _agreement_study(n_main=6, n_catch=0, trials_per_participant=4, judgments_per_item=2)
    for _ in range(3):
        client, token = _worker_through_practice(study)
        while (trial := api(client, "get", "/api/v1/participant/trial", token).json()["trial"]) is not None:
            api(client, "post", "/api/v1/participant/trial", token, {"assignment": trial["token"], "choice": 3})
        api(client, "post", "/api/v1/participant/complete", token)
    assert Participant.objects.filter(study=study).count() == 3
    return study


def test_results_split_by_prediction_correctness(answered: Study) -> None:
    from studies.services.results import study_results_compute, study_results_get, summary_rows

    main = Response.objects.filter(assignment__participant__study=answered, assignment__item__role=Item.Role.MAIN)
    n_right = main.filter(assignment__item__correct_option=1).count()
    n_wrong = main.filter(assignment__item__correct_option=0).count()
    assert n_right
    assert n_wrong
    results = study_results_compute(study=answered)
    assert results.design == "agreement"
    assert results.kind == "agreement"
    assert results.n_judgments == n_right + n_wrong
    (row,) = results.table(with_exclusions=False).rows
    assert row.chance == 0.5
    assert (row.n_judgments_on_correct, row.n_correct_on_correct, row.accuracy_on_correct) == (n_right, n_right, 1.0)
    assert (row.n_judgments_on_incorrect, row.n_correct_on_incorrect, row.accuracy_on_incorrect) == (n_wrong, 0, 0.0)
    assert row.accuracy == pytest.approx(n_right / (n_right + n_wrong))
    for suffix in ("on_correct", "on_incorrect"):
        low, high = getattr(row, f"boot_low_{suffix}"), getattr(row, f"boot_high_{suffix}")
        assert np.isfinite(low)
        assert np.isfinite(high)
        assert low <= getattr(row, f"accuracy_{suffix}") <= high
    summary = summary_rows(results)
    assert {"accuracy_on_correct", "accuracy_on_incorrect", "boot_low_on_incorrect"} <= set(summary[0])
    assert study_results_get(study=answered).n_judgments == results.n_judgments  # cached (pickled) and read back
    rows = [{**DESIGN.results_row(r), "label": r.method} for r in results.table(with_exclusions=True).rows]
    html = render_to_string(DESIGN.results_template, {"part": "table", "rows": rows})
    assert "Correct predictions" in html
    assert "Incorrect predictions" in html
    assert "Chance is 50%" in html
    assert 'data-split-accuracy="correct"><strong>100' in html
    assert 'data-split-accuracy="incorrect"><strong>0' in html


def test_results_page_shows_the_split(answered: Study, staff_client) -> None:  # type: ignore[no-untyped-def]
    page = staff_client.get(reverse("studies:results", args=[answered.slug]))
    assert page.status_code == 200, page.content[:500]
    html = page.content.decode()
    assert "Correct predictions" in html
    assert "Incorrect predictions" in html
    assert "Chance is 50%" in html
    assert 'data-split-accuracy="correct"><strong>100' in html


def test_split_read_back_from_answer_and_flag() -> None:
    from studies.analysis import Judgments
    from studies.designs.agreement import agreement_analysis, split_masks

    # items 0, 1: correct predictions; 2, 3: incorrect. choices per judgment and the truth
    item = np.array([0, 0, 1, 2, 2, 3])
    truth = np.array([1, 1, 1, 0, 0, 0])
    choice = np.array([3, 0, 2, 1, 3, 0])
    correct = (choice >= 2) == (truth == 1)
    answers = DESIGN.judgment_answers(chosen_option=choice, position=np.full(6, -1), score_model_a=np.zeros(6),
                                      score_known=np.zeros(6, bool), model_a_shown_left=np.ones(6, bool))  # fmt: skip
    j = Judgments(method=np.zeros(6, int), worker=np.arange(6), item=item, method_names=("gradcam",),
                  correct=correct, **answers)  # fmt: skip
    masks = split_masks(j)
    assert list(masks["on_correct"]) == list(truth == 1)
    assert list(masks["on_incorrect"]) == list(truth == 0)
    (row,) = agreement_analysis(j, n_boot=200, seed=1).rows
    assert row.accuracy_on_correct == pytest.approx(2 / 3)
    assert row.accuracy_on_incorrect == pytest.approx(2 / 3)


def test_tidy_export_carries_the_scale(answered: Study) -> None:
    from studies.services.exports import csv_lines, export_rows

    header, rows = export_rows(study=answered, kind="tidy")
    frame = pd.read_csv(io.StringIO("".join(csv_lines(header, rows))))
    assert len(frame) == Response.objects.filter(assignment__participant__study=answered).count()
    assert set(frame["study_kind"]) == {"agreement"}
    main = frame[frame["answer_option"] == 3]
    assert set(main["answer_label"]) == {"Definitely correct"}
    assert frame["correct"].notna().all()


def test_openapi_lists_the_kind(client) -> None:  # type: ignore[no-untyped-def]
    schema = client.get(reverse("studies:api-openapi")).json()
    enums = kind_enums(schema)
    assert enums
    assert all("agreement" in enum for enum in enums), enums
    text = json.dumps(schema)
    assert "`agreement`: `choice` = 0-based position on `scale`" in text



def test_the_audit_knows_the_scale_has_no_drawn_order() -> None:
    """An agreement trial stores no option order (the scale is fixed): the audit accepts that and
    names a stored order that is not empty."""
    from studies.models import Assignment
    from studies.services.audit import study_audit

    study = _agreement_study(n_main=4, n_catch=0, trials_per_participant=2)
    client, token = _worker_through_practice(study)
    trial = api(client, "get", "/api/v1/participant/trial", token).json()["trial"]
    api(client, "post", "/api/v1/participant/trial", token, {"assignment": trial["token"], "choice": 3})
    assert Assignment.objects.get(token=trial["token"]).option_order == []
    assert not [p for p in study_audit(study_id=study.pk, check_files=False).problems if p.code == "choices"]
    Assignment.objects.filter(token=trial["token"]).update(option_order=[1, 0])
    problems = [p.message for p in study_audit(study_id=study.pk, check_files=False).problems if p.code == "choices"]
    assert problems
    assert "fixed" in problems[0]
