"""Error pages that never show a trace: "try again" (503) while the database is unreachable.

``xaistudy.urls.handler500`` points here. Django calls it for any uncaught exception when
``DEBUG`` is off, inside the ``except`` block, so ``sys.exc_info()`` names the error:

- a database connection error (``OperationalError`` / ``InterfaceError``: the server restarting,
  a failover, too many connections) answers **503** with ``Retry-After: 5``; nothing was
  acknowledged, so the worker's answer can simply be sent again;
- anything else answers **500** with a generic message.

Paths under ``/api/`` get the API's JSON error shape (``{"error", "detail"}``); worker pages get
a short HTML page.
"""

from __future__ import annotations

import sys

from django.db.utils import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

RETRY_AFTER_S = 5
TRY_AGAIN = "The study is briefly unavailable. Your answers so far are saved; please try again in a few seconds."
BROKEN = "Something went wrong on our side. Your answers so far are saved; please try again."

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main><h1>{title}</h1><p>{text}</p><p><a href="">Try again</a></p></main></body></html>"""


def _database_unavailable() -> bool:
    error = sys.exc_info()[1]
    while error is not None:
        if isinstance(error, (OperationalError, InterfaceError)):
            return True
        error = error.__cause__ or error.__context__
    return False


def server_error(request: HttpRequest) -> HttpResponse:
    """``handler500``: 503 "try again" for database outages, else a plain 500; JSON under /api/."""
    unavailable = _database_unavailable()
    status, code, text = (503, "unavailable", TRY_AGAIN) if unavailable else (500, "server_error", BROKEN)
    if request.path.startswith("/api/"):
        response: HttpResponse = JsonResponse({"error": code, "detail": text}, status=status)
    else:
        title = "Please try again" if unavailable else "Server error"
        response = HttpResponse(PAGE.format(title=title, text=text), status=status)
    if unavailable:
        response["Retry-After"] = str(RETRY_AFTER_S)
    return response
