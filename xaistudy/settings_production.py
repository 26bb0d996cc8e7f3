"""Production settings: everything from ``xaistudy.settings`` plus the deployment hardening.

There is no default ``SECRET_KEY``: a missing ``DJANGO_SECRET_KEY`` fails at start-up.
``manage.py check --deploy`` passes with this module and real-looking environment values.
"""

from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured

from .settings import *  # noqa: F403
from .settings import env_bool, env_int, env_list

try:
    SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]
except KeyError as exc:  # pragma: no cover - exercised by the deploy check in CI
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set in production") from exc

DEBUG = False
WHITENOISE_USE_FINDERS = False  # the image runs collectstatic at build time (docker/Dockerfile)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", [])
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS must list the public host names")

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 60 * 60 * 24 * 365)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
# The session and CSRF cookies serve the admin only, so they stay SameSite=Lax (Django's
# default; not sent on cross-site subrequests or POSTs). The worker pages inside MTurk's
# cross-site iframe need neither: their forms carry a signed per-participant token
# (studies/web/http.py, worker_csrf), and the link-resume cookie is set per response by
# studies/web/pages.py.
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
CONN_MAX_AGE = env_int("DJANGO_CONN_MAX_AGE", 60)
for _db in DATABASES.values():  # noqa: F405
    _db["CONN_MAX_AGE"] = CONN_MAX_AGE
    _db["CONN_HEALTH_CHECKS"] = True
