"""The design contract, proved by a third design that lives only in the tests (``yes_no.py`` here).

One module and one template, no edit elsewhere: the design registers itself, the pipeline plans
and prepares its items on the synthetic world, a worker reads its trial page and API payload and
answers, the answer is scored, and the results, the tidy export and the OpenAPI schema carry it.
Each step is its own test, so a missing hook shows as the step it breaks.
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
from django.test import Client
from django.urls import reverse

from studies.designs import design_for, designs, kind_choices, unregister
from studies.designs.registry import register
from studies.fixtures.builders import make_worker_study, synthetic_model_create, synthetic_scenes_import
from studies.models import Item, Job, Participant, Response, Study
from tests.studies.designs._worker import api, kind_enums, worker_through_practice

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.django_db


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("xaistudy_test_designs_yes_no", HERE / "yes_no.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def yes_no(settings) -> Iterator[ModuleType]:  # type: ignore[no-untyped-def]
    """The design registered, its template findable; unregistered afterwards."""
    module = _load()
    register(module.DESIGN)
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [*settings.TEMPLATES[0]["DIRS"], HERE / "templates"]}]
    try:
        yield module
    finally:
        unregister("yes_no")


# ---------------------------------------------------------------------------------------------- registry


def test_registers_itself_and_leaves_with_its_fixture(yes_no: ModuleType) -> None:
    assert design_for("yes_no") is yes_no.DESIGN
    assert ("yes_no", yes_no.DESIGN.label) in kind_choices()
    assert "yes_no" in [design.name for design in designs()]


def test_unregistered_after_the_fixture() -> None:
    assert "yes_no" not in [design.name for design in designs()]


# ---------------------------------------------------------------------------------------------- planning


def _prepare(tmp_path: Path) -> Study:
    from studies.fixtures.builders import TEST_CONSENT
    from studies.pipeline.prepare import prepare_inline

    study = Study.objects.create(
        name="yes/no", kind="yes_no", model=synthetic_model_create(name="m", directory=tmp_path, seed=0),
        image_set=synthetic_scenes_import(n=3, seed=7), methods=["gradcam", "guided_backprop"],
        catch_trials=1, practice_trials=1, seed=123, consent_text=TEST_CONSENT,
        explainer_options={"display_size": 64, "chunk_size": 2},
    )  # fmt: skip
    job = prepare_inline(study_id=study.pk)
    assert job.status == Job.Status.DONE, job.error
    return study


def test_plan_and_prepare_on_the_synthetic_world(yes_no: ModuleType, tmp_path: Path) -> None:
    study = _prepare(tmp_path)
    main = list(study.items.filter(role=Item.Role.MAIN).order_by("pk"))
    main_images = {item.image_id for item in main}
    assert main_images
    assert len(main) == len(main_images) * 2 * 2  # each main scene x both its targets x two methods
    assert all(item.options == ["yes", "no"] for item in main)
    assert {item.correct_option for item in main} == {0, 1}, "yes and no both right on some item"
    assert all(item.stimulus_a_id and item.stimulus_b_id is None for item in main)
    for item in main:
        named = yes_no.named_category(item)
        assert named in item.image.categories
        assert (named == item.target_label) == (item.correct_option == 0)
    obvious = study.items.exclude(role=Item.Role.MAIN)
    assert obvious.filter(role=Item.Role.CATCH).exists()
    assert obvious.filter(role=Item.Role.PRACTICE).exists()
    assert all(item.options == ["yes", "no"] and item.correct_option in (0, 1) for item in obvious)


# ---------------------------------------------------------------------------------------------- the worker


def _yes_no_right(trial: dict) -> int:
    item = Item.objects.get(public_id=trial["token"])
    return trial["options"].index(item.options[item.correct_option])


def _worker_through_practice(study: Study) -> tuple[Client, str]:
    return worker_through_practice(study, right_choice=_yes_no_right)


def test_worker_reads_the_trial_page_and_payload_and_is_scored(yes_no: ModuleType) -> None:
    study = make_worker_study(kind="yes_no", n_main=4, n_catch=1, trials_per_participant=2)
    assert all(item.options == ["yes", "no"] for item in study.items.all())
    client, token = _worker_through_practice(study)
    trial = api(client, "get", "/api/v1/participant/trial", token).json()["trial"]
    assert trial["kind"] == "yes_no"
    assert sorted(trial["options"]) == ["no", "yes"]
    assert trial["scale"] == []
    assert [image["side"] for image in trial["images"]] == ["main"]
    assignment_item = Item.objects.get(assignments__token=trial["token"])
    named = yes_no.named_category(assignment_item)
    assert named in trial["predicted"], trial
    page = client.get(reverse("studies:worker-home", args=[token]))
    assert page.status_code == 200
    html = page.content.decode()
    assert 'class="choices yes-no"' in html, "the design's own template draws the trial"
    assert named in html
    right = trial["options"].index(assignment_item.options[assignment_item.correct_option])
    outcome = api(client, "post", "/api/v1/participant/trial", token,
                   {"assignment": trial["token"], "choice": right, "client_response_ms": 1500}).json()  # fmt: skip
    assert outcome["outcome"] == "recorded"
    response = Response.objects.get(assignment__token=trial["token"])
    assert response.correct is True
    assert response.chosen_option == assignment_item.correct_option
    assert response.score_model_a is None
    while (nxt := api(client, "get", "/api/v1/participant/trial", token).json()["trial"]) is not None:
        item = Item.objects.get(assignments__token=nxt["token"])
        wrong = nxt["options"].index(item.options[1 - item.correct_option])
        api(client, "post", "/api/v1/participant/trial", token, {"assignment": nxt["token"], "choice": wrong})
    assert Response.objects.filter(assignment__participant__token=token, correct=False).exists()
    assert api(client, "post", "/api/v1/participant/complete", token).status_code == 200


# ---------------------------------------------------------------------------------------------- results


@pytest.fixture
def answered(yes_no: ModuleType) -> Study:
    """A yes/no study that three workers completed."""
    study = make_worker_study(kind="yes_no", n_main=6, n_catch=0, trials_per_participant=3, judgments_per_item=2)
    for _ in range(3):
        client, token = _worker_through_practice(study)
        while (trial := api(client, "get", "/api/v1/participant/trial", token).json()["trial"]) is not None:
            api(client, "post", "/api/v1/participant/trial", token, {"assignment": trial["token"], "choice": 0})
        api(client, "post", "/api/v1/participant/complete", token)
    assert Participant.objects.filter(study=study).count() == 3
    return study


def test_results_carry_the_answers(answered: Study, staff_client) -> None:  # type: ignore[no-untyped-def]
    from studies.services.results import study_results_compute

    results = study_results_compute(study=answered)
    assert results.design == "yes_no"
    assert results.n_judgments == Response.objects.filter(assignment__participant__study=answered,
                                                          assignment__item__role=Item.Role.MAIN).count() > 0
    assert list(results.method_names) == ["gradcam"]
    page = staff_client.get(reverse("studies:results", args=[answered.slug]))
    assert page.status_code == 200, page.content[:500]
    assert "gradcam" in page.content.decode()


def test_tidy_export_carries_the_answers(answered: Study) -> None:
    from studies.services.exports import csv_lines, export_rows

    header, rows = export_rows(study=answered, kind="tidy")
    frame = pd.read_csv(io.StringIO("".join(csv_lines(header, rows))))
    assert len(frame) == Response.objects.filter(assignment__participant__study=answered).count()
    assert set(frame["study_kind"]) == {"yes_no"}
    assert frame["correct"].notna().all()
    assert set(frame["answer_label"]) <= {"yes", "no"}


def test_openapi_lists_the_kind(yes_no: ModuleType, client) -> None:  # type: ignore[no-untyped-def]
    schema = client.get(reverse("studies:api-openapi")).json()
    enums = kind_enums(schema)
    assert enums
    assert all("yes_no" in enum for enum in enums), enums

