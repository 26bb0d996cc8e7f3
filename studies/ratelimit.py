"""A small fixed-window rate limiter on Django's cache (Redis when ``REDIS_URL`` is set).

Rule: at most ``limit`` requests per ``window_s`` seconds per (scope, key). The counter for
window ``floor(now / window_s)`` is bumped atomically: on Redis by one pipelined round trip
(``SET key 0 EX ttl NX`` then ``INCR key``); on other caches with ``cache.add`` and
``cache.incr`` (atomic on the local-memory cache within one process). A fixed window lets
through at most ``2 * limit`` in any ``window_s`` span around a boundary, which is enough to
stop scripted floods of entries and submits (django-ratelimit uses the same scheme).

Limits are read from ``settings.XAISTUDY_RATE_LIMITS`` (``{"scope": (limit, window_s)}``);
a scope missing there falls back to :data:`DEFAULT_LIMITS`. The client address is
``REMOTE_ADDR``, or the first ``X-Forwarded-For`` hop when ``XAISTUDY_TRUST_X_FORWARDED_FOR``
is true (only behind a proxy that sets it).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache
from django.http import HttpRequest, HttpResponse, JsonResponse

DEFAULT_LIMITS: dict[str, tuple[int, int]] = {
    "entry": (60, 60),  # new or returning entries per client address per minute
    "submit": (120, 60),  # answers per participant per minute
    "api": (600, 60),  # any API call per client address per minute
}


def rate_limit_hit(*, scope: str, key: str, limit: int, window_s: int, now: float | None = None) -> bool:
    """Count one request; return ``True`` while the window's count is within ``limit``."""
    bucket = int((time.time() if now is None else now) // window_s)
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    cache_key = f"xaistudy:rl:{scope}:{digest}:{bucket}"
    backend = caches["default"]
    if isinstance(backend, RedisCache):
        return _redis_count(backend, cache_key, window_s + 5) <= limit
    if cache.add(cache_key, 1, timeout=window_s + 5):
        return 1 <= limit
    try:
        count = cache.incr(cache_key)
    except ValueError:  # expired between add and incr
        cache.add(cache_key, 1, timeout=window_s + 5)
        count = 1
    return count <= limit


def _redis_count(backend: RedisCache, cache_key: str, ttl_s: int) -> int:
    """Create-if-missing and increment in one round trip; the new count.

    Stored as a plain integer, which Django's Redis serializer reads back as ``int``.
    """
    key = backend.make_and_validate_key(cache_key)
    pipe = _write_client(backend).pipeline(transaction=False)
    pipe.set(key, 0, ex=ttl_s, nx=True)
    pipe.incr(key)
    return int(pipe.execute()[1])


def _write_client(backend: RedisCache) -> Any:
    """The backend's Redis client for writes, made once per backend instance (one per thread).

    Django's ``get_client`` builds a new ``redis.Redis`` object (with its command callbacks) on
    every call, over the same connection pool; the key does not choose the server (writes go to
    the first one), so one client per backend is the same connection choice.
    """
    cache_client = backend._cache
    client = getattr(cache_client, "_xaistudy_write_client", None)
    if client is None:
        client = cache_client.get_client(None, write=True)
        cache_client._xaistudy_write_client = client
    return client


def scope_limit(scope: str) -> tuple[int, int]:
    """``(limit, window_s)`` for a scope, from settings or the defaults."""
    configured = getattr(settings, "XAISTUDY_RATE_LIMITS", {}) or {}
    limit, window = configured.get(scope, DEFAULT_LIMITS[scope])
    return int(limit), int(window)


def client_address(request: HttpRequest) -> str:
    """The client address used as a rate-limit key."""
    if getattr(settings, "XAISTUDY_TRUST_X_FORWARDED_FOR", False):
        forwarded = request.headers.get("X-Forwarded-For", "")
        if forwarded:
            return forwarded.split(",")[0].strip()
    return request.META.get("REMOTE_ADDR", "") or "unknown"


def rate_limited(scope: str, *, key: Callable[[HttpRequest, dict[str, Any]], str] | None = None, json: bool = False):  # type: ignore[no-untyped-def]
    """Decorate a view: over the limit it answers 429 with ``Retry-After`` and does nothing else.

    ``key(request, view_kwargs)`` picks the counter (default: the client address).
    """

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            limit, window = scope_limit(scope)
            counter = key(request, kwargs) if key else client_address(request)
            if not rate_limit_hit(scope=scope, key=counter, limit=limit, window_s=window):
                message = "Too many requests. Please wait a minute and try again."
                response: HttpResponse
                if json:
                    response = JsonResponse({"error": "rate_limited", "detail": message}, status=429)
                else:
                    response = HttpResponse(message, status=429, content_type="text/plain")
                response["Retry-After"] = str(window)
                return response
            return view(request, *args, **kwargs)

        return wrapped

    return decorate
