"""A small fixed-window rate limiter on Django's cache (Redis when ``REDIS_URL`` is set).

Rule: at most ``limit`` requests per ``window_s`` seconds per (scope, key). The counter for
window ``floor(now / window_s)`` is bumped atomically: on Redis by one pipelined round trip
(``SET key 0 EX ttl NX`` then ``INCR key``); on other caches with ``cache.add`` and
``cache.incr`` (atomic on the local-memory cache within one process). A fixed window lets
through at most ``2 * limit`` in any ``window_s`` span around a boundary, which is enough to
stop scripted floods of entries and submits (django-ratelimit uses the same scheme).

Limits are read from ``settings.XAISTUDY_RATE_LIMITS`` (``{"scope": (limit, window_s)}``);
a scope missing there falls back to :data:`DEFAULT_LIMITS`. A view's key function may return a
:class:`Counter` instead of a string, to choose another scope or its own limit (the per-study
entry limit, :func:`study_entry_counter`).

Client address (:func:`client_address`), ``XAISTUDY_TRUSTED_PROXY_HOPS`` = N:

- N = 0 (the default): ``REMOTE_ADDR``, the peer of the TCP connection. Right when gunicorn
  faces the clients itself; behind a proxy every client would share the proxy's counter.
- N > 0: the N-th address from the right of ``X-Forwarded-For``. Each trusted proxy appends the
  address it saw (nginx ``$proxy_add_x_forwarded_for``) or replaces the header with it (the
  compose file's Caddy, ``docker/Caddyfile``), so the rightmost N entries were written by our
  own proxies and the N-th from the right is the address that the outermost one saw: the
  client. Whatever the client sent in its own ``X-Forwarded-For`` stays to the left of it (or
  is dropped) and is never read, so spoofing the header does not change the key.
- A header with fewer than N entries means the request did not pass every trusted proxy (it
  reached the application some other way, or a proxy does not append): the key is then
  ``REMOTE_ADDR``, the real peer, which the client cannot choose. This fails closed: at worst
  such requests share the proxy's counter; never does a client pick its own key.
- N must equal the number of proxies exactly. Too small, and the key is one of our proxies
  (every client shares it: over-limiting); too large, and the key is an entry the client wrote
  (under-limiting, spoofable). It cannot be detected from the request, so it is a deployment
  setting (``docker/compose.yml`` sets 1 for its one proxy), not a guess. And with N > 0 the
  application must be reachable only through those proxies: a client that reaches gunicorn
  directly writes every hop itself (the compose file publishes only the proxy's ports).
- The key is normalised: IPv4-mapped IPv6 becomes IPv4, and an IPv6 address becomes the first
  address of its /64 (``2001:db8:1:2::``; one subscriber usually holds a whole /64, so
  per-address IPv6 counters would be free to multiply). A hop that is not an IP address is
  used as text, cut to 100 characters.

The old ``XAISTUDY_TRUST_X_FORWARDED_FOR`` (which keyed on the client-controlled first hop) is
gone: set to a true value it stops the start-up (``xaistudy/settings.py``) and
:func:`client_address` refuses to run, naming its replacement; false or unset is ignored.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from django.conf import settings
from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse, JsonResponse

logger = logging.getLogger(__name__)

DEFAULT_LIMITS: dict[str, tuple[int, int]] = {
    "entry": (60, 60),  # new or returning entries per client address per minute
    "submit": (120, 60),  # answers per participant per minute
    "api": (600, 60),  # any API call per client address per minute
    "entry-unknown": (60, 60),  # entries to unknown study slugs per client address per minute
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


@dataclass(frozen=True)
class Counter:
    """What a key function may return instead of a plain key: the key, and optionally another
    scope and a limit of its own (``None``: the scope's configured limit)."""

    key: str
    scope: str | None = None
    limit: int | None = None


#: The most characters of a non-IP forwarded hop kept in a key.
MAX_HOP_CHARS = 100
_warned_short_header = False


def trusted_proxy_hops() -> int:
    """``XAISTUDY_TRUSTED_PROXY_HOPS`` (0 when unset); refuses the removed first-hop setting."""
    if getattr(settings, "XAISTUDY_TRUST_X_FORWARDED_FOR", False):
        raise ImproperlyConfigured(
            "XAISTUDY_TRUST_X_FORWARDED_FOR is removed (it trusted the client-controlled first hop): "
            "set XAISTUDY_TRUSTED_PROXY_HOPS to the number of proxies in front of the application instead"
        )
    hops = int(getattr(settings, "XAISTUDY_TRUSTED_PROXY_HOPS", 0) or 0)
    if hops < 0:
        raise ImproperlyConfigured("XAISTUDY_TRUSTED_PROXY_HOPS must be 0 or more")
    return hops


def address_key(raw: str) -> str:
    """A client address as a counter key: IPv4 as is, IPv6 as the first address of its /64
    (still a valid IP address, so it can be stored where an address is expected), text otherwise."""
    text = raw.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]" or "[2001:db8::1]:443"
        text = text[1 : text.index("]")]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        host, sep, port = text.rpartition(":")
        if sep and port.isdigit() and host.count(":") == 0:  # "203.0.113.7:51234"
            return address_key(host)
        return text[:MAX_HOP_CHARS] or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False).network_address)
    return str(address)


def client_address(request: HttpRequest) -> str:
    """The client address used as a rate-limit (and per-client cap) key; see the module docstring."""
    remote = request.META.get("REMOTE_ADDR", "") or "unknown"
    hops = trusted_proxy_hops()
    if hops == 0:
        return address_key(remote)
    forwarded = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    forwarded = [hop for hop in forwarded if hop]
    if len(forwarded) < hops:
        global _warned_short_header
        if not _warned_short_header:
            _warned_short_header = True
            logger.warning(
                "X-Forwarded-For has %d of the %d trusted proxy hops: keying on REMOTE_ADDR (is a proxy "
                "bypassed, or XAISTUDY_TRUSTED_PROXY_HOPS too large?)", len(forwarded), hops,
            )  # fmt: skip
        return address_key(remote)
    return address_key(forwarded[-hops])


def study_entry_counter(request: HttpRequest, slug: str) -> Counter:
    """The entry counter of one study and client: per (study, client address), the study's own
    ``entry_rate_limit`` when set. An unknown slug counts in a scope of its own
    (``entry-unknown``, per client address), so it never spends a real study's budget."""
    from studies.models import Study  # the rate limiter itself stays model-free

    row = Study.objects.filter(slug=slug).values_list("pk", "entry_rate_limit").first()
    client = client_address(request)
    if row is None:
        return Counter(key=client, scope="entry-unknown")
    study_id, limit = row
    return Counter(key=f"study{study_id}|{client}", scope="entry", limit=limit)


def rate_limited(  # type: ignore[no-untyped-def]
    scope: str, *, key: Callable[[HttpRequest, dict[str, Any]], str | Counter] | None = None, json: bool = False
):
    """Decorate a view: over the limit it answers 429 with ``Retry-After`` and does nothing else.

    ``key(request, view_kwargs)`` picks the counter (default: the client address); a
    :class:`Counter` may also name another scope (its configured window and limit) and a limit.
    """

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            counter = key(request, kwargs) if key else client_address(request)
            if not isinstance(counter, Counter):
                counter = Counter(key=counter)
            used_scope = counter.scope or scope
            limit, window = scope_limit(used_scope)
            if counter.limit is not None:
                limit = counter.limit
            if not rate_limit_hit(scope=used_scope, key=counter.key, limit=limit, window_s=window):
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
