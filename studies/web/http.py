"""HTTP helpers for the worker pages: framing by MTurk only, and cookie-free CSRF protection.

Framing: ``X_FRAME_OPTIONS = "DENY"`` stays the global default; views decorated with
:func:`frameable` drop that header and send ``Content-Security-Policy: frame-ancestors 'self'
<settings.XAISTUDY_FRAME_ANCESTORS>`` instead (MTurk shows ExternalQuestion pages in an iframe).

CSRF without third-party cookies: inside MTurk's cross-site iframe, browsers that block
third-party cookies send neither the session nor the CSRF cookie, so Django's cookie-based
check would reject every answer. Worker forms therefore carry a *signed form token*
(``django.core.signing``, salt ``xaistudy.worker-form``) bound to the participant token; a
POST is accepted only if that token verifies for the participant named in the URL, is younger
than ``XAISTUDY_FORM_TOKEN_MAX_AGE_S``, and (when the browser sends one) the ``Origin`` header
is this site. An attacker cannot forge the token without ``SECRET_KEY``. Worker URLs hold
an unguessable participant token, and no cookie grants authority, so there is no ambient
credential for a cross-site request to ride on.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core import signing
from django.http import HttpRequest, HttpResponse
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.csrf import csrf_exempt

FORM_TOKEN_SALT = "xaistudy.worker-form"
FORM_TOKEN_FIELD = "form_token"


def frame_ancestors_header() -> str:
    """The CSP value that allows this site and the configured platforms to frame a page."""
    ancestors = " ".join(["'self'", *getattr(settings, "XAISTUDY_FRAME_ANCESTORS", [])])
    return f"frame-ancestors {ancestors}"


def frameable(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Allow only ``XAISTUDY_FRAME_ANCESTORS`` (and this site) to frame the view's pages."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = view(request, *args, **kwargs)
        response["Content-Security-Policy"] = frame_ancestors_header()
        return response

    return xframe_options_exempt(wrapped)


def form_token_make(participant_token: str) -> str:
    """A signed, timestamped form token for one participant's worker forms."""
    return signing.TimestampSigner(salt=FORM_TOKEN_SALT).sign(participant_token)


def form_token_valid(value: str, participant_token: str) -> bool:
    """Whether ``value`` was issued by :func:`form_token_make` for this participant, recently."""
    max_age = getattr(settings, "XAISTUDY_FORM_TOKEN_MAX_AGE_S", 24 * 3600)
    try:
        signed = signing.TimestampSigner(salt=FORM_TOKEN_SALT).unsign(value or "", max_age=max_age)
    except signing.BadSignature:
        return False
    return signing.constant_time_compare(signed, participant_token)


def origin_ok(request: HttpRequest) -> bool:
    """A present ``Origin`` header must name this site (absent: older browsers, allowed)."""
    origin = request.headers.get("Origin")
    if not origin or origin == "null":
        return origin != "null"
    parts = urlsplit(origin)
    return parts.netloc == request.get_host() and parts.scheme == request.scheme


def worker_csrf(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """CSRF protection for worker POSTs by signed form token (see module docstring).

    The wrapped view takes the participant token as keyword ``token``. Failures return 403.
    """

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method == "POST":
            token_ok = form_token_valid(request.POST.get(FORM_TOKEN_FIELD, ""), kwargs.get("token", ""))
            if not (origin_ok(request) and token_ok):
                return HttpResponse(
                    "This form has expired or was not sent by this page. Please go back and reload.", status=403
                )
        return view(request, *args, **kwargs)

    return csrf_exempt(wrapped)
