"""Refuse NUL bytes at the door: 400, instead of a 500 from the database.

PostgreSQL text cannot hold ``\\x00`` (psycopg raises ``ValueError: A string literal cannot
contain NUL``), so a ``%00`` in a URL slug or token, a header, a form field, or a ``\\u0000`` in a JSON
string would otherwise surface as a server error wherever the value reaches a query. No
legitimate worker or researcher input contains one. The fuzz suite
(``tests/services/test_fuzz_api.py``) found these; this middleware answers them with 400 before
any view runs (JSON under ``/api/``). Install it first in ``MIDDLEWARE``.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import unquote_to_bytes

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

DETAIL = "the request contains a NUL character, which no field accepts"


def _has_nul(request: HttpRequest) -> bool:
    if "\x00" in request.path:
        return True
    if any("\x00" in value for key, value in request.META.items() if key.startswith("HTTP_") and isinstance(value, str)):
        return True
    query = request.META.get("QUERY_STRING", "")
    if "\x00" in query or b"\x00" in unquote_to_bytes(query):
        return True
    content_type = request.META.get("CONTENT_TYPE", "")
    if request.method in ("POST", "PUT", "PATCH") and not content_type.startswith("multipart/"):
        body = request.body
        if b"\x00" in body:
            return True
        if content_type.startswith("application/json") and b"\\u0000" in body:
            return True
        if content_type.startswith("application/x-www-form-urlencoded") and b"\x00" in unquote_to_bytes(body):
            return True
    return False


class NulByteGuardMiddleware:
    """Answer 400 to any request with a NUL in its path, query string or (non-file) body."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if _has_nul(request):
            if request.path.startswith("/api/"):
                return JsonResponse({"error": "invalid", "detail": DETAIL}, status=400)
            return HttpResponseBadRequest(DETAIL)
        return self.get_response(request)
