"""Settings for xaistudy, read from the environment (12-factor).

With nothing set, the project runs embedded: SQLite under ``var/``, Celery tasks executed
in-process (``task_always_eager``), a local-memory cache. That default is for the demo and the
quick tests only. Production and the service tests set:

- ``DATABASE_URL``        e.g. ``postgres://postgres@127.0.0.1:5432/xaistudy``
- ``CELERY_BROKER_URL``   e.g. ``redis://127.0.0.1:6379/0`` (``amqp://`` works too)
- ``REDIS_URL``           cache for rate limits (falls back to local memory)

Every variable is documented in ``.env.example``.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    """Read a boolean environment variable (``1/true/yes/on`` are true)."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    """Read an integer environment variable."""
    raw = os.environ.get(name)
    return default if raw in (None, "") else int(raw)


def env_list(name: str, default: list[str]) -> list[str]:
    """Read a comma-separated list environment variable."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [part.strip() for part in raw.split(",") if part.strip()]


VAR_DIR = Path(os.environ.get("XAISTUDY_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)

# Development default only; production settings require DJANGO_SECRET_KEY.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "dev-insecure-xaistudy-key-do-not-use-in-production")
# Off unless DJANGO_DEBUG=1 is set explicitly: a debug page shows URL patterns, settings and
# tracebacks, and the demo is served to people who are not developers (issue #13).
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",  # admin login throttling (see AXES_* below)
    "studies",
]

MIDDLEWARE = [
    "studies.web.guards.NulByteGuardMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # static files with DEBUG off (demo and production)
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes requires: answers 429 to a locked-out login
]

ROOT_URLCONF = "xaistudy.urls"
WSGI_APPLICATION = "xaistudy.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DJANGO_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Concurrent demo participants on SQLite: take the write lock when a transaction starts
    # (a deferred one that reads first cannot upgrade while another writes: "database is locked"),
    # and wait for it rather than fail.
    DATABASES["default"].setdefault("OPTIONS", {}).update(timeout=20, transaction_mode="IMMEDIATE")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes first: it refuses a locked-out login before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("DJANGO_STATIC_ROOT", VAR_DIR / "static"))
# The embedded default serves static files straight from the apps (no collectstatic step);
# production images run collectstatic at build time and turn this off.
WHITENOISE_USE_FINDERS = env_bool("XAISTUDY_STATIC_FROM_APPS", True)
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns about a missing one
MEDIA_URL = "media/"
MEDIA_ROOT = Path(os.environ.get("DJANGO_MEDIA_ROOT", VAR_DIR / "media"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Uploads: what the importers accept (see studies/services/uploads.py).
XAISTUDY_MAX_UPLOAD_BYTES = env_int("XAISTUDY_MAX_UPLOAD_BYTES", 200 * 1024 * 1024)
XAISTUDY_MAX_IMAGE_BYTES = env_int("XAISTUDY_MAX_IMAGE_BYTES", 20 * 1024 * 1024)
XAISTUDY_MAX_IMAGE_PIXELS = env_int("XAISTUDY_MAX_IMAGE_PIXELS", 40_000_000)
XAISTUDY_CHUNK_MAX_ATTEMPTS = env_int("XAISTUDY_CHUNK_MAX_ATTEMPTS", 3)  # a chunk started more often fails its prepare job
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

# Where the offline worlds and their trained weights are cached (see explainers.worlds).
XAISTUDY_WORLDS_DIR = Path(os.environ.get("XAISTUDY_WORLDS_DIR", VAR_DIR / "worlds"))

# Worker pages: MTurk shows ExternalQuestion pages inside an iframe. Only the views marked
# with studies.web.http.frameable may be framed, and only by these ancestors.
X_FRAME_OPTIONS = "DENY"
XAISTUDY_FRAME_ANCESTORS = env_list(
    "XAISTUDY_FRAME_ANCESTORS", ["https://worker.mturk.com", "https://workersandbox.mturk.com"]
)

# --- Worker flow (studies/web, studies/web/ratelimit.py, studies/web/http.py) ---------------------
# Rate limits: (requests, window seconds) per (study, client address) for entry (a study's own
# entry_rate_limit replaces the entry limit; unknown slugs count apart) and per participant for submit.
XAISTUDY_RATE_LIMITS = {
    "entry": (env_int("XAISTUDY_RATE_LIMIT_ENTRY", 60), 60),
    "submit": (env_int("XAISTUDY_RATE_LIMIT_SUBMIT", 120), 60),
}
# Client address for rate limits and per-client caps: the number of reverse proxies in front
# of the application, each appending to X-Forwarded-For (0: REMOTE_ADDR). See studies/web/ratelimit.py.
XAISTUDY_TRUSTED_PROXY_HOPS = env_int("XAISTUDY_TRUSTED_PROXY_HOPS", 0)
if XAISTUDY_TRUSTED_PROXY_HOPS < 0:
    raise ImproperlyConfigured("XAISTUDY_TRUSTED_PROXY_HOPS must be 0 or more")
if env_bool("XAISTUDY_TRUST_X_FORWARDED_FOR", False):
    # Removed: it keyed on the first (client-written) hop. Refuse rather than guess the hop count.
    raise ImproperlyConfigured(
        "XAISTUDY_TRUST_X_FORWARDED_FOR is removed: set XAISTUDY_TRUSTED_PROXY_HOPS to the number of "
        "reverse proxies in front of the application (1 for the compose file's proxy)"
    )
# How long a worker form (signed form token) stays valid.
XAISTUDY_FORM_TOKEN_MAX_AGE_S = env_int("XAISTUDY_FORM_TOKEN_MAX_AGE_S", 24 * 3600)
# Public https origin of the site, used in the admin's "paste into MTurk/Prolific" snippets.
XAISTUDY_PUBLIC_URL = os.environ.get("XAISTUDY_PUBLIC_URL", "")
# Crowd platform APIs (studies/services/mturk.py, prolific.py; docs/platforms.md). Credentials come from the
# environment only: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (boto3's chain) and PROLIFIC_TOKEN.
XAISTUDY_MTURK_SANDBOX = env_bool("XAISTUDY_MTURK_SANDBOX", True)
XAISTUDY_PROLIFIC_API = os.environ.get("XAISTUDY_PROLIFIC_API", "https://api.prolific.com/api/v1/")

# --- Admin login throttling (django-axes) ------------------------------------------------
# After AXES_FAILURE_LIMIT failed logins for one username from one client address, that pair
# is refused (429, even with the right password) for AXES_COOLOFF_TIME. Attempts are stored in
# the database (visible in the admin under "Axes"); a successful login resets the count.
AXES_FAILURE_LIMIT = env_int("XAISTUDY_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("XAISTUDY_LOGIN_COOLOFF_MINUTES", 60))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False  # no INFO line on every start and login; attempts and lockouts are rows in the admin


def axes_client_ip(request: Any) -> str | None:
    """The client address for django-axes: the rate limiter's (same trusted proxy hops), if an IP."""
    from django.core.exceptions import ValidationError
    from django.core.validators import validate_ipv46_address

    from studies.web.ratelimit import client_address

    address = client_address(request)
    try:
        validate_ipv46_address(address)
    except ValidationError:
        return None
    return address


AXES_CLIENT_IP_CALLABLE = axes_client_ip

# --- Celery -----------------------------------------------------------------------------
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "")
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", "") or None
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
if not CELERY_BROKER_URL:
    CELERY_BROKER_URL = "memory://"
# The hard time limit of every task stays well below the broker's visibility timeout, so a
# long GPU chunk is never redelivered while it is still running.
CELERY_VISIBILITY_TIMEOUT_S = env_int("CELERY_VISIBILITY_TIMEOUT_S", 3600)
CELERY_TASK_TIME_LIMIT_S = env_int("CELERY_TASK_TIME_LIMIT_S", 1200)
CELERY_TASK_SOFT_TIME_LIMIT_S = env_int("CELERY_TASK_SOFT_TIME_LIMIT_S", 1100)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
