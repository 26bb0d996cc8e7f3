"""Request guards: refuse NUL characters at the door, and parse JSON with a depth limit.

NUL characters. PostgreSQL text cannot hold ``\\x00`` (psycopg raises ``ValueError: A string
literal cannot contain NUL``), so a ``%00`` in a URL slug or token, a header, a form field, or a
``\\u0000`` in a JSON string would otherwise surface as a server error wherever the value reaches
a query. No legitimate worker or researcher input contains one. The fuzz suite
(``tests/integration/test_fuzz_api.py``) found these; :class:`NulByteGuardMiddleware` answers them
with 400 before any view runs (JSON under ``/api/``). Install it first in ``MIDDLEWARE``.

What is checked, whatever the ``Content-Type`` says (a client may send JSON as ``text/plain``,
``Application/JSON``, ``application/json; charset=utf-8``, ``application/vnd.api+json`` or with no
type at all, and ``json.loads`` reads the body the same way):

- the path, every ``HTTP_*`` header and the query string (raw and percent-decoded);
- a ``multipart/form-data`` POST (the media type parsed as Django parses it, case-insensitive):
  its text fields and file names, never the file contents (an image may hold zero bytes). The
  form is parsed here, as Django would parse it for the view (a view that then reads
  ``request.body`` instead gets ``RawPostDataException``; the API answers that 400);
- any other body of a request that carries one: a raw ``\\x00`` byte, a JSON escape
  ``\\u0000`` (an escaped backslash before ``u0000`` is refused too: no field needs that text),
  and, percent-decoded, the same two (a form field such as ``focus_events`` holds JSON).

Depth. ``json.loads`` recurses once per nesting level and raises ``RecursionError`` near
Python's recursion limit (~1000 levels), and a structure just below that limit still breaks
whatever walks it later (``json.dumps`` into a ``JSONField``, ``repr`` in an error message).
:func:`json_parse` refuses anything nested deeper than :data:`MAX_JSON_DEPTH` (no request of the
worker API needs more than 3 levels) with :class:`JsonInvalid`, which the API answers as 400
``invalid_json`` and the answer form as an invalid ``focus_events`` field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from itertools import accumulate
from typing import Any
from urllib.parse import unquote_to_bytes

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.utils.http import parse_header_parameters

DETAIL = "the request contains a NUL character, which no field accepts"

#: Deepest nesting of arrays and objects :func:`json_parse` accepts.
MAX_JSON_DEPTH = 32

#: Methods whose body the application may read.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

_ESCAPED_NUL = re.compile(rb"\\u0000", re.IGNORECASE)
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = [0] * 256
for _open in b"[{":
    _DEPTH_STEP[_open] = 1
for _close in b"]}":
    _DEPTH_STEP[_close] = -1


class JsonInvalid(ValueError):
    """A body or field that is not JSON, or is nested deeper than :data:`MAX_JSON_DEPTH`."""


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays/objects in a *valid* JSON document (linear, in C loops).

    Strings are cut out first (their brackets are text), then the remaining brackets are
    counted as a running sum. Only for text ``json.loads`` accepted: on valid JSON every quote
    the scan meets opens a string that closes, so the pattern never backtracks.
    """
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


def json_parse(raw: bytes | str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` that raises :class:`JsonInvalid` for malformed, undecodable or too deeply
    nested input (never ``RecursionError``)."""
    try:
        data = json.loads(raw)
    except RecursionError as exc:
        raise JsonInvalid(f"nested more than {max_depth} levels deep") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise JsonInvalid("not valid JSON") from exc
    if isinstance(data, (list, dict)) and json_depth(raw.encode() if isinstance(raw, str) else raw) > max_depth:
        raise JsonInvalid(f"nested more than {max_depth} levels deep")
    return data


def _nul_in_bytes(data: bytes) -> bool:
    return b"\x00" in data or _ESCAPED_NUL.search(data) is not None


def _has_nul(request: HttpRequest) -> bool:
    if "\x00" in request.path:
        return True
    if any("\x00" in value for key, value in request.META.items() if key.startswith("HTTP_") and isinstance(value, str)):
        return True
    query = request.META.get("QUERY_STRING", "")
    if "\x00" in query or b"\x00" in unquote_to_bytes(query):
        return True
    if request.method not in BODY_METHODS:
        return False
    try:
        media_type, _ = parse_header_parameters(request.META.get("CONTENT_TYPE", ""))
    except ValueError:  # an unknown RFC 2231 charset: Django refuses it too
        media_type = ""
    if media_type == "multipart/form-data" and request.method == "POST":  # what Django parses as a form
        fields = (value for _, values in request.POST.lists() for value in values)
        names = (upload.name or "" for _, uploads in request.FILES.lists() for upload in uploads)
        return any("\x00" in text for text in (*fields, *names))
    body = request.body
    return _nul_in_bytes(body) or ((b"%" in body) and _nul_in_bytes(unquote_to_bytes(body)))


class NulByteGuardMiddleware:
    """Answer 400 to any request with a NUL in its path, headers, query string or body (see above)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if _has_nul(request):
            if request.path.startswith("/api/"):
                return JsonResponse({"error": "invalid", "detail": DETAIL}, status=400)
            return HttpResponseBadRequest(DETAIL)
        return self.get_response(request)
