"""Fixtures for the suites that need real PostgreSQL, Redis and a Celery worker process.

``.ci/run`` exports ``DATABASE_URL`` (PostgreSQL) and ``CELERY_BROKER_URL`` /
``CELERY_RESULT_BACKEND`` (Redis) before running ``pytest -m services``. The worker is a real
``celery worker`` child process (prefork pool, queues ``default`` and ``gpu``) pointed at
pytest-django's test database and at a media folder shared with the test, so tests must use
``transaction=True`` for the worker to see their rows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]


def _require_services() -> None:
    engine = settings.DATABASES["default"]["ENGINE"]
    problems = []
    if "postgresql" not in engine:
        problems.append(f"DATABASE_URL must point at PostgreSQL (engine is {engine})")
    if settings.CELERY_TASK_ALWAYS_EAGER:
        problems.append("CELERY_BROKER_URL must point at Redis (tasks would run eagerly)")
    if problems:
        pytest.fail("services suite misconfigured: " + "; ".join(problems), pytrace=False)


class WorkerProcess:
    """A real Celery worker child process that a test can start, kill and restart."""

    def __init__(self, env: dict[str, str], log_dir: Path, queues: str = "default,gpu"):
        self.env = env
        self.log_dir = log_dir
        self.queues = queues
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        from xaistudy.celery import app

        self.starts += 1
        name = f"test{self.starts}-{os.getpid()}@localhost"
        log = (self.log_dir / f"worker-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "xaistudy", "worker", "-Q", self.queues, "-c", "1",
             "-P", "prefork", "--without-gossip", "--without-mingle", "--without-heartbeat", "-n", name,
             "-l", "info"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"celery worker exited with {self.process.returncode}; see {log.name}")
            if app.control.ping(destination=[name], timeout=0.5):
                return
        raise RuntimeError(f"celery worker did not answer a ping within 90 s; see {log.name}")

    def kill(self) -> None:
        """SIGKILL the whole worker process group, as a crash or an OOM kill would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="session")
def shared_media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shared-media")


@pytest.fixture
def services_media(settings, shared_media: Path) -> Path:  # type: ignore[no-untyped-def]
    """Point this test's storage at the folder the worker process writes to."""
    settings.MEDIA_ROOT = shared_media
    return shared_media


@pytest.fixture
def celery_worker_process(
    django_db_setup: None, shared_media: Path, tmp_path: Path
) -> Iterator[WorkerProcess]:
    """Start a real worker on the test database; stop it (and purge its queues) afterwards."""
    _require_services()
    from xaistudy.celery import app

    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "DJANGO_MEDIA_ROOT": str(shared_media),
        "DJANGO_SETTINGS_MODULE": "xaistudy.settings",
        "PYTHONUNBUFFERED": "1",
    }
    app.control.purge()
    worker = WorkerProcess(env, tmp_path)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()
        app.control.purge()


def _no_fsync_wait(sender, connection, **kwargs) -> None:  # type: ignore[no-untyped-def]
    """Commits stop waiting for the disk flush (locks and visibility are unchanged): this
    machine's ~60 ms fsync would otherwise dominate the run time of a race test."""
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit TO OFF")


@pytest.fixture
def postgres_race() -> Iterator[None]:
    """For the many-thread race tests: PostgreSQL only (SQLite serialises writers, so a race
    test there proves nothing), commits without the fsync wait, a fresh connection per thread."""
    from django.db import connection
    from django.db.backends.signals import connection_created

    if "postgresql" not in settings.DATABASES["default"]["ENGINE"]:
        pytest.fail("the race tests need PostgreSQL (set DATABASE_URL)", pytrace=False)
    connection_created.connect(_no_fsync_wait)
    connection.close()
    yield
    connection_created.disconnect(_no_fsync_wait)
