"""Settings for ``bench/load.py``: the project's settings as production would run them.

DEBUG off, persistent database connections, the rate limiter on Redis with limits raised so
K hot clients from one loopback address are measured rather than refused (the checks still run).
The project settings file is loaded by path: importing the ``xaistudy`` package here would
start the Celery app, which reads these very settings.
"""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "xaistudy_base_settings", Path(__file__).resolve().parents[1] / "xaistudy" / "settings.py"
)
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)
globals().update({name: value for name, value in vars(_base).items() if name.isupper()})

DEBUG = False
DATABASES["default"]["CONN_MAX_AGE"] = 60  # noqa: F821
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True  # noqa: F821
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:6379/12"}}
XAISTUDY_RATE_LIMITS = {"entry": (10**7, 60), "submit": (10**7, 60), "api": (10**7, 60)}
LOGGING = {"version": 1, "disable_existing_loggers": False}
