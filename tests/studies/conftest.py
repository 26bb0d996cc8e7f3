"""Fixtures for the studies tests: a clean cache per test (rate-limit counters live there)."""

from __future__ import annotations

import pytest
from django.core.cache import cache


@pytest.fixture(autouse=True)
def _clear_cache() -> None:
    cache.clear()
