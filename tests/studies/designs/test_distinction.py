"""The HIVE distinction design ("Which is the correct class?", ``studies/designs/distinction.py``).

Planning on hand-made ``Prediction`` rows (skips, balance, options in rank order) and on the
synthetic world's real predictions (single-object scenes of its 4 classes: an untrained, seeded
CNN; 4 maps per item); a worker's page and API trial (4 captioned panels in a per-participant
order, image URLs of one shape that serve the panel's own map); scoring; results split by right
and wrong top-1.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from django.template.loader import render_to_string
from django.test import Client
from django.urls import reverse

from studies.designs import design_for, kind_choices
from studies.fixtures.builders import TEST_CONSENT, synthetic_model_create, synthetic_scenes_import
from studies.models import (
    ClassifierModel,
    Image,
    ImageSet,
    Item,
    Job,
    Participant,
    Prediction,
    Response,
    Stimulus,
    Study,
)
from tests.studies.designs._worker import api, worker_through_practice

pytestmark = pytest.mark.django_db
DESIGN = design_for("distinction")
CLASSES = ["cat", "dog", "car", "tree", "boat"]


def test_registered() -> None:
    assert ("distinction", DESIGN.label) in kind_choices()
    assert DESIGN.sides == ("p1", "p2", "p3", "p4")
    assert DESIGN.stimulus_slots == ("a", "b", "c", "d")
    assert DESIGN.default_question == "Which is the correct class?"


# ---------------------------------------------------------------------------------------------- planning


def _study(top: list[list[int]], truths: list[str], *, seed: int = 7) -> Study:
    """A distinction study; image k shows ``truths[k]`` (a category, or "a+b" for two) and its stored
    prediction ranks ``top[k]``."""
    model = ClassifierModel.objects.create(name=f"m{seed}", arch="resnet18", class_names=CLASSES)
    image_set = ImageSet.objects.create(name=f"set{seed}", categories=CLASSES)
    study = Study.objects.create(name=f"d{seed}", kind="distinction", model=model, image_set=image_set,
                                 methods=["gradcam"], practice_trials=0, catch_trials=0, seed=seed,
                                 consent_text=TEST_CONSENT)  # fmt: skip
    for k, (ranks, truth) in enumerate(zip(top, truths, strict=True)):
        image = Image.objects.create(image_set=image_set, original_name=f"i{k}.png", sha256=f"{k + 500:064x}",
                                     width=16, height=16, categories=truth.split("+"), file=f"images/i{k}.png")  # fmt: skip
        Prediction.objects.create(model=model, image=image, weights_sha256="", top_classes=ranks,
                                  top_scores=[0.5, 0.2, 0.1, 0.1, 0.1][:len(ranks)])  # fmt: skip
    return study


def test_planner_uses_the_top4_skips_what_cannot_be_scored_and_balances() -> None:
    from studies.pipeline.plan import study_plan

    top = [[0, 1, 2, 3, 4]] * 4 + [[1, 0, 2, 3, 4], [2, 3, 0, 1, 4]] + [[1, 2, 3, 4, 0], [0, 1, 2, 3, 4], [0, 1, 2]]
    truths = ["cat"] * 6 + ["cat", "cat+dog", "cat"]
    study = _study(top, truths)
    summary = study_plan(study=study)
    main = list(study.items.filter(role=Item.Role.MAIN).select_related("image").order_by("image_id"))
    # 4 right top-1 + 2 wrong scorable; cut to 2 + 2. Skipped: cat at rank 5, a two-category image, 3 classes only
    assert summary.main == len(main) == 4
    assert sorted(item.correct_option for item in main) == [0, 0, 1, 2]
    for item in main:
        ranks = Prediction.objects.get(image=item.image).top_classes[:4]
        assert item.options == [CLASSES[c] for c in ranks]
        assert item.target_label == "cat"
        assert item.target_class == 0
        assert item.options[item.correct_option] == "cat"
    assert summary.notes == ("distinction: 1 image(s) skipped (several categories)",
                             "distinction: 1 image(s) skipped (no top-4 prediction)",
                             "distinction: 1 image(s) skipped (true class not in the top 4)")  # fmt: skip
    # the four slots: the maps of the four options' classes, one model, the item's method
    from studies.pipeline.plan import item_slots

    slots = item_slots(study, main)
    for item in main:
        mine = sorted((s.side, s.key.target_class, s.key.method, s.key.model_id) for s in slots if s.item_id == item.pk)
        ranks = Prediction.objects.get(image=item.image).top_classes[:4]
        assert mine == [(slot, cls, "gradcam", study.model_id) for slot, cls in zip("abcd", ranks, strict=True)]


def test_planner_refuses_all_right() -> None:
    from studies.pipeline.plan import study_plan

    study = _study([[0, 1, 2, 3]] * 3, ["cat"] * 3)
    assert study_plan(study=study).main == 0
    assert "top-4" in DESIGN.no_items_message(study)


def test_prepare_on_the_synthetic_world(tmp_path: Path) -> None:
    """The real pipeline: an untrained seeded synthetic CNN (4 classes) on single-object scenes;
    each main item gets the 4 maps of its top-4 classes; catch/practice items the right map and 3
    maps gated to the background."""
    from studies.lib.scenes import GATED_BACKGROUND_PREFIX
    from studies.pipeline.prepare import prepare_inline

    study = Study.objects.create(
        name="distinction", kind="distinction", model=synthetic_model_create(name="m", directory=tmp_path, seed=0),
        image_set=synthetic_scenes_import(n=24, seed=3, two_objects=False), methods=["gradcam"],
        catch_trials=1, practice_trials=1, seed=123, consent_text=TEST_CONSENT,
        explainer_options={"display_size": 64, "chunk_size": 8},
    )  # fmt: skip
    job = prepare_inline(study_id=study.pk)
    assert job.status == Job.Status.DONE, job.error
    main = list(study.items.filter(role=Item.Role.MAIN).select_related("image"))
    assert main
    assert sum(item.correct_option == 0 for item in main) == sum(item.correct_option != 0 for item in main)
    for item in main:
        ranks = list(Prediction.objects.get(model=study.model, image=item.image).top_classes)[:4]
        stimuli = [getattr(item, f"stimulus_{slot}") for slot in "abcd"]
        assert all(s is not None for s in stimuli)
        assert [s.target_class for s in stimuli] == ranks
        assert {s.method for s in stimuli} == {"gradcam"}
        assert {s.model_id for s in stimuli} == {study.model_id}
        assert len({s.pk for s in stimuli}) == 4  # four rows (an untrained net may draw two alike)
    obvious = list(study.items.exclude(role=Item.Role.MAIN))
    assert {item.role for item in obvious} == {Item.Role.CATCH, Item.Role.PRACTICE}
    for item in obvious:
        methods = [getattr(item, f"stimulus_{slot}").method for slot in "abcd"]
        assert {getattr(item, f"stimulus_{slot}").target_class for slot in "abcd"} == {item.target_class}
        assert methods[item.correct_option] == "gradcam"
        assert all(m == GATED_BACKGROUND_PREFIX + "gradcam" for k, m in enumerate(methods) if k != item.correct_option)


# ---------------------------------------------------------------------------------------------- the worker


def _stimulus(image: Image, model: ClassifierModel, cls: int, k: int) -> Stimulus:
    """A plain PNG whose red level is ``40 * cls`` (so a served image names its class)."""
    import hashlib

    from django.core.files.base import ContentFile

    from studies.fixtures.builders import png_bytes

    data = png_bytes((40 * cls, 7, 7))
    digest = hashlib.sha256(data + bytes([k])).hexdigest()
    stimulus = Stimulus(image=image, model=model, method="gradcam", target_class=cls, settings={}, settings_hash="t",
                        sha256=digest)  # fmt: skip
    stimulus.file.save(f"stimuli/{digest[:2]}/{digest}.png", ContentFile(data), save=False)
    stimulus.save()
    return stimulus


def _worker_study(*, n_main: int = 4, n_catch: int = 1, n_practice: int = 1, trials: int = 4, judgments: int = 2) -> Study:
    """A live distinction study whose items hold 4 stimuli each (slot k: class of option k); main
    item k's true class is at rank ``k % 2`` (right and wrong top-1 alternate)."""
    model = ClassifierModel.objects.create(name="wm", arch="resnet18", class_names=CLASSES)
    image_set = ImageSet.objects.create(name="wset", categories=CLASSES)
    study = Study.objects.create(name="dw", kind="distinction", model=model, image_set=image_set, methods=["gradcam"],
                                 judgments_per_item=judgments, trials_per_participant=trials, catch_trials=n_catch,
                                 practice_trials=n_practice, status=Study.Status.LIVE, seed=12345,
                                 consent_text=TEST_CONSENT)  # fmt: skip
    rng = random.Random(1)
    roles = [Item.Role.MAIN] * n_main + [Item.Role.CATCH] * n_catch + [Item.Role.PRACTICE] * n_practice
    for index, role in enumerate(roles):
        image = Image.objects.create(image_set=image_set, original_name=f"w{index}.png", sha256=f"{index + 900:064x}",
                                     width=16, height=16, categories=["cat"], file=f"images/w{index}.png")  # fmt: skip
        rank = index % 2 if role == Item.Role.MAIN else 0
        classes = [1, 0, 2, 3] if rank else [0, 1, 2, 3]
        stimuli = {f"stimulus_{slot}": _stimulus(image, model, cls, index) for slot, cls in zip("abcd", classes, strict=True)}
        Item.objects.create(study=study, role=role, method="gradcam", image=image, target_class=0, target_label="cat",
                            options=[CLASSES[c] for c in classes], correct_option=rank,
                            tie_rank=rng.randrange(10**6), **stimuli)  # fmt: skip
    return study


def test_make_worker_study_fills_the_four_slots_of_one_model() -> None:
    """The shared builder: one model, four slots holding its maps of the four options' classes
    (catch and practice: the target's map, gated off the object in the three wrong panels)."""
    from studies.fixtures.builders import make_worker_study
    from studies.lib.scenes import GATED_BACKGROUND_PREFIX

    study = make_worker_study(kind="distinction", n_main=2, n_catch=1, n_practice=1, trials_per_participant=3)
    for item in study.items.all():
        stimuli = [getattr(item, f"stimulus_{slot}") for slot in "abcd"]
        assert {s.model_id for s in stimuli} == {study.model_id}
        assert len(item.options) == 4
        assert item.options[item.correct_option] == item.target_label
        if item.role == Item.Role.MAIN:
            assert [s.target_class for s in stimuli] == [CLASSES.index(name) for name in item.options]
        else:
            assert [s.method for s in stimuli] == [("gradcam" if k == item.correct_option
                                                    else GATED_BACKGROUND_PREFIX + "gradcam") for k in range(4)]
    client, token = worker_through_practice(study, right_choice=lambda t: t["options"].index("cat"),
                                            check_trial=lambda t: len(t["images"]) == 4)  # fmt: skip
    trial = api(client, "get", "/api/v1/participant/trial", token).json()["trial"]
    assert [image["side"] for image in trial["images"]] == ["p1", "p2", "p3", "p4"]


def _right_choice(trial: dict) -> int:
    return trial["options"].index("cat")


def _served_class(client: Client, url: str) -> int:
    """Which class's map an image URL serves (the stimuli's red level is 40 * class)."""
    from io import BytesIO

    from PIL import Image as PILImage

    response = client.get(url)
    assert response.status_code == 200, url
    body = b"".join(response.streaming_content)
    return int(np.asarray(PILImage.open(BytesIO(body)).convert("RGB"))[0, 0, 0]) // 40


def test_worker_sees_four_captioned_panels_in_own_order_and_is_scored() -> None:
    study = _worker_study()
    orders = []
    for worker in range(2):
        client, token = worker_through_practice(study, right_choice=_right_choice,
                                                check_trial=lambda t: len(t["images"]) == 4)  # fmt: skip
        first = True
        while (trial := api(client, "get", "/api/v1/participant/trial", token).json()["trial"]) is not None:
            item = Item.objects.get(assignments__token=trial["token"])
            assert trial["kind"] == "distinction"
            assert trial["question"] == "Which is the correct class?"
            assert [image["side"] for image in trial["images"]] == ["p1", "p2", "p3", "p4"]
            assert [image["label"] for image in trial["images"]] == trial["options"]
            assert sorted(trial["options"]) == sorted(item.options)
            orders.append(tuple(trial["options"]))
            # one URL shape per panel: .../img/<assignment>/p<k>; nothing names the class or the answer
            for k, image in enumerate(trial["images"], start=1):
                assert image["url"].endswith(f"/img/{trial['token']}/p{k}")
                cls = _served_class(client, image["url"])
                assert CLASSES[cls] == image["label"], "the panel shows its caption's map"
            assert client.get(trial["images"][0]["url"].rsplit("/", 1)[0] + "/main").status_code == 404
            if first and worker == 0:
                html = client.get(reverse("studies:worker-home", args=[token])).content.decode()
                assert 'class="choices distinction"' in html
                assert html.count("data-stimulus") == 4
                positions = [html.index(f'data-panel="p{k}"') for k in range(1, 5)]
                assert positions == sorted(positions)
                for label in trial["options"]:
                    assert f"{label}</figcaption>" in html
                refused = api(client, "post", "/api/v1/participant/trial", token, {"assignment": trial["token"], "choice": 4})
                assert refused.status_code == 400
                first = False
            choice = _right_choice(trial)
            outcome = api(client, "post", "/api/v1/participant/trial", token,
                          {"assignment": trial["token"], "choice": choice}).json()  # fmt: skip
            assert outcome["outcome"] == "recorded", outcome
            response = Response.objects.get(assignment__token=trial["token"])
            assert response.chosen_option == item.correct_option
            assert response.correct is True
    assert len(set(orders)) > 1, "the panel order is drawn per participant and trial"


def test_scoring_follows_the_displayed_order() -> None:
    item = Item(options=["dog", "cat", "car", "tree"], correct_option=1)
    for order in ([0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]):
        for choice in range(4):
            chosen, correct, score = DESIGN.answer_score(item=item, option_order=order, model_a_shown_left=False,
                                                         choice=choice)  # fmt: skip
            assert chosen == order[choice]
            assert correct is (order[choice] == 1)
            assert score is None
        assert DESIGN.side_slot(f"p{order.index(1) + 1}", option_order=order, model_a_shown_left=False) == "b"
    assert DESIGN.side_slot("main", option_order=[0, 1, 2, 3], model_a_shown_left=None) is None


def test_other_designs_map_sides_as_before() -> None:
    trust, discrimination = design_for("trust"), design_for("class_discrimination")
    assert trust.side_slot("left", option_order=[], model_a_shown_left=True) == "a"
    assert trust.side_slot("left", option_order=[], model_a_shown_left=False) == "b"
    assert trust.side_slot("right", option_order=[], model_a_shown_left=None) == "b"
    assert discrimination.side_slot("main", option_order=[1, 0], model_a_shown_left=None) == "a"
    assert discrimination.side_slot("p1", option_order=[1, 0], model_a_shown_left=None) is None


# ---------------------------------------------------------------------------------------------- results


def test_results_split_by_top1() -> None:
    from studies.services.results import study_results_compute

    study = _worker_study(n_main=4, n_catch=0, trials=4, judgments=2)
    for _ in range(2):
        client, token = worker_through_practice(study, right_choice=_right_choice)
        while (trial := api(client, "get", "/api/v1/participant/trial", token).json()["trial"]) is not None:
            item = Item.objects.get(assignments__token=trial["token"])
            # right on items whose top-1 is right, wrong (the top-1 class) on the others
            choice = trial["options"].index(item.options[0])
            api(client, "post", "/api/v1/participant/trial", token, {"assignment": trial["token"], "choice": choice})
        api(client, "post", "/api/v1/participant/complete", token)
    assert Participant.objects.filter(study=study).count() == 2
    # a trial stores its panel order only; the split reads the items' right answers from the loader
    from studies.models import Assignment
    from studies.selectors.judgments import study_judgments_load
    from studies.services.audit import study_audit

    assert set(Assignment.objects.filter(participant__study=study).values_list("model_a_shown_left", flat=True)) == {None}
    loaded = study_judgments_load(study=study)
    truth = dict(Item.objects.filter(study=study).values_list("id", "correct_option"))
    assert loaded.judgments.item_right_option.tolist() == [truth[pk] for pk in loaded.item_id]
    assert loaded.judgments.answer.max() < 4, "the answer is the option chosen"
    assert study_audit(study_id=study.pk, check_files=False).ok  # the stored choices (no Robot A side)
    results = study_results_compute(study=study)
    (row,) = results.table(with_exclusions=False).rows
    assert row.chance == 0.25
    assert (row.accuracy_on_correct, row.accuracy_on_incorrect) == (1.0, 0.0)
    assert row.n_judgments_on_correct == row.n_judgments_on_incorrect == 4
    assert row.accuracy == 0.5
    for suffix in ("on_correct", "on_incorrect"):
        assert np.isfinite(getattr(row, f"boot_low_{suffix}"))
    cells = DESIGN.results_row(row)
    html = render_to_string(DESIGN.results_template, {"part": "table", "rows": [{**cells, "label": "gradcam"}]})
    assert 'data-split-accuracy="correct"><strong>100' in html
    assert 'data-split-accuracy="incorrect"><strong>0' in html
    assert "Chance is 25%" in html


def test_openapi_lists_the_panels(client) -> None:  # type: ignore[no-untyped-def]
    schema = client.get(reverse("studies:api-openapi")).json()
    side = schema["components"]["schemas"]["TrialImage"]["properties"]["side"]
    assert side["enum"] == ["main", "left", "right", "p1", "p2", "p3", "p4"]


def test_four_slots_load_in_the_queries_of_two(django_assert_num_queries) -> None:  # type: ignore[no-untyped-def]
    """The practice pool and the pipeline's stale-link check read slots c and d with the items
    (``select_related``): as many queries as a two-slot (trust) study."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from studies.fixtures.builders import make_worker_study
    from studies.pipeline.stages import _unlink_stale
    from studies.services.participation import practice_pool

    study = make_worker_study(kind="distinction", n_main=2, n_practice=2)
    with django_assert_num_queries(1):
        pool = practice_pool(study=study)
        assert all(getattr(item, f"stimulus_{slot}").file.name for item in pool for slot in "abcd")
    with CaptureQueriesContext(connection) as queries:
        _unlink_stale(study)  # the builder's stimuli are not the planner's: all 16 links are stale
    reads = [q["sql"] for q in queries if q["sql"].startswith("SELECT")]
    assert len(reads) == 2, reads  # the items with their four stimuli, then item_slots' images
    assert not [q for q in reads if 'FROM "studies_stimulus"' in q], "no stimulus read on its own"
    assert Item.objects.filter(study=study, stimulus_c__isnull=True, stimulus_d__isnull=True).count() == 4
