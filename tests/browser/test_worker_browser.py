"""A worker completes whole studies in headless Chromium: MTurk-style and Prolific-style links."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import pytest
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from studies.fixtures.builders import make_worker_study
from studies.models import Item, Participant, Response, Study
from studies.services.participation import completion_code_derive

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _wait(driver, css: str, timeout: float = 15):  # type: ignore[no-untyped-def]
    return WebDriverWait(driver, timeout).until(EC.presence_of_element_located((By.CSS_SELECTOR, css)))


def _replaced(element):  # type: ignore[no-untyped-def]
    """A wait condition: true once ``element`` has left the document (the next page replaced it).

    While a navigation swaps the document, chromedriver may answer "Node with given id does not
    belong to the document" (a plain ``WebDriverException``) instead of a stale-element error;
    both mean the node is gone. Any other error is raised.
    """

    def gone(_driver) -> bool:  # type: ignore[no-untyped-def]
        try:
            element.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as error:
            if "does not belong to the document" in str(error):
                return True
            raise
        return False

    return gone


def _click_and_wait(driver, css: str) -> None:  # type: ignore[no-untyped-def]
    element = _wait(driver, css)
    element.click()
    WebDriverWait(driver, 15).until(_replaced(element))


def _do_practice(driver, study: Study) -> None:  # type: ignore[no-untyped-def]
    _click_and_wait(driver, "[data-start-practice]")
    _wait(driver, "[data-practice-form]")
    for fieldset in driver.find_elements(By.CSS_SELECTOR, "[data-practice-trial]"):
        radios = fieldset.find_elements(By.CSS_SELECTOR, "input[type=radio]")
        public_id = radios[0].get_attribute("name").removeprefix("choice_")
        item = Item.objects.get(public_id=public_id)
        labels = fieldset.find_elements(By.CSS_SELECTOR, "label.choice")
        if item.correct_option is not None and item.options:
            right = item.options[item.correct_option]
            target = next(label for label in labels if label.find_element(By.TAG_NAME, "span").text.strip() == right)
        else:
            target = labels[2]  # trust practice: no right answer ("equally reasonable")
        target.click()
    _click_and_wait(driver, "[data-practice-submit]")
    assert _wait(driver, "[data-practice-result]").get_attribute("data-practice-result") == "passed"
    _click_and_wait(driver, "[data-begin]")


def _answer_trials(driver, artifacts: Path, name: str, comment: str = "") -> int:  # type: ignore[no-untyped-def]
    answered = 0
    while True:
        _wait(driver, "[data-trial-form], [data-finish], [data-questionnaire-submit]")
        forms = driver.find_elements(By.CSS_SELECTOR, "[data-trial-form]")
        if not forms:
            return answered
        form = forms[0]
        WebDriverWait(driver, 15).until(
            lambda d: d.execute_script(
                "return Array.from(document.querySelectorAll('img[data-stimulus]')).every(i => i.complete && i.naturalWidth > 0)"
            )
        )
        if answered == 0:
            driver.save_screenshot(str(artifacts / f"{name}-trial.png"))
        if comment and answered == 0:
            form.find_element(By.NAME, "comment").send_keys(comment)
            form.find_element(By.CSS_SELECTOR, "button[data-key='2']").click()  # touch/click answer
        else:
            driver.find_element(By.TAG_NAME, "body").send_keys("1")  # keyboard answer
        WebDriverWait(driver, 15).until(_replaced(form))
        answered += 1


def test_mturk_worker_completes_a_discrimination_study(live_server, browser, artifacts):
    study = make_worker_study(platform=Study.Platform.MTURK, n_main=6, n_practice=1, n_catch=1, trials_per_participant=3)
    params = {"assignmentId": "3BROWSERASSIGN", "hitId": "3BROWSERHIT", "workerId": "ABROWSERWORKER",
              "turkSubmitTo": "https://workersandbox.mturk.com"}  # fmt: skip
    browser.get(f"{live_server.url}/s/{study.slug}/?assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE&hitId=3BROWSERHIT")
    _wait(browser, "[data-preview]")
    assert Participant.objects.count() == 0
    browser.get(f"{live_server.url}/s/{study.slug}/?{urlencode(params)}")
    _click_and_wait(browser, "[data-agree]")
    _do_practice(browser, study)
    assert _answer_trials(browser, artifacts, "mturk-discrimination") == 4
    _click_and_wait(browser, "[data-finish]")
    code = _wait(browser, "[data-completion-code]").text
    # The done page posts to MTurk on its own after a countdown (test_worker_details_browser.py);
    # "Wait" stops it here, so the form can be read (MTurk's sandbox is not reachable from tests).
    browser.find_element(By.CSS_SELECTOR, "[data-auto-submit-cancel]").click()
    participant = Participant.objects.get()
    assert code == participant.completion_code == completion_code_derive(study=study, participant_token=participant.token)
    assert code != study.completion_code
    browser.save_screenshot(str(artifacts / "mturk-discrimination-done.png"))
    form = browser.find_element(By.CSS_SELECTOR, "[data-mturk-submit]")
    assert form.get_attribute("action") == "https://workersandbox.mturk.com/mturk/externalSubmit"
    assert form.find_element(By.NAME, "assignmentId").get_attribute("value") == "3BROWSERASSIGN"
    assert form.find_element(By.NAME, "completion_code").get_attribute("value") == code
    assert participant.status == Participant.Status.COMPLETED
    responses = Response.objects.filter(assignment__participant=participant)
    assert responses.count() == 4
    assert all(r.client_response_ms is not None for r in responses)
    assert all(r.assignment.shown_at is not None for r in responses.select_related("assignment"))


def test_prolific_worker_completes_a_trust_study_on_a_phone(live_server, browser, artifacts):
    study = make_worker_study(
        kind=Study.Kind.TRUST, platform=Study.Platform.PROLIFIC, n_main=6, n_practice=1, trials_per_participant=3,
        questionnaire=[{"name": "device", "label": "Which device did you use?", "type": "choice",
                        "choices": ["phone", "computer"], "required": True}],
    )  # fmt: skip
    study.prolific_completion_url = f"{live_server.url}/healthz"  # stands in for app.prolific.com
    study.save(update_fields=["prolific_completion_url"])
    browser.set_window_size(412, 915)
    params = {"PROLIFIC_PID": "5f1a2b3c4d5e6f7a8b9c0d1e", "STUDY_ID": "60aa00bb11cc22dd33ee44ff", "SESSION_ID": "browser1"}
    browser.get(f"{live_server.url}/s/{study.slug}/?{urlencode(params)}")
    _click_and_wait(browser, "[data-agree]")
    _do_practice(browser, study)
    assert _answer_trials(browser, artifacts, "prolific-trust", comment="Robot B looks at the animal") == 3
    browser.find_element(By.CSS_SELECTOR, "select[name=device] option[value=phone]").click()
    _click_and_wait(browser, "[data-questionnaire-submit]")
    _click_and_wait(browser, "[data-finish]")
    WebDriverWait(browser, 15).until(lambda d: "cc=" in d.current_url)
    assert browser.current_url == f"{live_server.url}/healthz?cc={study.completion_code}"
    participant = Participant.objects.get()
    assert participant.status == Participant.Status.COMPLETED
    assert participant.questionnaire["answers"] == {"device": "phone"}
    responses = list(Response.objects.filter(assignment__participant=participant).select_related("assignment"))
    assert len(responses) == 3
    commented = [r for r in responses if r.comment]
    assert [r.comment for r in commented] == ["Robot B looks at the animal"]
    # Button 2 is "Robot A is slightly more reasonable": +1 for whichever model was Robot A.
    assert commented[0].score_model_a == (1 if commented[0].assignment.model_a_shown_left else -1)
