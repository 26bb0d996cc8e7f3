"""The practice policy in headless Chromium (issue #12): two failed attempts with different items,
the right answers shown after the first, the third refused with the platform's return message."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from selenium.webdriver.common.by import By

from studies.fixtures.builders import make_worker_study
from studies.models import Assignment, Item, Participant, Study
from studies.services.participation import practice_draw
from tests.browser.test_worker_browser import _click_and_wait, _wait

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _answer_wrongly(driver) -> set[str]:  # type: ignore[no-untyped-def]
    """Pick the wrong category on every practice question; return the items shown."""
    _wait(driver, "[data-practice-form]")
    shown = set()
    for fieldset in driver.find_elements(By.CSS_SELECTOR, "[data-practice-trial]"):
        radios = fieldset.find_elements(By.CSS_SELECTOR, "input[type=radio]")
        public_id = radios[0].get_attribute("name").removeprefix("choice_")
        shown.add(public_id)
        item = Item.objects.get(public_id=public_id)
        right = item.options[item.correct_option]
        next(label for label in fieldset.find_elements(By.CSS_SELECTOR, "label.choice") if label.find_element(By.TAG_NAME, "span").text.strip() != right).click()
    _click_and_wait(driver, "[data-practice-submit]")
    return shown


def test_prolific_worker_fails_the_practice_twice_and_is_screened_out(live_server, browser, artifacts):
    study = make_worker_study(platform=Study.Platform.PROLIFIC, n_main=6, n_practice=5, trials_per_participant=3)
    study.practice_trials = 2  # 5 items: the worked example and 2 per attempt
    study.save(update_fields=["practice_trials"])
    params = {"PROLIFIC_PID": "5f1a2b3c4d5e6f7a8b9c0d1e", "STUDY_ID": "60aa00bb11cc22dd33ee44ff", "SESSION_ID": "practice1"}
    browser.get(f"{live_server.url}/s/{study.slug}/?{urlencode(params)}")
    _click_and_wait(browser, "[data-agree]")
    _click_and_wait(browser, "[data-start-practice]")
    assert "Attempt 1 of 2" in _wait(browser, "[data-practice-attempt]").text
    first = _answer_wrongly(browser)

    result = _wait(browser, "[data-practice-result]")
    assert result.get_attribute("data-practice-result") == "failed"
    shown_answers = [b.text for b in browser.find_elements(By.CSS_SELECTOR, "[data-right-answer]")]
    expected = [Item.objects.get(public_id=p) for p in first]
    assert sorted(shown_answers) == sorted(i.options[i.correct_option] for i in expected)
    browser.save_screenshot(str(artifacts / "practice-feedback-attempt1.png"))

    _click_and_wait(browser, "[data-retry]")
    assert "Attempt 2 of 2" in _wait(browser, "[data-practice-attempt]").text
    second = _answer_wrongly(browser)
    assert first
    assert second
    assert not first & second

    end = _wait(browser, "[data-screened-out]")
    assert "Please return the study on Prolific" in end.text
    browser.save_screenshot(str(artifacts / "practice-screened-out.png"))
    participant = Participant.objects.get()
    assert participant.status == Participant.Status.SCREENED_OUT
    assert participant.practice_attempts_used == 2
    token = participant.token
    assert {i.public_id for i in practice_draw(study=study, participant_token=token, attempt=1)} == first

    # A third attempt is refused: the practice page and the study link show the same end.
    browser.get(f"{live_server.url}/p/{token}/practice")
    assert "Please return the study on Prolific" in _wait(browser, "[data-screened-out]").text
    assert not browser.find_elements(By.CSS_SELECTOR, "[data-practice-form]")
    browser.get(f"{live_server.url}/s/{study.slug}/?{urlencode(params)}")
    assert "Please return the study on Prolific" in _wait(browser, "[data-screened-out]").text
    assert Participant.objects.count() == 1
    assert not Assignment.objects.exists()
    assert Participant.objects.get().completion_code == ""
