"""The AI-assisted decision design ("Do you accept the AI's answer?", ``studies/designs/ai_assisted_decision.py``).

Modelled on ``test_agreement.py``: the planner's balanced items (the agreement design's planning),
a worker's page and API trial (the prediction, its confidence, Accept / Reject), the scoring of
accept/reject x right/wrong, the results (team accuracy on right and wrong predictions, the AI
alone, team - AI alone) against a hand computation and an independent numpy bootstrap, per-arm
rows of a study with two arms, the export, the simulated observer and the OpenAPI kind enum.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from django.template.loader import render_to_string
from django.test import Client
from django.urls import reverse

from studies.designs import design_for, designs, kind_choices
from studies.designs.ai_assisted_decision import ANSWERS, ORDER, SAYS, confidence_text, decision_analysis
from studies.fixtures.builders import make_worker_study, predicted_images_create
from studies.models import Item, Participant, Prediction, Response, Study
from tests.studies.designs._worker import api, kind_enums, worker_through_practice

pytestmark = pytest.mark.django_db
DESIGN = design_for("ai_assisted_decision")
CONFIDENCE = 0.873  # the stored softmax probability of every top-1 class below: "87% confident"


def test_registered_from_the_package() -> None:
    assert DESIGN.name == "ai_assisted_decision"
    assert ("ai_assisted_decision", DESIGN.label) in kind_choices()
    assert "ai_assisted_decision" in [design.name for design in designs()]
    assert DESIGN.models_from == "model"
    assert DESIGN.default_question == "Do you accept the AI's answer?"


# ---------------------------------------------------------------------------------------------- planning


def test_planner_balances_right_and_wrong_predictions() -> None:
    from studies.pipeline.plan import study_plan

    study = make_worker_study(kind="ai_assisted_decision", n_main=0, n_practice=0, name="plan")
    study.methods, study.practice_trials = ["gradcam", "guided_backprop"], 0
    study.save()
    predicted_images_create(study=study, top1=[0, 1, 0, 2, 1, 3, 0, 1, 2])  # cat, dog, car, tree: 6 right, 3 wrong
    assert study_plan(study=study).main == 3 * 2 * 2  # 3 right + 3 wrong predictions, x two methods
    main = list(study.items.filter(role=Item.Role.MAIN).select_related("image"))
    assert all(item.options == ["incorrect", "correct"] for item in main)
    for item in main:
        assert item.target_class == Prediction.objects.get(image=item.image).top_classes[0]
        assert item.correct_option == int(item.target_label in item.image.categories)
    assert sorted(c for _, c in {(item.image_id, item.correct_option) for item in main}) == [0, 0, 0, 1, 1, 1]
    assert "predicts right" in DESIGN.no_items_message(study)


# ---------------------------------------------------------------------------------------------- the worker


def _make_wrong(item: Item) -> None:
    """Turn an item into a wrong prediction ("car" on a cat-and-dog picture)."""
    item.target_label, item.target_class, item.correct_option = "car", 2, 0
    item.save(update_fields=["target_label", "target_class", "correct_option"])


def _decision_study(*, methods: tuple[str, ...] = ("gradcam",), **kwargs) -> Study:  # type: ignore[no-untyped-def]
    """A worker study whose odd main items are wrong predictions; each image's stored prediction is its
    item's class with probability :data:`CONFIDENCE`; every main item copied for each further method."""
    study = make_worker_study(kind="ai_assisted_decision", **kwargs)
    main = list(study.items.filter(role=Item.Role.MAIN).order_by("pk"))
    for item in main[1::2]:
        _make_wrong(item)
    for item in study.items.all():
        Prediction.objects.create(model=study.model, image=item.image, top_classes=[item.target_class, 3],
                                  top_scores=[CONFIDENCE, 0.05])  # fmt: skip
    for method in methods[1:]:
        for item in main:
            item.refresh_from_db()
            item.pk, item.public_id, item.method = None, f"{method}-{item.public_id}"[:64], method
            item.save()
    study.methods = list(methods)
    study.save()
    return study


def _right_choice(item: Item) -> int:
    return 0 if item.correct_option == 1 else 1  # accept a right prediction, reject a wrong one


def _through_practice(study: Study) -> tuple[Client, str]:
    def check(trial: dict) -> None:
        assert trial["options"] == list(ANSWERS)

    return worker_through_practice(study, check_trial=check,
                                   right_choice=lambda trial: _right_choice(Item.objects.get(public_id=trial["token"])))  # fmt: skip


def test_worker_reads_prediction_confidence_and_accept_reject() -> None:
    study = _decision_study(n_main=4, n_catch=1, trials_per_participant=4)
    client, token = _through_practice(study)
    seen, first = set(), True
    while (trial := api(client, "get", "/api/v1/participant/trial", token).json()["trial"]) is not None:
        item = Item.objects.get(assignments__token=trial["token"])
        said = f"The AI says: {item.target_label} (87% confident)"
        assert trial["kind"] == "ai_assisted_decision"
        assert trial["options"] == ["Accept", "Reject"]
        assert trial["scale"] == []
        assert trial["predicted"] == SAYS.format(label=item.target_label, confidence=87) == said
        assert trial["question"] == "Do you accept the AI's answer?"
        assert [image["side"] for image in trial["images"]] == ["main"]
        if first:
            html = client.get(reverse("studies:worker-home", args=[token])).content.decode()
            assert 'class="choices ai-decision"' in html, "the design's own template draws the trial"
            assert said in html
            assert ">1</kbd> Accept" in html
            assert ">2</kbd> Reject" in html
            refused = api(client, "post", "/api/v1/participant/trial", token, {"assignment": trial["token"], "choice": 2})
            assert refused.status_code == 400, refused.content
            first = False
        choice = _right_choice(item)
        outcome = api(client, "post", "/api/v1/participant/trial", token, {"assignment": trial["token"], "choice": choice}).json()
        assert outcome["outcome"] == "recorded", outcome
        response = Response.objects.get(assignment__token=trial["token"])
        assert response.assignment.option_order == list(ORDER)
        assert (response.chosen_option, response.correct, response.score_model_a) == (1 - choice, True, None)
        seen.add(item.correct_option)
    assert seen == {0, 1}, "the worker met a right and a wrong prediction"
    assert api(client, "post", "/api/v1/participant/complete", token).status_code == 200


def test_confidence_line() -> None:
    assert confidence_text([5, 2], [0.873, 0.1], 5) == "87"
    assert confidence_text([5, 2], [0.873, 0.1], 2) == "10"
    assert confidence_text([5, 2], [0.873, 0.1], 7) is None
    item = Item(target_label="cat", target_class=0)  # unsaved: no stored prediction, no confidence
    assert DESIGN.trial_content(item=item, option_order=[0, 1], wording=None)["predicted"] == "The AI says: cat"


@pytest.mark.parametrize(("correct_option", "choice", "team_right"), [
    (1, 0, True),   # a right prediction accepted
    (1, 1, False),  # a right prediction rejected
    (0, 0, False),  # a wrong prediction accepted
    (0, 1, True),   # a wrong prediction rejected
])  # fmt: skip
def test_scoring_accept_reject_on_right_and_wrong(correct_option: int, choice: int, team_right: bool) -> None:
    item = Item(options=["incorrect", "correct"], correct_option=correct_option, target_label="cat")
    assert DESIGN.answer_range(list(ORDER))[0] == 2
    chosen = 1 - choice  # accept = option 1 ("correct"), reject = option 0
    assert DESIGN.answer_score(item=item, option_order=list(ORDER), model_a_shown_left=None, choice=choice) == (chosen, team_right, None)
    assert DESIGN.correct_expected(chosen_option=chosen, correct_option=correct_option) is team_right
    assert DESIGN.practice_feedback(item=item, option_order=list(ORDER), model_a_shown_left=None)[0] == (0 if correct_option else 1)
    exported = DESIGN.export_answer(options=item.options, order=list(ORDER), chosen_option=chosen, score_model_a=None,
                                    model_a_shown_left=None, scale=[])  # fmt: skip
    assert (exported["answer"], exported["answer_position"]) == (ANSWERS[choice], choice)


# ---------------------------------------------------------------------------------------------- results


def _judgments(method, worker, item, right, accepted):  # type: ignore[no-untyped-def]
    """Judgments as ``selectors.judgments`` loads them: the design's answer columns from the stored option."""
    from studies.analysis import Judgments

    chosen = np.where(np.asarray(accepted, bool), 1, 0)
    answers = DESIGN.judgment_answers(chosen_option=chosen, position=1 - chosen, score_model_a=np.zeros(len(chosen)),
                                      score_known=np.zeros(len(chosen), bool), model_a_shown_left=np.ones(len(chosen), bool))  # fmt: skip
    names = tuple(sorted(set(method)))
    return Judgments(method=np.array([names.index(m) for m in method]), worker=np.asarray(worker), item=np.asarray(item),
                     method_names=names, correct=chosen == np.asarray(right, int), **answers)  # fmt: skip


def test_results_by_hand() -> None:
    # gradcam: items 0, 1 right predictions, 2, 3 wrong; image_only: items 4, 5 right, 6 wrong
    method = ["gradcam"] * 6 + ["image_only"] * 4
    worker = [0, 1, 0, 1, 0, 1, 2, 3, 2, 3]
    item = [0, 0, 1, 2, 2, 3, 4, 5, 6, 6]
    right = [1, 1, 1, 0, 0, 0, 1, 1, 0, 0]
    accepted = [1, 0, 1, 0, 1, 0, 1, 1, 1, 1]
    # gradcam: team right on 0, 2, 3, 5 (4 of 6); on right predictions 2/3, on wrong 2/3; AI alone 3/6
    # image_only (always accept): team 2/4; on right 2/2, on wrong 0/2; AI alone 2/4
    grad, image_only = decision_analysis(_judgments(method, worker, item, right, accepted), n_boot=500, seed=3).rows
    assert (grad.method, image_only.method) == ("gradcam", "image_only")
    assert (grad.accuracy, grad.accuracy_on_correct, grad.accuracy_on_incorrect) == pytest.approx((4 / 6, 2 / 3, 2 / 3))
    assert (grad.ai_accuracy, grad.team_minus_ai) == pytest.approx((0.5, 4 / 6 - 0.5))
    assert (image_only.accuracy, image_only.accuracy_on_correct, image_only.accuracy_on_incorrect) == (0.5, 1.0, 0.0)
    assert (image_only.ai_accuracy, image_only.team_minus_ai) == (0.5, 0.0)
    assert (grad.n_judgments_on_correct, grad.n_judgments_on_incorrect) == (3, 3)
    for row in (grad, image_only):
        assert row.ai_boot_low <= row.ai_accuracy <= row.ai_boot_high
        assert row.team_minus_ai_low <= row.team_minus_ai <= row.team_minus_ai_high
    # excluded workers leave every column: worker 0 alone judged items 0, 1 (right, accepted) and 2 (wrong, accepted)
    j = _judgments(method, worker, item, right, accepted)
    (alone,) = [r for r in decision_analysis(j, n_boot=50, exclude_workers=[1, 3]).rows if r.method == "gradcam"]
    assert (alone.n_judgments, alone.accuracy, alone.ai_accuracy, alone.team_minus_ai) == (3, pytest.approx(2 / 3),
                                                                                          pytest.approx(2 / 3), 0.0)  # fmt: skip


def _pigeonhole_interval(y: np.ndarray, worker: np.ndarray, item: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """An independent two-way (workers x items) cluster bootstrap of ``mean(y)``, written plainly: each
    replicate draws workers and items with replacement; a judgment counts (drawn times of its worker) x
    (drawn times of its item); 95% percentile interval."""
    rng = np.random.default_rng(seed)
    workers, w = np.unique(worker, return_inverse=True)
    items, i = np.unique(item, return_inverse=True)
    means = []
    for _ in range(n_boot):
        weight = np.bincount(rng.integers(len(workers), size=len(workers)), minlength=len(workers))[w] * \
            np.bincount(rng.integers(len(items), size=len(items)), minlength=len(items))[i]
        if weight.sum():
            means.append((weight * y).sum() / weight.sum())
    return tuple(np.percentile(means, [2.5, 97.5]))  # type: ignore[return-value]


def test_intervals_match_an_independent_bootstrap() -> None:
    rng = np.random.default_rng(11)
    n_workers, n_items = 24, 20
    worker, item = (a.ravel() for a in np.meshgrid(np.arange(n_workers), np.arange(n_items), indexing="ij"))
    keep = rng.random(worker.size) < 0.6
    worker, item = worker[keep], item[keep]
    right = (item % 2 == 0).astype(int)  # balanced: even items right predictions
    skill = rng.normal(0.5, 0.8, n_workers)[worker] + rng.normal(0, 0.5, n_items)[item]
    team_right = rng.random(worker.size) < 1 / (1 + np.exp(-skill))
    accepted = np.where(right == 1, team_right, ~team_right)
    (row,) = decision_analysis(_judgments(["gradcam"] * worker.size, worker, item, right, accepted), n_boot=4000, seed=5).rows
    team = team_right.astype(int)
    assert row.accuracy == pytest.approx(team.mean())
    assert row.ai_accuracy == pytest.approx(right.mean())
    assert row.team_minus_ai == pytest.approx(team.mean() - right.mean())
    for (low, high), reference in (
        ((row.boot_low, row.boot_high), team),
        ((row.ai_boot_low, row.ai_boot_high), right),
        ((row.team_minus_ai_low, row.team_minus_ai_high), team - right),
    ):
        ref_low, ref_high = _pigeonhole_interval(reference, worker, item, n_boot=4000, seed=99)
        assert low == pytest.approx(ref_low, abs=0.02), (low, ref_low)
        assert high == pytest.approx(ref_high, abs=0.02), (high, ref_high)
        assert ref_high - ref_low > 0.05


@pytest.fixture
def answered_in_arms() -> Study:
    """Two methods, one arm each (gradcam, guided_backprop), 3 right and 3 wrong predictions per method.
    Workers of the gradcam arm always accept; those of the other arm answer right (accept right
    predictions, reject wrong ones)."""
    study = _decision_study(methods=("gradcam", "guided_backprop"), n_main=6, n_catch=0, trials_per_participant=4,
                            judgments_per_item=2)  # fmt: skip
    study.arms = [{"name": "gradcam", "methods": ["gradcam"]}, {"name": "guided", "methods": ["guided_backprop"]}]
    study.save()
    for _ in range(4):
        client, token = _through_practice(study)
        arm = Participant.objects.get(token=token).arm
        while (trial := api(client, "get", "/api/v1/participant/trial", token).json()["trial"]) is not None:
            item = Item.objects.get(assignments__token=trial["token"])
            assert item.method == ("gradcam" if arm == "gradcam" else "guided_backprop")
            choice = 0 if arm == "gradcam" else _right_choice(item)
            api(client, "post", "/api/v1/participant/trial", token, {"assignment": trial["token"], "choice": choice})
        api(client, "post", "/api/v1/participant/complete", token)
    assert sorted(Participant.objects.filter(study=study).values_list("arm", flat=True)) == ["gradcam", "gradcam", "guided", "guided"]
    return study


def test_results_per_arm(answered_in_arms: Study, staff_client) -> None:  # type: ignore[no-untyped-def]
    from studies.services.results import study_results_compute, summary_rows

    results = study_results_compute(study=answered_in_arms)
    assert results.kind == "ai_assisted_decision"
    rows = {row.method: row for row in results.table(with_exclusions=False).rows}
    assert set(rows) == {"gradcam", "guided_backprop"}
    for method, row in rows.items():
        main = Response.objects.filter(assignment__participant__study=answered_in_arms,
                                       assignment__item__role=Item.Role.MAIN, assignment__item__method=method)  # fmt: skip
        n_right = main.filter(assignment__item__correct_option=1).count()
        n = main.count()
        assert row.n_judgments == n
        assert row.ai_accuracy == pytest.approx(n_right / n)
        if method == "gradcam":  # always accept: team = AI alone
            assert (row.accuracy_on_correct, row.accuracy_on_incorrect) == (1.0, 0.0)
            assert row.accuracy == pytest.approx(n_right / n)
            assert row.team_minus_ai == pytest.approx(0.0)
        else:  # always right
            assert (row.accuracy, row.accuracy_on_correct, row.accuracy_on_incorrect) == (1.0, 1.0, 1.0)
            assert row.team_minus_ai == pytest.approx(1 - n_right / n)
            assert row.team_minus_ai_low <= row.team_minus_ai <= row.team_minus_ai_high
    assert {"ai_accuracy", "team_minus_ai", "team_minus_ai_low", "accuracy_on_incorrect"} <= set(summary_rows(results)[0])
    cells = [{**DESIGN.results_row(r), "label": r.method} for r in results.table(with_exclusions=False).rows]
    html = render_to_string(DESIGN.results_template, {"part": "table", "rows": cells})
    assert "AI alone" in html
    assert "Team − AI alone" in html
    assert 'data-split-accuracy="incorrect"><strong>0.00%' in html
    page = staff_client.get(reverse("studies:results", args=[answered_in_arms.slug]))
    assert page.status_code == 200, page.content[:500]
    assert "Team − AI alone" in page.content.decode()


def test_tidy_export_says_accept_or_reject_and_the_audit_is_clean(answered_in_arms: Study) -> None:
    from studies.services.audit import study_audit
    from studies.services.exports import csv_lines, export_rows

    report = study_audit(study_id=answered_in_arms.pk, check_files=False)
    assert report.ok, report.problems  # the fixed option order [1, 0] is a permutation; correct flags re-derived

    header, rows = export_rows(study=answered_in_arms, kind="tidy")
    frame = pd.read_csv(io.StringIO("".join(csv_lines(header, rows))))
    assert set(frame["study_kind"]) == {"ai_assisted_decision"}
    assert set(frame["answer_label"]) == {"Accept", "Reject"}
    assert (frame.loc[frame["answer_label"] == "Accept", "answer_option"] == 1).all()
    assert (frame.loc[frame["answer_label"] == "Reject", "answer_position"] == 1).all()


# ---------------------------------------------------------------------------------------------- observers


def test_simulated_observers() -> None:
    rng = np.random.default_rng(0)
    read = lambda share: DESIGN.observer_read(stimuli=[b""], options=list(ANSWERS), class_label="cat",  # noqa: E731
                                              fraction=lambda png, label: share, rng=rng, noise=0.05, weak=0.1, strong=0.2)  # fmt: skip
    assert read(0.9) == {"option": 0}  # the map sits on the predicted object: accept
    assert read(0.0) == {"option": 1}  # a wrong prediction names an object the picture lacks: reject
    guesses = [DESIGN.observer_guess(options=list(ANSWERS), rng=rng)["option"] for _ in range(4000)]
    assert np.mean(np.asarray(guesses) == 0) == pytest.approx(0.5, abs=0.03)
    assert DESIGN.observer_first(options=list(ANSWERS)) == {"option": 0}
    synthetic = DESIGN.observer_synthetic(correct_option=0, quality=1.0, rng=rng)
    assert (synthetic["chosen_option"], synthetic["correct"]) == (0, True)  # a wrong prediction rejected


def test_openapi_lists_the_kind(client) -> None:  # type: ignore[no-untyped-def]
    schema = client.get(reverse("studies:api-openapi")).json()
    text = json.dumps(schema)
    assert '"ai_assisted_decision"' in text
    assert "`ai_assisted_decision`: `choice` = 0 to accept" in text
    enums = kind_enums(schema)
    assert enums
    assert all("ai_assisted_decision" in enum for enum in enums)

