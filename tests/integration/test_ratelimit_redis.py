"""The rate limiter on Redis: one pipelined round trip per request, same fixed-window rule."""

from __future__ import annotations

import os
import time

import pytest
from django.core.cache import caches

from studies.web.ratelimit import rate_limit_hit

pytestmark = pytest.mark.services

REDIS = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/11")


@pytest.fixture
def redis_cache(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS}}
    caches["default"].clear()
    yield caches["default"]
    caches["default"].clear()


def test_redis_counter_allows_exactly_the_limit_per_window(redis_cache):
    now = time.time()
    hits = [rate_limit_hit(scope="t", key="client", limit=3, window_s=60, now=now) for _ in range(5)]
    assert hits == [True, True, True, False, False]
    later = (now // 60 + 1) * 60  # the next window starts from zero
    assert rate_limit_hit(scope="t", key="client", limit=3, window_s=60, now=later)


def test_redis_counter_is_a_plain_integer_with_an_expiry(redis_cache):
    now = time.time()
    for _ in range(2):
        rate_limit_hit(scope="t", key="ttl", limit=10, window_s=60, now=now)
    client = redis_cache._cache.get_client(write=False)
    keys = [k for k in client.keys("*xaistudy:rl:t:*") if client.get(k) == b"2"]
    assert len(keys) == 1
    assert 0 < client.ttl(keys[0]) <= 65
