"""Screenshots of the demo's worker trial pages: desktop (1366x768) and phone (412x915), both kinds.

Usage::

    python scripts/screenshot_worker.py                       # runs `manage.py demo --no-serve` in a temp var dir
    python scripts/screenshot_worker.py --var-dir DIR --skip-demo   # reuse a var dir that holds the demo

Writes ``docs/worker-{discrimination,trust}-trial.png`` (the first screen of a 1366x768 window:
what a desktop worker sees before scrolling, answer buttons included) and
``docs/worker-{discrimination,trust}-trial-phone.png`` (the whole page at 412x915 CSS pixels with
touch emulation, so the key hints are hidden as on a phone).

Each shot is a new participant entered over the JSON API (consent, then the practice of the
current attempt answered right: the answers are worked out in a Django child process from the
same keyed draw the server grades, because each practice attempt is a new draw), then the first
trial page in headless Chromium (Debian ``chromium`` + ``chromedriver``, Selenium).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from screenshot_results import (
    CHROMIUM_FLAGS,
    DISCRIMINATION_STUDY,
    ROOT,
    TRUST_STUDY,
    _api,
    _django,
    _images_loaded,
    _manage,
    _save,
    _study_slugs,
    _wait,
)

DESKTOP = (1366, 768)
PHONE = (412, 915)


def practice_right_answers(env: dict[str, str], token: str) -> dict[str, int]:
    """The right choice of every item of the participant's current practice attempt (any choice
    for an item without a right answer), from the keyed draw the server grades with."""
    return _django(
        env,
        f"""
from studies.models import Participant
from studies.lib.choices import practice_choices
from studies.selectors.participation import practice_attempt
from studies.services.participation import practice_draw
from studies.services.responses import answer_score
participant = Participant.objects.select_related("study").get(token={token!r})
study, attempt = participant.study, practice_attempt(participant)
answers = {{}}
for item in practice_draw(study=study, participant_token=participant.token, attempt=attempt):
    choices = practice_choices(study=study, participant_token=participant.token, attempt=attempt, item=item)
    n = len(item.options) if item.options else 5
    answers[item.public_id] = next(
        c for c in range(n)
        if answer_score(study=study, item=item, option_order=choices.option_order,
                        model_a_shown_left=choices.model_a_shown_left, choice=c).correct is not False
    )
print(json.dumps(answers))
""",
    )


def participant_at_first_trial(env: dict[str, str], base: str, slug: str) -> str:
    """Enter over the JSON API, consent, pass the current practice attempt; return the token."""
    entered = _api(base, f"studies/{slug}/enter", body={})
    token = entered["participant_token"]
    state = _api(base, "participant/consent", token,
                 {"agree": True, "consent_version": entered["study"]["consent_version"],
                  "viewport": {"width": DESKTOP[0], "height": DESKTOP[1]}})  # fmt: skip
    if state["state"]["stage"] == "practice":
        practice = _api(base, "participant/practice", token)
        answers = practice_right_answers(env, token)
        assert set(answers) == {trial["token"] for trial in practice["trials"]}, "practice draw differs"
        graded = _api(
            base, "participant/practice", token, {"answers": answers, "attempt": practice["attempt"]}
        )
        if not graded["passed"]:
            raise RuntimeError(f"study {slug}: practice not passed with the right answers: {graded}")
    return token


def _browser():  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    profile = tempfile.mkdtemp(prefix="xaistudy-chromium-")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1366,1000"):
        options.add_argument(flag)
    options.binary_location = "/usr/bin/chromium"
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))


def _viewport(driver, width: int, height: int, phone: bool) -> None:  # type: ignore[no-untyped-def]
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": phone})  # fmt: skip
    driver.execute_cdp_cmd(
        "Emulation.setTouchEmulationEnabled", {"enabled": phone, "maxTouchPoints": 5 if phone else 1}
    )


def shoot(driver, env: dict[str, str], base: str, slug: str, output: Path, phone: bool, max_kb: int) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    width, height = PHONE if phone else DESKTOP
    token = participant_at_first_trial(env, base, slug)
    _viewport(driver, width, height, phone)
    driver.get(f"{base}/p/{token}/")
    driver.find_element(By.CSS_SELECTOR, "[data-trial-form]")
    _images_loaded(driver)
    layout = driver.execute_script(
        "const b = Array.from(document.querySelectorAll('[data-trial-form] button.choice'));"
        "return {inner: innerHeight, bottom: Math.max(...b.map(x => x.getBoundingClientRect().bottom)),"
        " page: document.documentElement.scrollHeight,"
        " hints: Array.from(document.querySelectorAll('.key-hint')).filter(e => e.getClientRects().length).length,"
        " key: document.querySelectorAll('[data-colour-key]').length}"
    )
    print(f"{output.name}: {layout}")
    if not layout["key"]:
        sys.exit(f"{output}: the trial page shows no colour key")
    if phone:
        if layout["hints"]:
            sys.exit(f"{output}: key hints visible with touch emulation")
        _viewport(driver, width, int(layout["page"]), phone)  # the whole page
        time.sleep(0.5)
        _images_loaded(driver)
    elif layout["bottom"] > layout["inner"]:
        sys.exit(f"{output}: answer buttons below the fold ({layout})")
    _save(driver.get_screenshot_as_png(), output, max_kb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--var-dir", type=Path, help="XAISTUDY_VAR_DIR (default: a new temp dir, kept)")
    parser.add_argument("--skip-demo", action="store_true", help="the var dir already holds the demo")
    parser.add_argument("--trust-study", default=TRUST_STUDY)
    parser.add_argument("--discrimination-study", default=DISCRIMINATION_STUDY)
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    parser.add_argument("--max-kb", type=int, default=300)
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args()

    var = args.var_dir or Path(tempfile.mkdtemp(prefix="xaistudy-shot-"))
    print(f"XAISTUDY_VAR_DIR={var}")
    env = {**os.environ, "XAISTUDY_VAR_DIR": str(var), "DJANGO_SETTINGS_MODULE": "xaistudy.settings",
           "DJANGO_DEBUG": "1", "DJANGO_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}  # fmt: skip
    for key in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL"):
        env.pop(key, None)
    if not args.skip_demo:
        _manage(env, "demo", "--no-serve", "--no-evaluate")
    slugs = _study_slugs(env)
    for name in (args.trust_study, args.discrimination_study):
        if name not in slugs:
            sys.exit(f"no live study named {name!r}; live: {sorted(slugs)}")
    server = subprocess.Popen([sys.executable, "manage.py", "runserver", f"127.0.0.1:{args.port}", "--noreload"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        base = f"http://127.0.0.1:{args.port}"
        _wait(f"{base}/healthz")
        driver = _browser()
        try:
            for kind, name in (("discrimination", args.discrimination_study), ("trust", args.trust_study)):
                for phone in (False, True):
                    output = args.docs / f"worker-{kind}-trial{'-phone' if phone else ''}.png"
                    shoot(driver, env, base, slugs[name], output, phone, args.max_kb)
        finally:
            driver.quit()
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
