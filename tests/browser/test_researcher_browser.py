"""The researcher's path in headless Chromium (issue #13): log in, add a study with three methods
from the checkbox list, Prepare (the request returns at once, the job runs in a background thread
on the embedded default), wait for ready, Publish (acknowledging the validity audit if it fails),
open the worker link and answer one trial.

The world is the synthetic one (random-initialised CNN on generated 64 px scenes), so the real
preparation takes seconds on a CPU. The measured times are printed (``-s``) and saved next to
the screenshots in ``test-artifacts/researcher-times.txt``.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

from studies.fixtures.builders import TEST_CONSENT
from studies.models import ClassifierModel, Job, Response, Study

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

METHODS = ["gradcam", "guided_backprop", "saliency"]
PASSWORD = "pw-for-tests-only"


def _wait(driver, css: str, timeout: float = 15):  # type: ignore[no-untyped-def]
    return WebDriverWait(driver, timeout).until(EC.presence_of_element_located((By.CSS_SELECTOR, css)))


def _world(tmp_path: Path) -> tuple[ClassifierModel, object]:
    """A synthetic model and eight generated scenes (the fast world)."""
    import torch
    from PIL import Image as PILImage

    from explainers.worlds import synthetic
    from studies.services.importers import Box, ImageRecord, image_set_import

    records = []
    for index, scene in enumerate(synthetic.make_scenes(8, seed=7)):
        buffer = io.BytesIO()
        pixels = (scene.image.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        PILImage.fromarray(pixels).save(buffer, format="PNG")
        names = [synthetic.CLASSES[c] for c in scene.categories]
        boxes = [Box(label, *map(float, box)) for label, box in zip(names, scene.boxes, strict=True)]
        records.append(ImageRecord(name=f"s{index}.png", data=buffer.getvalue(), categories=names, boxes=boxes))
    image_set = image_set_import(name="scenes", records=records, categories=list(synthetic.CLASSES))
    torch.manual_seed(0)
    path = tmp_path / "m.pt"
    digest = synthetic.save_weights(synthetic.SyntheticCNN(num_classes=4), path)
    stored = default_storage.save("weights/researcher-m.pt", ContentFile(path.read_bytes()))
    model = ClassifierModel.objects.create(
        name="synthetic-m", arch="synthetic_cnn", weights=stored, weights_sha256=digest,
        class_names=list(synthetic.CLASSES), target_layer=synthetic.DEFAULT_LAYER, input_size=64,
        mean=list(synthetic.MEAN), std=list(synthetic.STD),
    )  # fmt: skip
    return model, image_set


def _fill(driver, field_id: str, value: str) -> None:  # type: ignore[no-untyped-def]
    element = driver.find_element(By.ID, field_id)
    element.clear()
    element.send_keys(value)


def test_researcher_adds_prepares_publishes_and_a_worker_answers(live_server, browser, artifacts, tmp_path,
                                                                 django_user_model):  # fmt: skip
    model, image_set = _world(tmp_path)
    django_user_model.objects.create_superuser("researcher", "r@example.org", PASSWORD)
    times: dict[str, float] = {}

    # Log in through the admin's own form.
    browser.get(f"{live_server.url}/admin/login/?next=/admin/studies/study/add/")
    _fill(browser, "id_username", "researcher")
    _fill(browser, "id_password", PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    _wait(browser, "#study_form")

    # Add a study: three methods ticked in the list (with their descriptions), small quotas.
    _fill(browser, "id_name", "researcher path")
    Select(browser.find_element(By.ID, "id_kind")).select_by_value(Study.Kind.CLASS_DISCRIMINATION)
    for name in METHODS:
        browser.find_element(By.CSS_SELECTOR, f"input[name=methods][value={name}]").click()
    browser.execute_script(  # the model is an autocomplete (select2) field: give its <select> the option
        "var s = document.getElementById('id_model'); var o = new Option(arguments[1], arguments[0], true, true);"
        "s.appendChild(o); s.value = arguments[0];", str(model.pk), model.name)
    Select(browser.find_element(By.ID, "id_image_set")).select_by_value(str(image_set.pk))
    for field, value in (("id_judgments_per_item", "2"), ("id_trials_per_participant", "3"), ("id_catch_trials", "0"),
                         ("id_practice_trials", "0"), ("id_practice_pass_fraction", "0"),
                         ("id_explainer_options", '{"display_size": 64}')):  # fmt: skip
        _fill(browser, field, value)
    browser.execute_script("document.getElementById('id_consent_text').value = arguments[0];", TEST_CONSENT)
    browser.find_element(By.NAME, "_continue").click()
    _wait(browser, "#study-lifecycle")
    study = Study.objects.get(name="researcher path")
    assert sorted(study.methods) == sorted(METHODS)  # stored as a list, in the registry's order
    assert study.status == Study.Status.DRAFT
    browser.save_screenshot(str(artifacts / "researcher-study-added.png"))

    # Prepare: the request returns while the job runs in the background.
    button = browser.find_element(By.ID, "lifecycle-button-prepare")
    started = time.monotonic()
    button.click()
    _wait(browser, ".messagelist")
    times["prepare_request_s"] = time.monotonic() - started
    assert "preparation started" in browser.page_source
    assert times["prepare_request_s"] < 2.0, times
    deadline = started + 180
    while True:
        study.refresh_from_db()
        if study.status != Study.Status.PREPARING or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    times["prepare_job_s"] = time.monotonic() - started
    job = Job.objects.get(study=study, kind=Job.Kind.PREPARE)
    assert study.status == Study.Status.READY, (study.status, job.status, job.error)
    browser.refresh()
    _wait(browser, "#lifecycle-button-publish")
    assert "took" in browser.page_source  # the Jobs table shows the finished job's duration

    # Publish; a failed validity audit is read and acknowledged, then published.
    browser.find_element(By.ID, "lifecycle-button-publish").click()
    _wait(browser, ".messagelist")
    study.refresh_from_db()
    if study.status != Study.Status.LIVE:
        assert "validity audit" in browser.page_source
        box = browser.find_element(By.ID, "id_validity_acknowledged")
        if not box.is_selected():
            box.click()
        browser.find_element(By.NAME, "_continue").click()
        _wait(browser, "#lifecycle-button-publish").click()
        _wait(browser, ".messagelist")
        study.refresh_from_db()
    assert study.status == Study.Status.LIVE, browser.find_element(By.CSS_SELECTOR, ".messagelist").text
    browser.save_screenshot(str(artifacts / "researcher-study-live.png"))
    browser.get(f"{live_server.url}/admin/studies/study/{study.pk}/change/")  # docs/admin-study.png comes from here
    _wait(browser, "#study-lifecycle")
    browser.save_screenshot(str(artifacts / "admin-study.png"))
    browser.get(f"{live_server.url}/")  # docs/landing.png
    browser.save_screenshot(str(artifacts / "landing.png"))

    # The worker link (a plain link study): consent, then one trial.
    browser.get(f"{live_server.url}/s/{study.slug}/")
    _wait(browser, "[data-agree]").click()
    step = _wait(browser, "[data-trial-form], [data-begin], [data-start-practice]")
    if step.get_attribute("data-trial-form") is None:  # an instructions page first
        browser.save_screenshot(str(artifacts / "researcher-worker-before-trial.png"))
        step.click()
    form = _wait(browser, "[data-trial-form]")
    WebDriverWait(browser, 15).until(lambda d: d.execute_script(
        "return Array.from(document.querySelectorAll('img[data-stimulus]')).every(i => i.complete && i.naturalWidth > 0)"))
    browser.save_screenshot(str(artifacts / "researcher-worker-trial.png"))
    form.find_element(By.CSS_SELECTOR, "button[data-key='1']").click()
    WebDriverWait(browser, 15).until(lambda d: Response.objects.filter(assignment__participant__study=study).exists())
    print(f"\nresearcher path: {times}")
    (artifacts / "researcher-times.txt").write_text("".join(f"{k} {v:.2f}\n" for k, v in times.items()))
