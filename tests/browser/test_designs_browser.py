"""A worker completes a study of each issue-16 design in headless Chromium, by clicks.

For ``agreement``, ``distinction``, ``forward_simulation`` and ``ai_assisted_decision``: the study
link, the consent, the practice (forward simulation: the learning phase, whose feedback names the
model's answer), every trial answered by clicking what a person clicks (a scale point, a panel's
button, Accept / Reject, an option), one of them wrong on purpose, then the end. The studies are
the designs' own SQLite test builders. Each test saves a trial page as
``test-artifacts/worker-<design>.png`` at the docs' screenshot size (1366 x 768; copied by hand to
``docs/``, like the other screenshots), forward simulation also its learning feedback.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from studies.designs.agreement import SCALE
from studies.designs.ai_assisted_decision import ANSWERS
from studies.designs.forward_simulation import MODEL_ANSWERS
from studies.models import Assignment, Item, Participant, Response, Stimulus, Study
from tests.browser.test_worker_browser import _click_and_wait, _replaced, _wait
from tests.studies.designs.test_agreement import _agreement_study
from tests.studies.designs.test_ai_assisted_decision import _decision_study
from tests.studies.designs.test_distinction import _worker_study as _distinction_study
from tests.studies.designs.test_forward_simulation import CONTROL, EXPLAINED, _arm_study

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

#: The viewport of the desktop screenshots in docs/ (worker-discrimination-trial.png).
SHOT = {"width": 1366, "height": 768, "deviceScaleFactor": 1, "mobile": False}

#: (the element to click on the trial page, whether that answer is right) for a trial's item,
#: given the form and whether to answer wrong on purpose.
Answer = Callable[[object, Item, bool], tuple[object, bool]]


def _texts(root, css: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [element.text.strip() for element in root.find_elements(By.CSS_SELECTOR, css)]


def _enter(driver, live_server, study: Study) -> None:  # type: ignore[no-untyped-def]
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", SHOT)
    driver.get(f"{live_server.url}/s/{study.slug}/")
    _click_and_wait(driver, "[data-agree]")
    _click_and_wait(driver, "[data-start-practice]")


def _practice(driver, pick: Callable[[Item, list[str], int], int]) -> list[Item]:  # type: ignore[no-untyped-def]
    """Answer every practice trial by clicking the label ``pick(item, label texts, k)``; submit."""
    form = _wait(driver, "[data-practice-form]")
    items = []
    for k, fieldset in enumerate(form.find_elements(By.CSS_SELECTOR, "[data-practice-trial]")):
        radio = fieldset.find_element(By.CSS_SELECTOR, "input[type=radio]")
        item = Item.objects.get(public_id=radio.get_attribute("name").removeprefix("choice_"))
        labels = fieldset.find_elements(By.CSS_SELECTOR, "label.choice")
        labels[
            pick(item, [label.find_element(By.TAG_NAME, "span").text.strip() for label in labels], k)
        ].click()
        items.append(item)
    _click_and_wait(driver, "[data-practice-submit]")
    assert _wait(driver, "[data-practice-result]").get_attribute("data-practice-result") == "passed"
    return items


def _trials(driver, artifacts: Path, design: str, answer: Answer,  # type: ignore[no-untyped-def]
            check: Callable[[object, Item], None]) -> dict[str, bool]:  # fmt: skip
    """Answer every trial by a click (the first main trial after the first wrong on purpose); the
    first trial page is the design's screenshot. Returns assignment token -> expected ``correct``."""
    expected: dict[str, bool] = {}
    wrong_done = False
    while True:
        _wait(driver, "[data-trial-form], [data-finish], [data-questionnaire-submit]")
        forms = driver.find_elements(By.CSS_SELECTOR, "[data-trial-form]")
        if not forms:
            return expected
        form = forms[0]
        assert form.get_attribute("data-kind") == design
        WebDriverWait(driver, 15).until(
            lambda d: d.execute_script(
                "return Array.from(document.querySelectorAll('img[data-stimulus]')).every(i => i.complete && i.naturalWidth > 0)"
            )
        )
        token = form.find_element(By.NAME, "assignment").get_attribute("value")
        item = Assignment.objects.select_related("item").get(token=token).item
        check(form, item)
        if not expected:
            driver.save_screenshot(str(artifacts / f"worker-{design}.png"))
        wrong = not wrong_done and item.role == Item.Role.MAIN and bool(expected)
        wrong_done |= wrong
        element, right = answer(form, item, wrong)
        expected[token] = right
        element.click()
        WebDriverWait(driver, 15).until(_replaced(form))


def _finish(driver, expected: dict[str, bool]) -> None:  # type: ignore[no-untyped-def]
    assert len(expected) >= 2
    assert set(expected.values()) == {True, False}, "one answer wrong on purpose, the others right"
    _click_and_wait(driver, "[data-finish]")
    assert _wait(driver, "[data-completion-code]").text
    participant = Participant.objects.get()
    assert participant.status == Participant.Status.COMPLETED
    stored = {r.assignment.token: r.correct for r in Response.objects.filter(assignment__participant=participant)
              .select_related("assignment")}  # fmt: skip
    assert stored == expected


def _button(form, text: str):  # type: ignore[no-untyped-def]
    buttons = [
        b
        for b in form.find_elements(By.CSS_SELECTOR, "button.choice")
        if b.text.split(maxsplit=1)[-1] == text
    ]
    assert len(buttons) == 1, (text, _texts(form, "button.choice"))
    return buttons[0]


# ---------------------------------------------------------------------------------------------- agreement


def test_worker_rates_the_prediction_on_the_4_point_scale(live_server, browser, artifacts):
    study = _agreement_study(n_main=4, n_catch=1, trials_per_participant=4)
    _enter(browser, live_server, study)
    _practice(browser, lambda item, labels, k: 3 if item.correct_option == 1 else 0)
    _click_and_wait(browser, "[data-begin]")

    def check(form, item: Item) -> None:  # type: ignore[no-untyped-def]
        assert _texts(browser, "p.predicted") == [f"The model predicts: {item.target_label}"]
        assert [t.split(maxsplit=1)[-1] for t in _texts(form, "[data-choices] button.choice")] == list(SCALE)
        assert len(form.find_elements(By.CSS_SELECTOR, "img[data-stimulus]")) == 1

    def answer(form, item: Item, wrong: bool):  # type: ignore[no-untyped-def]
        says_correct = (item.correct_option == 1) != wrong  # "Probably correct" / "Probably incorrect"
        position = 2 if says_correct else 1
        return form.find_elements(By.CSS_SELECTOR, "button.choice")[position], says_correct == (
            item.correct_option == 1
        )

    _finish(browser, _trials(browser, artifacts, "agreement", answer, check))


# ---------------------------------------------------------------------------------------------- distinction


def test_worker_picks_the_panel_of_the_true_class(live_server, browser, artifacts):
    study = _distinction_study(n_main=4, n_catch=1, n_practice=1, trials=4)
    _enter(browser, live_server, study)
    _practice(browser, lambda item, labels, k: labels.index(item.target_label))
    _click_and_wait(browser, "[data-begin]")

    def check(form, item: Item) -> None:  # type: ignore[no-untyped-def]
        captions = _texts(form, "figure.figure figcaption")
        assert len(form.find_elements(By.CSS_SELECTOR, "figure.figure img[data-stimulus]")) == 4
        assert sorted(captions) == sorted(item.options)
        assert [t.split(maxsplit=1)[-1] for t in _texts(form, "button.choice")] == captions, (
            "buttons name the panels in order"
        )

    def answer(form, item: Item, wrong: bool):  # type: ignore[no-untyped-def]
        captions = _texts(form, "figure.figure figcaption")
        k = captions.index(item.target_label) + 1
        if wrong:
            k = k % 4 + 1
        return form.find_element(By.CSS_SELECTOR, f"button[data-panel=p{k}]"), captions[
            k - 1
        ] == item.target_label

    _finish(browser, _trials(browser, artifacts, "distinction", answer, check))


# ---------------------------------------------------------------------------------------------- ai_assisted_decision


def test_worker_accepts_or_rejects_the_ais_answer(live_server, browser, artifacts):
    study = _decision_study(n_main=4, n_catch=1, trials_per_participant=4)
    _enter(browser, live_server, study)
    _practice(
        browser, lambda item, labels, k: labels.index("Accept" if item.correct_option == 1 else "Reject")
    )
    _click_and_wait(browser, "[data-begin]")

    def check(form, item: Item) -> None:  # type: ignore[no-untyped-def]
        assert _texts(browser, "p.predicted") == [f"The AI says: {item.target_label} (87% confident)"]
        assert (
            [t.split(maxsplit=1)[-1] for t in _texts(form, "button.choice")]
            == list(ANSWERS)
            == ["Accept", "Reject"]
        )

    def answer(form, item: Item, wrong: bool):  # type: ignore[no-untyped-def]
        accept = (item.correct_option == 1) != wrong
        return _button(form, "Accept" if accept else "Reject"), accept == (item.correct_option == 1)

    _finish(browser, _trials(browser, artifacts, "ai_assisted_decision", answer, check))


# ---------------------------------------------------------------------------------------------- forward_simulation


def _forward_study() -> Study:
    """``test_forward_simulation``'s two-arm study with the real control, ``image_only`` (the picture
    alone), in place of its stand-in."""
    study = _arm_study()
    arms = [{"name": "control", "methods": ["image_only"]}, {"name": "explained", "methods": [EXPLAINED]}]
    Study.objects.filter(pk=study.pk).update(methods=["image_only", EXPLAINED], arms=arms)
    study.items.filter(method=CONTROL).update(method="image_only")
    Stimulus.objects.filter(method=CONTROL).update(method="image_only")
    study.refresh_from_db()
    return study


def test_worker_learns_the_models_answers_then_predicts_them(live_server, browser, artifacts):
    study = _forward_study()
    _enter(browser, live_server, study)
    # learning phase: the first guess wrong, the second right; the feedback names the model's answer
    items = _practice(
        browser, lambda item, labels, k: labels.index(item.options[item.correct_option]) ^ (k == 0)
    )
    participant = Participant.objects.get()
    arm_method = next(arm["methods"][0] for arm in study.arms if arm["name"] == participant.arm)
    assert {item.method for item in items} == {arm_method}, "the learning items of the worker's arm"
    assert [
        s.get_attribute("data-practice-feedback")
        for s in browser.find_elements(By.CSS_SELECTOR, "[data-practice-feedback]")
    ] == ["wrong", "correct"]
    said = [MODEL_ANSWERS.format(label=item.options[item.correct_option]) for item in items]
    assert _texts(browser, "[data-right-answer]") == said
    browser.save_screenshot(str(artifacts / "worker-forward_simulation-learning.png"))
    _click_and_wait(browser, "[data-begin]")

    def check(form, item: Item) -> None:  # type: ignore[no-untyped-def]
        assert item.role == Item.Role.MAIN
        assert item.method == arm_method
        assert len(form.find_elements(By.CSS_SELECTOR, "img[data-stimulus]")) == 1
        assert not form.find_elements(
            By.CSS_SELECTOR, "figure.figure figcaption, p.predicted, [data-right-answer]"
        )
        # The colour key is the participant's arm's (a control arm gets none); the alt text names no heatmap.
        assert "heatmap" not in form.find_element(By.CSS_SELECTOR, "img[data-stimulus]").get_attribute("alt")
        if arm_method == "image_only":
            assert not form.parent.find_elements(By.CSS_SELECTOR, "[data-key-kind]")
        assert item.stimulus_a.method == "image_only", (
            "the test phase shows the control's stimulus in every arm"
        )
        assert sorted(t.split(maxsplit=1)[-1] for t in _texts(form, "button.choice")) == sorted(item.options)

    def answer(form, item: Item, wrong: bool):  # type: ignore[no-untyped-def]
        model = item.options[item.correct_option]
        other = next(option for option in item.options if option != model)
        return _button(form, other if wrong else model), not wrong

    _finish(browser, _trials(browser, artifacts, "forward_simulation", answer, check))
