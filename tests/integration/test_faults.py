"""Faults during a live study: nothing acknowledged is lost, workers see "try again", not a trace.

The HTTP faults run a real gunicorn (``DEBUG`` off, persistent connections) against a private
PostgreSQL instance that the test owns (``initdb`` into a temporary folder, its own port), so the
database can be restarted under a live crowd without cutting the connections of the other
suites that share the CI cluster. Each ends with ``manage.py audit_study`` clean (exit 0).

The Celery-worker-killed-mid-job fault is tested where the job lives:
``tests/integration/test_pipeline.py::test_worker_killed_mid_job_then_resumed`` (and the pool child
variant), which this file does not duplicate.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from glob import glob
from pathlib import Path

import psycopg2
import pytest
from django.test import Client
from django.utils import timezone

from studies.fixtures.simulation.crowd import CrowdConfig, CrowdReport, crowd_run
from studies.fixtures.simulation.toy import toy_study_create
from studies.models import Assignment, Item, Participant
from studies.services.allocation import leases_sweep
from studies.services.audit import study_audit

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.services


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivatePostgres:
    """A throwaway PostgreSQL server in a temporary folder (trust auth, 127.0.0.1, its own port)."""

    def __init__(self) -> None:
        found = sorted(glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not found and not shutil.which("pg_ctl"):
            pytest.fail("PostgreSQL server binaries (pg_ctl, initdb) are needed for the fault tests", pytrace=False)
        self.bin = Path(found[-1]).parent if found else Path(shutil.which("pg_ctl")).parent  # type: ignore[arg-type]
        self.root = Path(tempfile.mkdtemp(prefix="xaistudy-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.port = _free_port()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def _pg_ctl(self, action: str) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
        self._run("pg_ctl", action, "-D", str(self.data), "-w", "-m", "fast", "-o", options,
                  "-l", str(self.root / "log"))  # fmt: skip

    def start(self) -> None:
        self._pg_ctl("start")

    def restart(self) -> None:
        self._pg_ctl("restart")

    def url(self, name: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def create_database(self, name: str) -> str:
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return self.url(name)

    def query(self, name: str, sql: str, params: tuple = ()) -> list[tuple]:
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=name)
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall()
        finally:
            conn.close()

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        yield server
    finally:
        server.stop()


def _manage(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300, check=check)  # fmt: skip


SETUP_STUDY = (
    "from studies.fixtures.simulation.toy import toy_study_create; "
    "s = toy_study_create(n_images={n}, judgments_per_item=3, trials_per_participant=6); print(s.slug)"
)


class LiveSite:
    """A migrated private database with one toy study, served by gunicorn."""

    def __init__(self, postgres: PrivatePostgres, name: str, tmp: Path, n_images: int, extra_env: dict[str, str]):
        self.postgres, self.name = postgres, name
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "DJANGO_", "DATABASE_URL"))},
            "DATABASE_URL": postgres.create_database(name), "DJANGO_SETTINGS_MODULE": "xaistudy.settings",
            "DJANGO_DEBUG": "0", "DJANGO_CONN_MAX_AGE": "60", "DJANGO_MEDIA_ROOT": str(tmp / "media"),
            "XAISTUDY_VAR_DIR": str(tmp / "var"), "DJANGO_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1",
            **extra_env,
        }  # fmt: skip
        _manage(self.env, "migrate", "--noinput", "-v", "0")
        self.slug = _manage(self.env, "shell", "-c", SETUP_STUDY.format(n=n_images)).stdout.strip().splitlines()[-1]
        self.port = _free_port()
        self.log = tmp / "gunicorn.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "xaistudy.wsgi:application", "-b", f"127.0.0.1:{self.port}", "-w", "2",
             "--timeout", "60", "--log-level", "warning"],
            cwd=ROOT, env=self.env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.base_url}healthz", timeout=2):
                    return
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.3)
        self.close()
        pytest.fail(f"gunicorn did not come up: {self.log.read_text()[-2000:]}", pytrace=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def crowd(self, **kwargs: object) -> CrowdReport:
        config = CrowdConfig(base_url=self.base_url, study_slug=self.slug, flag_simulated=False, **kwargs)  # type: ignore[arg-type]
        return crowd_run(config)

    def audit(self) -> subprocess.CompletedProcess[str]:
        return _manage(self.env, "audit_study", "--", self.slug, check=False)

    def responses_of(self, tokens: set[str]) -> set[str]:
        rows = self.postgres.query(
            self.name,
            "SELECT a.token FROM studies_assignment a JOIN studies_response r ON r.assignment_id = a.id "
            "WHERE a.token = ANY(%s)", (list(tokens),),
        )  # fmt: skip
        return {row[0] for row in rows}

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)


def _assert_no_trace(report: CrowdReport) -> None:
    assert report.stats.server_errors == 0, report.stats.error_samples
    for status, body in report.stats.error_samples.items():
        assert status == 503
        assert "Traceback" not in body.decode()
        if body.lstrip().startswith(b"{"):  # the JSON API
            assert json.loads(body)["error"] == "unavailable"
        else:  # the stimulus images live under the worker pages, which answer in HTML
            assert b"<title>Please try again</title>" in body


def test_broker_down_trials_are_still_served_and_stored(private_postgres: PrivatePostgres, tmp_path: Path) -> None:
    """The web path never needs the broker: with CELERY_BROKER_URL on a closed port, a crowd finishes."""
    closed = f"redis://127.0.0.1:{_free_port()}/0"
    site = LiveSite(private_postgres, "faults_broker", tmp_path, n_images=2,
                    extra_env={"CELERY_BROKER_URL": closed, "CELERY_RESULT_BACKEND": closed})  # fmt: skip
    try:
        report = site.crowd(workers=4, concurrency=4, time_limit_s=120)
    finally:
        site.close()
    assert report.stats.outcomes["completed"] == 4, report.lines()
    assert report.stats.judgments == 24  # 4 participants x 6 trials, 36 slots
    _assert_no_trace(report)
    assert site.responses_of(report.stats.acknowledged) == report.stats.acknowledged
    audit = site.audit()
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "clean" in audit.stdout


def test_postgres_restart_during_a_live_study_loses_nothing(private_postgres: PrivatePostgres, tmp_path: Path) -> None:
    """Restart the database under 8 concurrent participants: 503 JSON while down, then all complete."""
    site = LiveSite(private_postgres, "faults_restart", tmp_path, n_images=4, extra_env={})
    reports: list[CrowdReport] = []
    try:
        crowd = threading.Thread(target=lambda: reports.append(site.crowd(workers=8, concurrency=4, time_limit_s=150)))
        crowd.start()
        deadline = time.monotonic() + 60
        answered = 0
        while time.monotonic() < deadline and answered < 6:
            time.sleep(0.2)
            answered = private_postgres.query(site.name, "SELECT count(*) FROM studies_response")[0][0]
        assert answered >= 6, "the crowd never got going"
        private_postgres.restart()
        restarted_at = answered
        crowd.join(timeout=200)
        assert not crowd.is_alive()
    finally:
        site.close()
    report = reports[0]
    assert report.stats.outcomes["completed"] == 8, report.lines()
    assert report.stats.judgments == 48
    assert restarted_at < 48, "the restart came after the crowd had finished"
    assert report.stats.retries + report.stats.connection_errors > 0, "no request saw the outage"
    _assert_no_trace(report)
    assert site.responses_of(report.stats.acknowledged) == report.stats.acknowledged
    assert len(report.stats.acknowledged) == 48
    audit = site.audit()
    assert audit.returncode == 0, audit.stdout + audit.stderr


@pytest.mark.django_db(transaction=True)
def test_browser_closed_mid_trial_lease_expires_and_item_returns() -> None:
    """A participant who takes a trial and vanishes holds the slot only until the lease sweeper runs."""
    study = toy_study_create(n_images=1, methods=("focused",), judgments_per_item=1, trials_per_participant=1,
                             lease_seconds=60)  # fmt: skip
    # Two items with one slot each; the first participant leases one and closes the browser.

    client = Client()

    def enter() -> dict[str, str]:
        client.cookies.clear()  # each participant is another browser
        data = client.post(f"/api/v1/studies/{study.slug}/enter", "{}", content_type="application/json").json()
        assert "participant_token" in data, data
        headers = {"HTTP_X_PARTICIPANT_TOKEN": data["participant_token"]}
        client.post("/api/v1/participant/consent", json.dumps({"agree": True, "consent_version": "1"}),
                    content_type="application/json", **headers)  # fmt: skip
        client.post("/api/v1/participant/practice", '{"answers": {}}', content_type="application/json", **headers)
        return headers

    gone = enter()
    abandoned = client.get("/api/v1/participant/trial", **gone).json()["trial"]["token"]
    item = Item.objects.get(assignments__token=abandoned)
    assert item.n_leased == 1

    # A second participant takes the other item; the abandoned one is not available to them.
    stays = enter()
    first = client.get("/api/v1/participant/trial", **stays).json()["trial"]
    assert Item.objects.get(assignments__token=first["token"]) != item
    client.post("/api/v1/participant/trial", json.dumps({"assignment": first["token"], "choice": 0}),
                content_type="application/json", **stays)  # fmt: skip
    assert client.get("/api/v1/participant/trial", **stays).json()["trial"] is None

    assert leases_sweep() == 0  # not overdue yet
    Assignment.objects.filter(token=abandoned).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert leases_sweep() == 1
    item.refresh_from_db()
    assert (item.n_leased, Assignment.objects.get(token=abandoned).status) == (0, "expired")

    # The slot is back in the pool: a third participant is served the abandoned item and answers it.
    third = enter()
    again = client.get("/api/v1/participant/trial", **third).json()["trial"]
    assert Item.objects.get(assignments__token=again["token"]) == item
    answered = client.post("/api/v1/participant/trial", json.dumps({"assignment": again["token"], "choice": 1}),
                           content_type="application/json", **third)  # fmt: skip
    assert answered.status_code == 200

    # The first participant's browser comes back and submits late: the quota still holds.
    late = client.post("/api/v1/participant/trial", json.dumps({"assignment": abandoned, "choice": 0}),
                       content_type="application/json", **gone)  # fmt: skip
    assert late.status_code == 200
    assert late.json()["outcome"] == "expired"
    item.refresh_from_db()
    assert (item.n_answered, item.n_leased) == (1, 0)
    assert Participant.objects.filter(study=study).count() == 3
    report = study_audit(study_id=study.pk)
    assert report.ok, report.problems
