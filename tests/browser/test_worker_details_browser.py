"""Worker-page details in headless Chromium (issue #13): answer buttons above the fold on a
1366x768 screen with the comment box after them, keys on the practice page, key hints hidden on
touch screens, MTurk's completion in one click."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from studies.fixtures.builders import make_worker_study
from studies.lib.choices import practice_choices
from studies.models import Participant, Study
from studies.services.participation import practice_draw
from tests.browser.test_worker_browser import _click_and_wait, _replaced, _wait

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MTURK = {"assignmentId": "3DETAILSASSIGN", "hitId": "3DETAILSHIT", "workerId": "ADETAILSWORKER",
         "turkSubmitTo": "https://workersandbox.mturk.com"}  # fmt: skip


def _viewport(driver, width: int, height: int) -> None:  # type: ignore[no-untyped-def]
    """Make the page's viewport (``innerWidth`` x ``innerHeight``) exactly ``width`` x ``height``."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )


def _right_keys(study: Study, token: str, attempt: int = 1) -> list[str]:
    """The key (1-based) of the right answer of each practice question, in page order."""
    keys = []
    for item in practice_draw(study=study, participant_token=token, attempt=attempt):
        choices = practice_choices(study=study, participant_token=token, attempt=attempt, item=item)
        right = (
            choices.option_order.index(item.correct_option)
            if item.correct_option is not None and item.options
            else 2
        )
        keys.append(str(right + 1))
    return keys


def _enter_and_consent(driver, live_server, study: Study, params: dict | None = None) -> Participant:  # type: ignore[no-untyped-def]
    driver.get(f"{live_server.url}/s/{study.slug}/?{urlencode(params or {})}")
    _click_and_wait(driver, "[data-agree]")
    _click_and_wait(driver, "[data-start-practice]")
    _wait(driver, "[data-practice-form]")
    return Participant.objects.get()


def _practice_by_keys(driver, study: Study, participant: Participant) -> None:  # type: ignore[no-untyped-def]
    """Answer every practice question with the number keys only, check the page, then submit."""
    keys = _right_keys(study, participant.token)
    body = driver.find_element(By.TAG_NAME, "body")
    for key in keys:
        body.send_keys(key)
    chosen = driver.execute_script(
        "return Array.from(document.querySelectorAll('[data-practice-trial]')).map("
        "f => { const r = f.querySelector('input[type=radio]:checked'); return r ? r.getAttribute('data-key') : null; })"
    )
    assert chosen == keys
    _click_and_wait(driver, "[data-practice-submit]")
    assert _wait(driver, "[data-practice-result]").get_attribute("data-practice-result") == "passed"
    _click_and_wait(driver, "[data-begin]")


def _images_loaded(driver) -> None:  # type: ignore[no-untyped-def]
    WebDriverWait(driver, 15).until(
        lambda d: d.execute_script(
            "return Array.from(document.querySelectorAll('img')).every(i => i.complete && i.naturalWidth > 0)"
        )
    )


FOLD = """
const buttons = Array.from(document.querySelectorAll('[data-trial-form] button.choice'));
const comment = document.querySelector('[data-comment]');
const last = Math.max(...buttons.map(b => b.getBoundingClientRect().bottom));
return {
  n: buttons.length, innerHeight: window.innerHeight, innerWidth: window.innerWidth, scrollY: window.scrollY,
  buttonsBottom: last, buttonsTop: Math.min(...buttons.map(b => b.getBoundingClientRect().top)),
  commentTop: comment ? comment.getBoundingClientRect().top : null,
  commentAfter: comment ? buttons.every(
    b => (b.compareDocumentPosition(comment) & Node.DOCUMENT_POSITION_FOLLOWING) !== 0) : null,
  keys: document.querySelectorAll('[data-colour-key] .key-row').length,
  images: Array.from(document.querySelectorAll('img[data-stimulus]')).map(i => i.getBoundingClientRect().height),
};
"""


@pytest.mark.parametrize(
    "height", [768, 657]
)  # the screen; a browser window on it (title bar, tabs, taskbar)
def test_trust_trial_answer_buttons_are_above_the_fold_on_a_1366x768_screen(
    live_server, browser, artifacts, height
):
    study = make_worker_study(kind=Study.Kind.TRUST, platform=Study.Platform.LINK, n_main=4, n_practice=1,
                              trials_per_participant=2)  # fmt: skip
    _viewport(browser, 1366, height)
    participant = _enter_and_consent(browser, live_server, study)
    _practice_by_keys(browser, study, participant)
    _wait(browser, "[data-trial-form]")
    _images_loaded(browser)
    layout = browser.execute_script(FOLD)
    browser.save_screenshot(str(artifacts / f"trust-trial-1366x{height}.png"))
    assert (layout["innerWidth"], layout["innerHeight"]) == (1366, height), layout
    assert layout["scrollY"] == 0, layout
    assert layout["n"] == 5, layout
    # Every answer button is fully in the first viewport; the comment box comes after them.
    assert layout["buttonsBottom"] <= layout["innerHeight"], layout
    assert layout["commentAfter"] is True, layout
    assert layout["commentTop"] >= layout["buttonsBottom"], layout
    assert min(layout["images"]) >= 200, layout  # the pictures are still large enough to judge


def test_discrimination_trial_answer_buttons_are_above_the_fold_on_a_1366x768_screen(
    live_server, browser, artifacts
):
    study = make_worker_study(platform=Study.Platform.LINK, n_main=4, n_practice=1, trials_per_participant=2)
    _viewport(browser, 1366, 657)
    participant = _enter_and_consent(browser, live_server, study)
    _practice_by_keys(browser, study, participant)
    _wait(browser, "[data-trial-form]")
    _images_loaded(browser)
    layout = browser.execute_script(FOLD)
    assert layout["n"] == 2, layout
    assert layout["commentTop"] is None, layout
    assert layout["buttonsBottom"] <= layout["innerHeight"], layout


def test_keys_answer_the_practice_trust_questions_in_order(live_server, browser):
    study = make_worker_study(kind=Study.Kind.TRUST, n_main=4, n_practice=5, trials_per_participant=2)
    study.practice_trials = 2
    study.save(update_fields=["practice_trials"])
    participant = _enter_and_consent(browser, live_server, study)
    assert len(browser.find_elements(By.CSS_SELECTOR, "[data-practice-trial]")) == 2
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys("4")
    body.send_keys("9")  # no such answer: nothing happens
    body.send_keys("5")
    chosen = browser.execute_script(
        "return Array.from(document.querySelectorAll('[data-practice-trial] input:checked')).map(r => r.value)"
    )
    assert chosen == ["3", "4"]  # the value is the 0-based scale position
    # All answered: a key changes the question holding the focus (here none: the last one).
    body.send_keys("3")
    chosen = browser.execute_script(
        "return Array.from(document.querySelectorAll('[data-practice-trial] input:checked')).map(r => r.value)"
    )
    assert chosen == ["3", "2"]
    assert participant.practice_attempts_used == 0  # keys only choose; the worker still submits


def test_key_hints_show_on_desktop_and_hide_on_touch_screens(live_server, browser):
    study = make_worker_study(n_main=4, n_practice=1, trials_per_participant=2)
    _viewport(browser, 1366, 768)
    _enter_and_consent(browser, live_server, study)

    def visible_hints() -> int:
        return browser.execute_script(
            "return Array.from(document.querySelectorAll('.key-hint')).filter(e => e.getClientRects().length > 0).length"
        )

    assert visible_hints() > 0
    assert browser.execute_script("return matchMedia('(hover: none) and (pointer: coarse)').matches") is False
    browser.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 5})
    browser.execute_cdp_cmd(
        "Emulation.setEmitTouchEventsForMouse", {"enabled": True, "configuration": "mobile"}
    )
    _viewport(browser, 412, 915)
    browser.refresh()
    _wait(browser, "[data-practice-form]")
    assert browser.execute_script("return matchMedia('(hover: none) and (pointer: coarse)').matches") is True
    assert browser.find_elements(By.CSS_SELECTOR, ".key-hint")  # still in the page, just not shown
    assert visible_hints() == 0


def _to_done_page(browser, live_server, study: Study) -> Participant:  # type: ignore[no-untyped-def]
    participant = _enter_and_consent(browser, live_server, study, MTURK)
    _practice_by_keys(browser, study, participant)
    while True:
        _wait(browser, "[data-trial-form], [data-finish]")
        forms = browser.find_elements(By.CSS_SELECTOR, "[data-trial-form]")
        if not forms:
            break
        _images_loaded(browser)
        browser.find_element(By.TAG_NAME, "body").send_keys("1")
        WebDriverWait(browser, 15).until(_replaced(forms[0]))
    _click_and_wait(browser, "[data-finish]")
    return participant


def test_mturk_done_page_shows_the_code_then_posts_to_mturk_by_itself(live_server, browser, artifacts):
    study = make_worker_study(platform=Study.Platform.MTURK, n_main=4, n_practice=1, trials_per_participant=2)
    participant = _to_done_page(browser, live_server, study)
    code = _wait(browser, "[data-completion-code]").text
    form = browser.find_element(By.CSS_SELECTOR, "[data-mturk-submit]")
    assert form.get_attribute("action") == "https://workersandbox.mturk.com/mturk/externalSubmit"
    # MTurk is not reachable here: send the same form to the live server's /healthz instead.
    browser.execute_script(
        "document.querySelector('[data-mturk-submit]').action = arguments[0]", f"{live_server.url}/healthz"
    )
    participant.refresh_from_db()
    assert participant.status == Participant.Status.COMPLETED
    assert code == participant.completion_code
    assert browser.find_element(
        By.CSS_SELECTOR, "[data-auto-submit-note]"
    ).is_displayed()  # the countdown, under the code
    assert form.get_attribute("data-submitting") is None  # not yet: the code is shown first
    browser.save_screenshot(str(artifacts / "mturk-done-countdown.png"))
    WebDriverWait(browser, 15).until(lambda d: d.current_url.startswith(f"{live_server.url}/healthz"))
    # Opening the done page again in the same tab does not submit a second time.
    browser.get(f"{live_server.url}/p/{participant.token}/done")
    _wait(browser, "[data-completion-code]")
    assert not browser.find_element(By.CSS_SELECTOR, "[data-auto-submit-note]").is_displayed()
    assert browser.find_element(By.CSS_SELECTOR, "[data-mturk-submit-button]").is_displayed()


def test_mturk_auto_submit_can_be_stopped_and_the_button_still_submits(live_server, browser):
    study = make_worker_study(platform=Study.Platform.MTURK, n_main=4, n_practice=1, trials_per_participant=2)
    _to_done_page(browser, live_server, study)
    _wait(browser, "[data-completion-code]")
    browser.find_element(By.CSS_SELECTOR, "[data-auto-submit-cancel]").click()
    browser.execute_script(
        "document.querySelector('[data-mturk-submit]').action = arguments[0]", f"{live_server.url}/healthz"
    )
    form = browser.find_element(By.CSS_SELECTOR, "[data-mturk-submit]")
    assert form.get_attribute("data-auto-submit-cancelled") is not None
    browser.implicitly_wait(0)
    WebDriverWait(browser, 6, poll_frequency=0.5).until_not(
        lambda d: d.current_url.startswith(f"{live_server.url}/healthz")
    )
    assert "/done" in browser.current_url or "/p/" in browser.current_url
    browser.find_element(By.CSS_SELECTOR, "[data-mturk-submit-button]").click()
    WebDriverWait(browser, 15).until(lambda d: d.current_url.startswith(f"{live_server.url}/healthz"))


def test_prolific_completion_still_redirects_at_once(live_server, browser):
    study = make_worker_study(
        platform=Study.Platform.PROLIFIC, n_main=4, n_practice=1, trials_per_participant=2
    )
    study.prolific_completion_url = f"{live_server.url}/healthz"
    study.save(update_fields=["prolific_completion_url"])
    params = {
        "PROLIFIC_PID": "5f1a2b3c4d5e6f7a8b9c0d1f",
        "STUDY_ID": "60aa00bb11cc22dd33ee44ff",
        "SESSION_ID": "details1",
    }
    participant = _enter_and_consent(browser, live_server, study, params)
    _practice_by_keys(browser, study, participant)
    while browser.find_elements(By.CSS_SELECTOR, "[data-trial-form]") or not browser.find_elements(
        By.CSS_SELECTOR, "[data-finish]"
    ):
        form = _wait(browser, "[data-trial-form]")
        _images_loaded(browser)
        browser.find_element(By.TAG_NAME, "body").send_keys("1")
        WebDriverWait(browser, 15).until(_replaced(form))
    _click_and_wait(browser, "[data-finish]")
    WebDriverWait(browser, 15).until(lambda d: "cc=" in d.current_url)
    assert browser.current_url == f"{live_server.url}/healthz?cc={study.completion_code}"
