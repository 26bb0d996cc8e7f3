"""Settings: the embedded default, environment overrides, and production hardening."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL", "CELERY_"))}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=120
    )


def test_production_settings_pass_the_deploy_check(tmp_path: Path) -> None:
    result = run_manage(
        "check", "--deploy", "--fail-level", "WARNING",
        DJANGO_SETTINGS_MODULE="xaistudy.settings_production",
        DJANGO_SECRET_KEY="k" * 20 + "a-long-random-looking-secret-value-123",
        DJANGO_ALLOWED_HOSTS="xaistudy.example.org",
        XAISTUDY_VAR_DIR=str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_production_settings_refuse_a_missing_secret_key(tmp_path: Path) -> None:
    result = run_manage(
        "check", DJANGO_SETTINGS_MODULE="xaistudy.settings_production", DJANGO_ALLOWED_HOSTS="x.org",
        XAISTUDY_VAR_DIR=str(tmp_path),
    )  # fmt: skip
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set in production" in result.stderr


def test_development_settings_fail_the_deploy_check(tmp_path: Path) -> None:
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", XAISTUDY_VAR_DIR=str(tmp_path))
    assert result.returncode != 0
    # DEBUG is off by default now (issue #13); the development settings still lack the HTTPS hardening.
    assert "SESSION_COOKIE_SECURE" in result.stderr or "SECURE_SSL_REDIRECT" in result.stderr


def test_database_url_and_broker_select_real_services() -> None:
    code = (
        "import django,os;os.environ['DJANGO_SETTINGS_MODULE']='xaistudy.settings';django.setup();"
        "from django.conf import settings as s;"
        "print(s.DATABASES['default']['ENGINE'], s.DATABASES['default']['NAME'], s.CELERY_TASK_ALWAYS_EAGER)"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "CELERY_"))}
    embedded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True)
    assert embedded.stdout.split()[0] == "django.db.backends.sqlite3"
    assert embedded.stdout.split()[2] == "True"
    real = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
        env={**clean, "DATABASE_URL": "postgres://u@db:5432/xs", "CELERY_BROKER_URL": "redis://r:6379/0"},
    )  # fmt: skip
    assert real.stdout.split() == ["django.db.backends.postgresql", "xs", "False"]


@pytest.mark.django_db
def test_healthz(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"ok": True}
