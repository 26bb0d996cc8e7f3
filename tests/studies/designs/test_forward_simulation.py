"""The forward-simulation design (Colin et al. 2022; ``studies/designs/forward_simulation.py``).

Planning (the model's decisions, balanced right and wrong, a copy of the test items per arm), the
learning trial's feedback (the model's decision), the test trial's stimulus (the control's: no
explanation), scoring against the model's decision (not the truth), arm filtering of the learning
items, the utility ratio against a hand computation and its interval's coverage, the OpenAPI enum.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from django.test import Client
from django.urls import reverse

from studies.designs import design_for, kind_choices
from studies.designs.forward_simulation import MODEL_ANSWERS, utility_ratio
from studies.fixtures.builders import make_worker_study, predicted_images_create
from studies.models import Item, Participant, Prediction, Response, Study, new_token
from tests.studies.designs._worker import api, kind_enums

pytestmark = pytest.mark.django_db
DESIGN = design_for("forward_simulation")
CONTROL, EXPLAINED = "gradcam", "guided_backprop"  # the control stands in for image_only (not registered yet)
ARMS = [{"name": "control", "methods": [CONTROL]}, {"name": "explained", "methods": [EXPLAINED]}]
SETTINGS = {"methods": [CONTROL, EXPLAINED], "arms": ARMS, "practice_trials": 2, "practice_pass_fraction": 0.0,
            "practice_attempts": 2, "catch_trials": 0}  # fmt: skip


def test_registered_and_its_settings_are_enforced() -> None:
    assert ("forward_simulation", DESIGN.label) in kind_choices()
    assert DESIGN.arm_roles == ("main", "practice")
    assert design_for("agreement").arm_roles == ("main",), "other designs keep today's behaviour"
    study = make_worker_study(kind="forward_simulation", n_main=0, n_practice=0, name="cfg")
    errors = DESIGN.config_errors(study)
    assert {"arms", "practice_pass_fraction"} <= set(errors)
    for key, value in SETTINGS.items():
        setattr(study, key, value)
    assert DESIGN.config_errors(study) == {}
    study.arms = [ARMS[1], ARMS[0] | {"methods": [CONTROL, EXPLAINED]}]
    assert "exactly one method" in DESIGN.config_errors(study)["arms"]
    study.arms, study.practice_attempts, study.catch_trials = ARMS, 1, 2
    assert {"practice_attempts", "catch_trials"} <= set(DESIGN.config_errors(study))


# ---------------------------------------------------------------------------------------------- planning


def _study_with_predictions(top1: list[int], *, n_practice: int = 2) -> Study:
    """Images of a cat and a dog (classes cat, dog, car, tree): image k's top-1 is ``top1[k]``
    (0 and 1 right, 2 and 3 wrong: failure cases); two arms."""
    study = make_worker_study(kind="forward_simulation", n_main=0, n_practice=0, name="plan")
    for key, value in SETTINGS.items():
        setattr(study, key, value)
    study.practice_trials = n_practice
    study.save()
    predicted_images_create(study=study, top1=top1, first=2000, size=64, boxed=True)
    return study


def test_planner_asks_the_models_decision_balanced_with_a_copy_per_arm() -> None:
    from studies.pipeline.plan import item_slots, study_plan

    study = _study_with_predictions([0, 1, 0, 2, 1, 3, 0, 1, 2, 1, 0, 3, 0, 1])  # 10 right, 4 wrong
    study_plan(study=study)
    main = list(study.items.filter(role=Item.Role.MAIN).select_related("image"))
    by_method = {m: sorted((i.image_id, i.target_label, tuple(i.options)) for i in main if i.method == m)
                 for m in (CONTROL, EXPLAINED)}  # fmt: skip
    assert by_method[CONTROL] == by_method[EXPLAINED], "each arm has the same test questions"
    names = study.model.class_names
    rights = []
    for item in main:
        top = Prediction.objects.get(model=study.model, image=item.image).top_classes
        assert item.target_label == names[top[0]] == item.options[item.correct_option], "right = the model's decision"
        right = item.target_label in item.image.categories
        rights.append(right)
        assert item.correct_option == (0 if right else 1), "the stored order records whether the model was right"
        other = item.options[1 - item.correct_option]
        assert other != item.target_label
        assert other in item.image.categories, "the other option: the image's other (or true) category"
    assert rights.count(True) == rights.count(False) > 0, "as many failures as right decisions"
    # the test phase shows the control's stimulus whatever the arm; the learning items their own method's map
    # of the model's top-1 class
    slots = {slot.item_id: slot for slot in item_slots(study)}
    for item in main:
        assert slots[item.pk].key.method == CONTROL
    practice = list(study.items.filter(role=Item.Role.PRACTICE).select_related("image"))
    assert {item.method for item in practice} == {CONTROL, EXPLAINED}
    for item in practice:
        top = Prediction.objects.get(model=study.model, image=item.image).top_classes
        assert item.options[0] == names[top[0]]
        assert item.correct_option == 0
        assert slots[item.pk].key.method == item.method
        assert slots[item.pk].key.target_class == top[0]


def test_planner_refuses_a_model_right_everywhere() -> None:
    from studies.pipeline.plan import study_plan

    study = _study_with_predictions([0, 1, 0, 1])
    assert study_plan(study=study).main == 0
    assert "right" in DESIGN.no_items_message(study)


# ---------------------------------------------------------------------------------------------- the worker


def _arm_study() -> Study:
    """A live two-arm study: 4 test images (the model wrong on 2: it answers "car"), a copy per arm;
    2 learning items per arm."""
    study = make_worker_study(kind="forward_simulation", n_main=4, n_practice=4, trials_per_participant=4,
                              judgments_per_item=3)  # fmt: skip
    Study.objects.filter(pk=study.pk).update(**SETTINGS)
    study.refresh_from_db()
    main = list(study.items.filter(role=Item.Role.MAIN).order_by("pk"))
    for item in main[1::2]:  # failures: the model says "car" on a cat-and-dog picture
        item.options = ["car", item.options[0]]
        item.target_label, item.target_class = "car", 2
        item.save()
    for item in main:
        item.pk, item.public_id, item.method = None, new_token(), EXPLAINED
        item.save()
    practice = list(study.items.filter(role=Item.Role.PRACTICE).order_by("pk"))
    for item in practice[2:]:
        item.method = EXPLAINED
        item.save(update_fields=["method"])
    assert DESIGN.config_errors(study) == {}
    return study


def _enter(study: Study) -> tuple[Client, str, Participant]:
    client = Client()
    entered = client.post(f"/api/v1/studies/{study.slug}/enter", data="{}", content_type="application/json")
    token = entered.json()["participant_token"]
    api(client, "post", "/api/v1/participant/consent", token, {"agree": True, "consent_version": study.consent_version})
    return client, token, Participant.objects.get(token=token)


def test_learning_then_test_phase_by_arm() -> None:
    study = _arm_study()
    seen: dict[str, set[str]] = {}
    for _ in range(4):
        client, token, participant = _enter(study)
        method = {arm["name"]: arm["methods"][0] for arm in ARMS}[participant.arm]
        practice = api(client, "get", "/api/v1/participant/practice", token).json()
        items = [Item.objects.get(public_id=trial["token"]) for trial in practice["trials"]]
        assert len(items) == 2
        assert {item.method for item in items} == {method}, "a participant sees its own arm's learning items only"
        # the learning trial: guess (here always wrong), then the model's decision is shown; no screening
        wrong = {trial["token"]: 1 - trial["options"].index(item.options[0])
                 for trial, item in zip(practice["trials"], items, strict=True)}  # fmt: skip
        graded = api(client, "post", "/api/v1/participant/practice", token, {"answers": wrong}).json()
        assert graded["passed"] is True, graded
        assert graded["n_correct"] == 0
        for fb, trial, item in zip(graded["feedback"], practice["trials"], items, strict=True):
            assert fb["right_answer"] == MODEL_ANSWERS.format(label=item.options[0])
            assert fb["correct_choice"] == trial["options"].index(item.options[0])
        # the test phase: the arm's copy of the test items; right = the model's decision, not the truth
        while (trial := api(client, "get", "/api/v1/participant/trial", token).json()["trial"]) is not None:
            item = Item.objects.get(assignments__token=trial["token"])
            assert item.role == Item.Role.MAIN
            assert item.method == method
            assert trial["question"] == "Which of the two will the model answer?"
            assert sorted(trial["options"]) == sorted(item.options)
            choice = trial["options"].index(item.options[0])
            api(client, "post", "/api/v1/participant/trial", token, {"assignment": trial["token"], "choice": choice})
            response = Response.objects.get(assignment__token=trial["token"])
            assert response.correct is True
            assert response.chosen_option == 0
            seen.setdefault(participant.arm, set()).add(item.options[0])
    assert set(seen) == {"control", "explained"}
    assert all("car" in labels for labels in seen.values()), "failures scored by the model's (wrong) answer"


def test_scoring_against_the_models_decision() -> None:
    item = Item(options=["car", "cat"], correct_option=0, target_label="car")  # the model is wrong: "car"
    assert DESIGN.answer_score(item=item, option_order=[1, 0], model_a_shown_left=None, choice=1) == (0, True, None)
    assert DESIGN.answer_score(item=item, option_order=[1, 0], model_a_shown_left=None, choice=0) == (1, False, None)
    assert DESIGN.practice_feedback(item=item, option_order=[1, 0], model_a_shown_left=None) == (
        1, None, "the model answers “car”")


def test_trial_page_draws_the_design_template() -> None:
    study = _arm_study()
    client, token, _ = _enter(study)
    practice = client.get(reverse("studies:worker-practice", args=[token]))
    assert practice.status_code == 200
    assert 'class="choices forward-simulation"' in practice.content.decode()


# ---------------------------------------------------------------------------------------------- the utility


def test_utility_ratio_against_a_hand_computation() -> None:
    # control (arm 0): workers 0, 1; explained (arm 1): workers 2, 3; items 0..2
    arm = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    worker = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    item = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])
    correct = np.array([1, 0, 0, 1, 1, 0, 1, 1, 1, 1, 1, 0], bool)
    control, explained = utility_ratio(correct, arm, worker, item, n_arms=2, n_boot=500, seed=3)
    assert control.ratio == 1.0
    assert explained.ratio == pytest.approx((5 / 6) / (3 / 6))
    assert explained.low <= explained.ratio <= explained.high
    assert np.isfinite(explained.low)
    again = utility_ratio(correct, arm, worker, item, n_arms=2, n_boot=500, seed=3)
    assert again[1] == explained, "seeded"


def test_analysis_rows_carry_the_utility() -> None:
    from studies.analysis import Judgments
    from studies.designs.forward_simulation import forward_simulation_analysis

    rng = np.random.default_rng(0)
    worker = np.repeat(np.arange(20), 10)
    method = (worker >= 10).astype(np.intp)
    item = np.tile(np.arange(10), 20) + 10 * method
    correct = rng.random(200) < np.where(method == 1, 0.8, 0.6)
    j = Judgments(method=method, worker=worker, item=item, method_names=(CONTROL, EXPLAINED), correct=correct)
    rows = forward_simulation_analysis(j, n_boot=300, seed=1).rows
    assert rows[0].utility == 1.0
    assert rows[1].utility == pytest.approx(correct[method == 1].mean() / correct[method == 0].mean())
    assert rows[1].utility_low <= rows[1].utility <= rows[1].utility_high
    assert rows[1].accuracy == pytest.approx(correct[method == 1].mean())
    dropped = forward_simulation_analysis(j, n_boot=0, exclude_workers=[0, 1]).rows
    assert dropped[1].utility == pytest.approx(correct[method == 1].mean() / correct[(method == 0) & (worker > 1)].mean())


def test_accuracy_is_reported_where_the_model_was_right_and_where_it_was_wrong() -> None:
    """Items 0-4 of each arm: the model right (stored right answer 0); items 5-9: wrong (1)."""
    from studies.analysis import Judgments
    from studies.designs.forward_simulation import forward_simulation_analysis

    rng = np.random.default_rng(3)
    worker = np.repeat(np.arange(20), 10)
    method = (worker >= 10).astype(np.intp)
    local = np.tile(np.arange(10), 20)
    item = local + 10 * method
    model_wrong = local >= 5
    correct = rng.random(200) < np.where(model_wrong, 0.35, 0.85)
    j = Judgments(method=method, worker=worker, item=item, method_names=(CONTROL, EXPLAINED), correct=correct,
                  item_right_option=model_wrong.astype(np.intp))  # fmt: skip
    rows = forward_simulation_analysis(j, n_boot=300, seed=1).rows
    for m, row in enumerate(rows):
        assert row.accuracy_on_correct == pytest.approx(correct[(method == m) & ~model_wrong].mean())
        assert row.accuracy_on_incorrect == pytest.approx(correct[(method == m) & model_wrong].mean())
        assert row.n_judgments_on_correct + row.n_judgments_on_incorrect == row.n_judgments
        assert row.boot_low_on_incorrect <= row.accuracy_on_incorrect <= row.boot_high_on_incorrect


def _expit(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def test_utility_interval_coverage_on_simulated_studies() -> None:
    """200 simulated studies, nominal 95%: logit P(right) = mu_arm + worker effect (sd 0.8) + item
    effect (sd 1.2; the same 20 images in both arms, one item code: ``selectors.judgments`` codes an
    item by (image, target class), so the arms' copies are paired), 15 workers per arm answering
    every image. The true utility is the ratio of the population means (Gauss-Hermite over the
    N(0, 0.8^2 + 1.2^2) effects). The pigeonhole bootstrap is conservative when the judgment-level
    noise dominates (``studies.analysis.stats``), so the effects are those of crowd data, not zero."""
    mu = {0: 0.2, 1: 1.0}
    sd_worker, sd_item = 0.8, 1.2
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    spread = np.hypot(sd_worker, sd_item)
    truth = [float((weights * _expit(mu[a] + spread * nodes)).sum() / weights.sum()) for a in (0, 1)]
    true_ratio = truth[1] / truth[0]
    rng = np.random.default_rng(16)
    n_workers, n_items, hits, n_sim = 15, 20, 0, 200
    for sim in range(n_sim):
        item_effect = rng.normal(0, sd_item, n_items)
        arms, workers, items, correct = [], [], [], []
        for a in (0, 1):
            for w in range(n_workers):
                p = _expit(mu[a] + rng.normal(0, sd_worker) + item_effect)
                arms.append(np.full(n_items, a))
                workers.append(np.full(n_items, a * n_workers + w))
                items.append(np.arange(n_items))
                correct.append(rng.random(n_items) < p)
        u = utility_ratio(np.concatenate(correct), np.concatenate(arms), np.concatenate(workers),
                          np.concatenate(items), n_arms=2, n_boot=400, seed=sim)[1]  # fmt: skip
        hits += u.low <= true_ratio <= u.high
    coverage = hits / n_sim
    print(f"utility ratio CI coverage: {coverage:.3f} (true ratio {true_ratio:.3f}, nominal 0.95)")
    assert 0.88 <= coverage <= 0.99, coverage


# ---------------------------------------------------------------------------------------------- OpenAPI


def test_openapi_lists_the_kind(client) -> None:  # type: ignore[no-untyped-def]
    schema = client.get(reverse("studies:api-openapi")).json()
    text = json.dumps(schema)
    assert "`forward_simulation`: `choice` = 0-based index into `options`" in text
    enums = kind_enums(schema)
    assert enums
    assert all("forward_simulation" in enum for enum in enums), enums



def test_each_arm_is_taught_and_keyed_by_its_own_methods_only() -> None:
    """The worked example, the practice pool and the colour key follow the participant's arm; the
    MTurk-style preview (no arm yet) shows no worked example, which would teach one arm to all."""
    from studies.selectors.participation import study_colour_key
    from studies.services.participation import practice_example, practice_example_shown, practice_items

    study = _arm_study()
    assert practice_example_shown(study=study) is False
    seen_arms = set()
    for _ in range(4):
        client, token, participant = _enter(study)
        seen_arms.add(participant.arm)
        methods = {a["name"]: set(a["methods"]) for a in study.arms}[participant.arm]
        pool = practice_items(study=study, participant=participant)
        assert pool
        assert {item.method for item in pool} <= methods
        assert practice_example(study=study, pool=pool).method in methods
        page = client.get(f"/p/{token}/").content.decode()
        shown = set(re.findall(r'data-key-kind="([a-z]+)"', page))
        assert shown == {row.kind for row in study_colour_key(study, participant.arm)}
    assert seen_arms == {a["name"] for a in study.arms}
