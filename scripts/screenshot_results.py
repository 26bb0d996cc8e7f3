"""Screenshot of the results page for a demo-like study, taken in headless Chromium.

Usage::

    python scripts/screenshot_results.py [--output docs/results-page.png] [--port 8765]

Builds a throw-away SQLite database in a temporary folder, fills a class-discrimination
study (the paper's four methods) with synthetic test responses - 20% of the participants
flagged as simulated observers - adds automatic-evaluation rows, serves it with
``runserver``, logs in as a temporary superuser through the admin login form with Selenium
(Debian ``chromium`` + ``chromedriver``), and saves a full-page PNG (palette-quantized to stay
under 300 KB).
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _prepare(env: dict[str, str]) -> str:
    """Migrate, create the login and the study (in a child process); return the study slug."""
    code = """
import django; django.setup()
from django.core.management import call_command
call_command("migrate", interactive=False, verbosity=0)
from django.contrib.auth import get_user_model
get_user_model().objects.create_superuser("shot", "shot@localhost", "shot-password-only-here")
from studies.models import EvaluationResult, Study
from studies.services.synthetic_responses import synthetic_study_create
methods = ("guided_gradcam", "deconv_gradcam", "deconvnet", "guided_backprop")
study = synthetic_study_create(name="Demo: What do you see? (synthetic test responses)", methods=methods,
                               quality=(0.64, 0.62, 0.54, 0.46), n_images=30, n_workers=90, trials_per_worker=20,
                               catch_per_worker=2, n_careless=5, n_fast=3, simulated_share=0.2, seed=2017)
for method, (mean, half) in zip(methods, ((0.261, 0.04), (0.25, 0.04), (0.12, 0.05), (0.168, 0.05))):
    EvaluationResult.objects.create(study=study, method=method, metric="occlusion_rank_correlation",
                                    values=[], summary={"mean": mean, "lo": mean - half, "hi": mean + half, "n": 30})
print(study.slug)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def _wait(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def _shoot(base: str, slug: str, output: Path, width: int) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    profile = tempfile.mkdtemp(prefix="xaistudy-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--no-first-run", f"--user-data-dir={profile}",
                 f"--window-size={width},1000", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(flag)
    options.binary_location = "/usr/bin/chromium"
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        driver.get(f"{base}/admin/login/?next=/results/{slug}/")
        driver.find_element(By.NAME, "username").send_keys("shot")
        driver.find_element(By.NAME, "password").send_keys("shot-password-only-here")
        driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
        driver.get(f"{base}/results/{slug}/")
        driver.find_element(By.ID, "method-table")
        time.sleep(1.5)  # plots load lazily
        driver.execute_script("document.querySelectorAll('img').forEach(i => i.loading = 'eager');")
        for _ in range(2):  # the height grows once the plots have loaded
            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.set_window_size(width, min(int(height) + 160, 6000))
            time.sleep(2.0)
        png = driver.get_screenshot_as_png()
    finally:
        driver.quit()
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    for colours in (128, 64, 32):
        buffer = io.BytesIO()
        image.quantize(colors=colours, method=Image.Quantize.MEDIANCUT).save(buffer, format="PNG", optimize=True)
        if buffer.tell() < 300_000:
            break
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(buffer.getvalue())
    print(f"wrote {output} ({buffer.tell() / 1024:.0f} KB, {image.width}x{image.height})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "results-page.png")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--width", type=int, default=1360)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xaistudy-shot-") as var:
        env = {**os.environ, "XAISTUDY_VAR_DIR": var, "DJANGO_SETTINGS_MODULE": "xaistudy.settings",
               "DJANGO_DEBUG": "1", "DJANGO_LOG_LEVEL": "WARNING"}  # fmt: skip
        for key in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL"):
            env.pop(key, None)
        slug = _prepare(env)
        server = subprocess.Popen([sys.executable, "manage.py", "runserver", f"127.0.0.1:{args.port}", "--noreload"],
                                  cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            base = f"http://127.0.0.1:{args.port}"
            _wait(f"{base}/healthz")
            _shoot(base, slug, args.output, args.width)
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
