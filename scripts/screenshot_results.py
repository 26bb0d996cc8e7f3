"""Screenshots of the real demo: the results page of a simulated study and two worker trial pages.

Usage::

    python scripts/screenshot_results.py                      # everything, in a fresh temp var dir
    python scripts/screenshot_results.py --var-dir DIR --skip-demo --skip-simulate   # reuse a filled one

Nothing shown is typed in by hand. The steps, each a real command or page of the product:

1. ``manage.py demo --no-serve`` in ``XAISTUDY_VAR_DIR`` (builds both worlds, prepares the four
   demo studies, evaluates "What do you see? (synthetic scenes)" automatically);
2. when that study has no exclusion rules, sets ``--exclusion-rules`` on this (scratch) database;
3. ``manage.py simulate_crowd`` over the real JSON API: ``--careless`` careless and
   ``--straight-liners`` straight-lining participants, then ``--workers`` heatmap readers;
4. ``manage.py audit_study`` (the script stops if the books do not balance);
5. serves the database with ``runserver``, logs a throw-away staff user in through the admin
   form in headless Chromium (Debian ``chromium`` + ``chromedriver``, Selenium) and saves the
   full-page ``/results/<slug>/``;
6. with ``--trust-output`` / ``--discrimination-output``, enters that study as a new participant
   through the JSON API (consent, practice answered from the server's own keyed draw) and saves
   its first trial page (``scripts/screenshot_worker.py`` takes the documented worker shots).

Use ``--database-url postgres://...`` (an empty database) for a concurrent crowd: on the default
SQLite file, concurrent submits fail with "database is locked", so the crowd then runs one at a time.
PNGs are palette-quantized to stay under the ``--max-kb`` limits.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DISCRIMINATION_STUDY = "What do you see? (synthetic scenes)"
TRUST_STUDY = "Which robot is more reasonable? (synthetic, biased vs unbiased)"
#: Applied only to a study that has none (the demo studies ship without rules).
DEFAULT_RULES = [
    {"rule": "catch_accuracy_below", "threshold": 0.5},
    {"rule": "median_trial_time_below", "seconds": 1.0},
    {"rule": "straight_lining", "max_share_same_option": 0.9, "min_trials": 10},
]
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--no-first-run", "--hide-scrollbars")  # fmt: skip


def _manage(env: dict[str, str], *args: str) -> str:
    """Run ``manage.py <args>``, echo its output, return stdout; exit on failure."""
    began = time.monotonic()
    print(f"$ manage.py {' '.join(args)}", flush=True)
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    for line in (done.stdout + done.stderr).splitlines():
        print(f"  {line}")
    print(f"  ({time.monotonic() - began:.0f}s, exit {done.returncode})", flush=True)
    if done.returncode != 0:
        sys.exit(f"manage.py {args[0]} failed (exit {done.returncode})")
    return done.stdout


def _django(env: dict[str, str], code: str) -> Any:
    """Run ``code`` after ``django.setup()`` in a child process; return the JSON it prints last."""
    program = "import django, json; django.setup()\n" + code
    done = subprocess.run([sys.executable, "-c", program], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"django snippet failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _study_slugs(env: dict[str, str]) -> dict[str, str]:
    return _django(env, "from studies.models import Study\n"
                        "print(json.dumps({s.name: s.slug for s in Study.objects.filter(status='live')}))")  # fmt: skip


def _rules_ensure(env: dict[str, str], slug: str, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Set ``rules`` on the study when it has none (validated by the analysis' parser); return its rules."""
    return _django(
        env,
        f"""
from studies.analysis.quality import rules_from_json
from studies.models import Study
study = Study.objects.get(slug={slug!r})
if not study.exclusion_rules:
    rules = json.loads({json.dumps(rules)!r})
    rules_from_json(rules)
    study.exclusion_rules = rules
    study.save(update_fields=["exclusion_rules"])
print(json.dumps(study.exclusion_rules))
""",
    )


def _staff_user(env: dict[str, str]) -> tuple[str, str]:
    username, password = f"screenshot-{secrets.token_hex(3)}", secrets.token_urlsafe(16)
    _django(
        env,
        f"""
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
user = get_user_model().objects.create_user({username!r}, password={password!r}, is_staff=True)
user.user_permissions.add(Permission.objects.get(codename="view_study"))  # the results page needs it (#11)
print("null")
""",
    )
    return username, password


def _wait(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def _api(base: str, path: str, token: str = "", body: dict[str, Any] | None = None) -> Any:
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    if token:
        headers["X-Participant-Token"] = token
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{base}/api/v1/{path}", data=data, headers=headers,
                                     method="GET" if body is None else "POST")  # fmt: skip
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _participant_at_first_trial(env: dict[str, str], base: str, slug: str) -> str:
    """Enter the study over the JSON API, consent, pass the current practice attempt; return the token.

    Each practice attempt is a new draw (issue #12), so the feedback of one attempt does not answer
    the next: the right answers come from the server's own keyed draw (``screenshot_worker.py``).
    """
    from screenshot_worker import participant_at_first_trial  # a sibling script; it imports this one

    return participant_at_first_trial(env, base, slug)


def _browser(width: int):  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    profile = tempfile.mkdtemp(prefix="xaistudy-chromium-")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},1000"):
        options.add_argument(flag)
    options.binary_location = "/usr/bin/chromium"
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))


def _images_loaded(driver) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script("document.querySelectorAll('img').forEach(i => i.loading = 'eager');")
    WebDriverWait(driver, 60).until(
        lambda d: d.execute_script(
            "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
        )
    )


def _full_page_png(driver, width: int) -> bytes:  # type: ignore[no-untyped-def]
    for _ in range(3):  # the height grows once the plots have loaded
        _images_loaded(driver)
        height, chrome = driver.execute_script(
            "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]"
        )
        driver.set_window_size(width, min(int(height) + int(chrome) + 24, 8000))
        time.sleep(1.0)
    _images_loaded(driver)
    return driver.get_screenshot_as_png()


def _save(png: bytes, output: Path, max_kb: int) -> None:
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    for colours in (256, 128, 64, 32):
        buffer = io.BytesIO()
        image.quantize(colors=colours, method=Image.Quantize.MEDIANCUT).save(
            buffer, format="PNG", optimize=True
        )
        if buffer.tell() < max_kb * 1024:
            break
    else:
        sys.exit(f"{output}: {buffer.tell() / 1024:.0f} KB even at 32 colours (limit {max_kb} KB)")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(buffer.getvalue())
    print(f"wrote {output} ({buffer.tell() / 1024:.0f} KB, {image.width}x{image.height}, {colours} colours)")


def _shoot(
    args: argparse.Namespace,
    env: dict[str, str],
    base: str,
    login: tuple[str, str],
    slugs: dict[str, str],
    results_slug: str,
) -> None:
    from selenium.webdriver.common.by import By

    driver = _browser(args.width)
    try:
        driver.get(f"{base}/admin/login/?next=/results/{results_slug}/")
        driver.find_element(By.NAME, "username").send_keys(login[0])
        driver.find_element(By.NAME, "password").send_keys(login[1])
        driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
        driver.get(f"{base}/results/{results_slug}/")
        driver.find_element(By.ID, "method-table")
        _save(_full_page_png(driver, args.width), args.output, args.max_kb)
        for name, output in (
            (args.trust_study, args.trust_output),
            (args.worker_study, args.discrimination_output),
        ):
            if output is None:
                continue
            token = _participant_at_first_trial(env, base, slugs[name])
            driver.set_window_size(args.worker_width, 900)
            driver.get(f"{base}/p/{token}/")
            driver.find_element(By.CSS_SELECTOR, "[data-trial-form]")
            _save(_full_page_png(driver, args.worker_width), output, args.worker_max_kb)
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--var-dir", type=Path, help="XAISTUDY_VAR_DIR to use (default: a new temp dir, kept)"
    )
    parser.add_argument(
        "--database-url",
        default="",
        help="DATABASE_URL (default: SQLite in the var dir; use PostgreSQL for concurrency > 1)",
    )
    parser.add_argument("--skip-demo", action="store_true", help="the var dir already holds the demo")
    parser.add_argument("--skip-simulate", action="store_true", help="the study is already filled")
    parser.add_argument(
        "--study", default=DISCRIMINATION_STUDY, help="name of the study whose results are shown"
    )
    parser.add_argument("--trust-study", default=TRUST_STUDY)
    parser.add_argument(
        "--worker-study", default=DISCRIMINATION_STUDY, help="discrimination study for the trial shot"
    )
    parser.add_argument("--workers", type=int, default=60, help="heatmap_reader participants")
    parser.add_argument("--careless", type=int, default=4)
    parser.add_argument("--straight-liners", type=int, default=4)
    parser.add_argument(
        "--concurrency", type=int, help="simulated participants at a time (default 4; 1 on SQLite)"
    )
    parser.add_argument("--exclusion-rules", type=json.loads, default=DEFAULT_RULES,
                        help="JSON rule list set when the study has none")  # fmt: skip
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "results-page.png")
    # The documented worker shots (docs/worker-*-trial*.png) are scripts/screenshot_worker.py's:
    # these full-page ones are taken only when asked for.
    parser.add_argument("--trust-output", type=Path, help="also save the trust study's first trial page here")
    parser.add_argument(
        "--discrimination-output",
        type=Path,
        help="also save the discrimination study's first trial page here",
    )
    parser.add_argument("--max-kb", type=int, default=400)
    parser.add_argument("--worker-max-kb", type=int, default=300)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--width", type=int, default=1360)
    parser.add_argument("--worker-width", type=int, default=1100)
    args = parser.parse_args()

    var = args.var_dir or Path(tempfile.mkdtemp(prefix="xaistudy-shot-"))
    print(f"XAISTUDY_VAR_DIR={var}")
    env = {**os.environ, "XAISTUDY_VAR_DIR": str(var), "DJANGO_SETTINGS_MODULE": "xaistudy.settings",
           "DJANGO_DEBUG": "1", "DJANGO_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}  # fmt: skip
    for key in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL"):
        env.pop(key, None)
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
    if args.concurrency is None:  # SQLite answers concurrent writers with "database is locked"
        args.concurrency = 4 if args.database_url else 1
    if not args.skip_demo:
        _manage(env, "demo", "--no-serve")
    slugs = _study_slugs(env)
    for name in (args.study, args.trust_study, args.worker_study):
        if name not in slugs:
            sys.exit(f"no live study named {name!r}; live: {sorted(slugs)}")
    slug = slugs[args.study]
    print(f"exclusion rules of {args.study!r}: {_rules_ensure(env, slug, args.exclusion_rules)}")
    if not args.skip_simulate:
        crowds = (
            ("careless", args.careless),
            ("straight_liner", args.straight_liners),
            ("heatmap_reader", args.workers),
        )
        for seed, (observer, count) in enumerate(crowds, start=1):
            if count:
                _manage(env, "simulate_crowd", slug, "--workers", str(count), "--concurrency", str(args.concurrency),
                        "--observer", observer, "--seed", str(seed), "--no-audit")  # fmt: skip
    _manage(env, "audit_study", slug)
    login = _staff_user(env)
    server = subprocess.Popen([sys.executable, "manage.py", "runserver", f"127.0.0.1:{args.port}", "--noreload"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        base = f"http://127.0.0.1:{args.port}"
        _wait(f"{base}/healthz")
        _shoot(args, env, base, login, slugs, slug)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
