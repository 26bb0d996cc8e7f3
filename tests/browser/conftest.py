"""Headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by Selenium.

``make test`` installs both when missing (``make browser-deps``). Screenshots go to
``test-artifacts/`` at the repository root (git-ignored).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.cache import cache

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


def _binary(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(autouse=True)
def _clear_cache() -> None:
    cache.clear()


def _sqlite_reads_do_not_lock(sender, connection, **kwargs) -> None:  # type: ignore[no-untyped-def]
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA read_uncommitted = 1")


@pytest.fixture(autouse=True)
def _shared_cache_reads() -> Iterator[None]:
    """The test database is SQLite in memory with a shared cache, where a page read while another
    thread writes (the researcher's Prepare runs in a background thread, by design) fails at once
    with "database table is locked" instead of waiting as a file database does. Reads of the live
    server's and the background threads' connections take no table locks here; tests only."""
    from django.db import connections
    from django.db.backends.signals import connection_created

    connection_created.connect(_sqlite_reads_do_not_lock)
    for connection in connections.all():
        if connection.vendor == "sqlite" and connection.connection is not None:
            _sqlite_reads_do_not_lock(None, connection)
    yield
    connection_created.disconnect(_sqlite_reads_do_not_lock)


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    """A fresh headless Chromium with its own profile directory."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = _binary("chromium", "chromium-browser")
    driver_path = _binary("chromedriver")
    if not chromium or not driver_path:
        pytest.fail("chromium and chromedriver are needed: run `make browser-deps` "
                    "(apt-get install chromium chromium-driver)", pytrace=False)  # fmt: skip
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download anything
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.add_argument("--window-size=1280,1000")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
