"""Drive a study's real HTTP JSON API with a crowd of simulated participants.

Each simulated participant walks the same path a person's browser does, over HTTP:
``POST /api/v1/studies/{slug}/enter`` -> ``POST .../consent`` -> ``GET/POST .../practice`` (a
failed attempt is followed by a new draw; an item shown again is answered with the feedback's
right answer, as a person who read it would; out of attempts it ends as ``failed_practice``) ->
``GET .../trial`` (the next trial) -> ``GET`` its images -> ``POST .../trial`` (the answer) ...
-> ``POST .../questionnaire`` -> ``POST .../complete``. The observer (``observers.py``) decides
every answer from the PNG bytes it downloaded and, if it needs it, the scene (``oracle.py``).

Bounds: at most ``workers`` participants, ``concurrency`` at a time (one thread each, sharing one
``urllib3`` connection pool), each stopping after ``max_requests_per_worker`` requests, and the
whole run stopping at ``time_limit_s`` (requests in flight finish; no new ones start).
Transient answers are retried with backoff until the deadline: ``429`` (after ``Retry-After``,
capped), ``503`` and connection errors (a restarting database or server). Every response status
and every latency is counted per endpoint, so the same driver serves ``bench/load.py``.

Simulated participants are flagged ``Participant.is_simulated = True`` right after entry, before
they answer anything (``participant_flag_simulated``; the driver shares the study's database,
which the oracle needs anyway), so analysis and exports show them as simulated.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import urljoin
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import numpy as np
import urllib3
from django.db import connections

from studies.models import Participant
from studies.simulation.observers import Observer, Trial, observer_get
from studies.simulation.oracle import scene_for_trial

TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
MAX_RETRY_SLEEP_S = 2.0


@dataclass
class CrowdStats:
    """Thread-safe counters: latencies (s) and statuses per endpoint, outcomes per participant."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    judgments: int = 0
    retries: int = 0
    connection_errors: int = 0
    acknowledged: set[str] = field(default_factory=set)
    error_samples: dict[int, bytes] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, endpoint: str, status: int, seconds: float, body: bytes = b"") -> None:
        with self.lock:
            self.latencies[endpoint].append(seconds)
            self.statuses[endpoint, status] += 1
            if status >= 500:
                self.error_samples.setdefault(status, body[:2000])

    def acknowledge(self, assignment_token: str) -> None:
        """A submit the server acknowledged (HTTP 200): its response must exist afterwards."""
        with self.lock:
            self.acknowledged.add(assignment_token)

    def count(self, what: str, n: int = 1) -> None:
        with self.lock:
            if what == "judgment":
                self.judgments += n
            elif what == "retry":
                self.retries += n
            elif what == "connection_error":
                self.connection_errors += n
            else:
                self.outcomes[what] += n

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def server_errors(self) -> int:
        """Answers with a 5xx status other than the 503 "try again" of a planned outage."""
        return sum(n for (_, status), n in self.statuses.items() if status >= 500 and status != 503)

    def percentiles(self, endpoint: str, qs: tuple[float, ...] = (50, 95, 99)) -> list[float]:
        values = self.latencies.get(endpoint) or [float("nan")]
        return [float(v) for v in np.percentile(np.asarray(values) * 1000.0, qs)]


@dataclass(frozen=True)
class CrowdConfig:
    """What to run. ``base_url`` is the server's root, e.g. ``http://127.0.0.1:8000/``."""

    base_url: str
    study_slug: str
    observer: str = "random"
    workers: int = 10
    concurrency: int = 4
    seed: int = 0
    time_limit_s: float = 300.0
    max_requests_per_worker: int = 2000
    platform: str = "link"
    run_id: str = ""
    flag_simulated: bool = True
    forwarded_for: bool = False


@dataclass
class CrowdReport:
    config: CrowdConfig
    stats: CrowdStats
    elapsed_s: float

    @property
    def judgments_per_s(self) -> float:
        return self.stats.judgments / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def lines(self) -> list[str]:
        s = self.stats
        out = [
            f"observer={self.config.observer} workers={self.config.workers} concurrency={self.config.concurrency} "
            f"elapsed={self.elapsed_s:.1f}s judgments={s.judgments} ({self.judgments_per_s:.1f}/s) "
            f"requests={s.requests} retries={s.retries} connection_errors={s.connection_errors} "
            f"5xx(non-503)={s.server_errors}",
            "outcomes: " + ", ".join(f"{k}={v}" for k, v in sorted(s.outcomes.items())),
        ]
        for endpoint in sorted(s.latencies):
            p50, p95, p99 = s.percentiles(endpoint)
            statuses = ",".join(f"{st}:{n}" for (ep, st), n in sorted(s.statuses.items()) if ep == endpoint)
            out.append(f"  {endpoint:<14} n={len(s.latencies[endpoint]):>6} p50={p50:7.1f}ms p95={p95:7.1f}ms "
                       f"p99={p99:7.1f}ms  [{statuses}]")  # fmt: skip
        return out


class OutOfTime(Exception):
    """The run's deadline passed."""


class ParticipantStuck(Exception):
    """The server refused to move this participant on (e.g. entry refused); the message says why."""


def participant_flag_simulated(*, token: str) -> None:
    """Mark the participant behind ``token`` as simulated (done before their first answer)."""
    Participant.objects.filter(token=token).update(is_simulated=True)


class _Session:
    """One simulated participant's HTTP conversation."""

    def __init__(self, *, pool: urllib3.PoolManager, config: CrowdConfig, stats: CrowdStats, deadline: float):
        self.pool, self.config, self.stats, self.deadline = pool, config, stats, deadline
        self.token = ""
        self.requests = 0
        self.forwarded_for = ""

    def call(self, method: str, path: str, endpoint: str, body: dict[str, Any] | None = None,
             raw: bool = False) -> tuple[int, Any]:  # fmt: skip
        url = path if path.startswith("http") else urljoin(self.config.base_url, path.lstrip("/"))
        headers = {"Accept": "application/json"}
        if self.token:
            headers["X-Participant-Token"] = self.token
        if self.forwarded_for:
            headers["X-Forwarded-For"] = self.forwarded_for
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        backoff = 0.05
        while True:
            if time.monotonic() > self.deadline:
                raise OutOfTime()
            if self.requests >= self.config.max_requests_per_worker:
                raise ParticipantStuck(f"request budget of {self.config.max_requests_per_worker} spent")
            self.requests += 1
            started = time.perf_counter()
            try:
                response = self.pool.request(method, url, body=payload, headers=headers, retries=False,
                                             timeout=urllib3.Timeout(connect=5, read=30))  # fmt: skip
            except urllib3.exceptions.HTTPError:
                self.stats.count("connection_error")
                time.sleep(backoff)
                backoff = min(MAX_RETRY_SLEEP_S, backoff * 2)
                continue
            self.stats.record(endpoint, response.status, time.perf_counter() - started, response.data)
            if response.status in TRANSIENT_STATUSES:
                self.stats.count("retry")
                wait = backoff
                if response.status == 429:
                    wait = max(wait, float(response.headers.get("Retry-After", "1") or 1))
                time.sleep(min(MAX_RETRY_SLEEP_S, wait))
                backoff = min(MAX_RETRY_SLEEP_S, backoff * 2)
                continue
            if raw:
                return response.status, response.data
            try:
                return response.status, json.loads(response.data or b"null")
            except json.JSONDecodeError:
                return response.status, {"error": "not_json", "detail": response.data[:200].decode(errors="replace")}


def _expect(status: int, data: Any, *wanted: int) -> Any:
    if status not in wanted:
        detail = data.get("detail", data) if isinstance(data, dict) else data
        raise ParticipantStuck(f"HTTP {status}: {detail}")
    return data


def _trial_from(session: _Session, view: dict[str, Any], kind: str, endpoint: str) -> tuple[Trial, list[bytes]]:
    pngs = []
    for image in view["images"]:
        status, data = session.call("GET", image["url"], endpoint, raw=True)
        _expect(status, data, 200)
        pngs.append(data)
    return Trial(kind=kind, stimuli=pngs, options=list(view.get("options") or []), role="main"), pngs


def _observe(observer: Observer, session: _Session, view: dict[str, Any], kind: str, endpoint: str,
             rng: np.random.Generator) -> tuple[int, int]:  # fmt: skip
    """Download the trial's images and let the observer answer; ``(displayed choice, ms)``."""
    trial, pngs = _trial_from(session, view, kind, endpoint)
    scene = None
    if observer.needs_scene:
        height, width = np.asarray(_png_size(pngs[0]))[::-1]
        scene, label = scene_for_trial(trial_token=view["token"], width=int(width), height=int(height))
        trial = Trial(kind=trial.kind, stimuli=trial.stimuli, options=trial.options, class_label=label)
    answer = observer.answer(trial, scene, rng)
    choice = 2 - int(answer.score) if kind == "trust" else int(answer.option)  # trust scale: 0 = +2 for Robot A
    return choice, answer.response_ms


def _png_size(png: bytes) -> tuple[int, int]:
    import io

    from PIL import Image as PILImage

    with PILImage.open(io.BytesIO(png)) as picture:
        return picture.size


def _questionnaire_answers(questions: list[dict[str, Any]]) -> dict[str, str]:
    answers = {}
    for question in questions:
        if question.get("type") == "choice" and question.get("choices"):
            answers[question["name"]] = question["choices"][0]
        elif question.get("type") == "number":
            answers[question["name"]] = "30"
        else:
            answers[question["name"]] = "simulated participant"
    return answers


def _walk(session: _Session, observer: Observer, rng: np.random.Generator, index: int) -> str:
    """One participant from entry to completion; returns the outcome name."""
    config = session.config
    ident = f"SIM{config.run_id}{index:06d}"
    if config.forwarded_for:  # one client address per participant (only behind a trusting proxy)
        session.forwarded_for = f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}"
    params: dict[str, str] = {}
    if config.platform == "mturk":
        params = {"workerId": ident, "assignmentId": f"A{ident}", "hitId": f"H{config.run_id or 'SIM'}",
                  "turkSubmitTo": "https://workersandbox.mturk.com"}  # fmt: skip
    elif config.platform == "prolific":
        params = {"PROLIFIC_PID": ident, "STUDY_ID": f"S{config.run_id or 'SIM'}", "SESSION_ID": f"X{ident}"}
    status, data = session.call("POST", f"api/v1/studies/{config.study_slug}/enter", "enter", params)
    data = _expect(status, data, 200, 201)
    session.token = data["participant_token"]
    if config.flag_simulated:
        participant_flag_simulated(token=session.token)
    study = data["study"]
    kind = study["kind"]
    status, data = session.call("POST", "api/v1/participant/consent", "consent",
                                {"agree": True, "consent_version": study["consent_version"]})  # fmt: skip
    state = _expect(status, data, 200)["state"]
    learned: dict[str, str] = {}  # practice item -> the right answer the feedback showed
    while state["stage"] == "practice":  # each attempt is a new draw (issue #12)
        status, data = session.call("GET", "api/v1/participant/practice", "practice_get")
        practice = _expect(status, data, 200)
        answers = {}
        for v in practice["trials"]:
            answers[v["token"]] = _observe(observer, session, v, kind, "practice_img", rng)[0]
            if learned.get(v["token"]) in v["options"]:  # an item shown again: a reader of the feedback knows it
                answers[v["token"]] = v["options"].index(learned[v["token"]])
        status, data = session.call("POST", "api/v1/participant/practice", "practice_post",
                                    {"answers": answers, "attempt": practice["attempt"]})  # fmt: skip
        graded = _expect(status, data, 200)
        state = graded["state"]
        learned.update({fb["token"]: fb["right_answer"] for fb in graded["feedback"] if fb.get("right_answer")})
    if state["stage"] == "screened_out":
        return "failed_practice"
    while True:
        status, data = session.call("GET", "api/v1/participant/trial", "trial_get")
        data = _expect(status, data, 200)
        view, state = data["trial"], data["state"]
        if view is None:
            break
        choice, response_ms = _observe(observer, session, view, kind, "image", rng)
        status, data = session.call("POST", "api/v1/participant/trial", "trial_post",
                                    {"assignment": view["token"], "choice": choice,
                                     "client_response_ms": response_ms})  # fmt: skip
        _expect(status, data, 200)
        session.stats.acknowledge(view["token"])
        session.stats.count("judgment")
    if state["stage"] == "full":
        return "study_full"
    if state["stage"] == "questionnaire":
        answers = _questionnaire_answers(study.get("questionnaire") or [])
        status, data = session.call("POST", "api/v1/participant/questionnaire", "questionnaire", {"answers": answers})
        _expect(status, data, 200)
    status, data = session.call("POST", "api/v1/participant/complete", "complete")
    completion = _expect(status, data, 200, 409)
    return "completed" if status == 200 and completion.get("completion", {}).get("code") else "not_completed"


def crowd_run(config: CrowdConfig, *, on_progress: Callable[[str], None] | None = None) -> CrowdReport:
    """Run ``config.workers`` simulated participants against ``config.base_url`` (bounded; see module)."""
    observer = observer_get(config.observer)
    stats = CrowdStats()
    started = time.monotonic()
    deadline = started + config.time_limit_s
    pool = urllib3.PoolManager(num_pools=4, maxsize=max(1, config.concurrency), block=True)
    root_seed = np.random.SeedSequence(config.seed)
    next_index = iter(range(config.workers))
    index_lock = threading.Lock()

    def lane() -> None:
        """One concurrency slot: participants one after another until none are left or time is up."""
        try:
            while time.monotonic() < deadline:
                with index_lock:
                    index = next(next_index, None)
                if index is None:
                    return
                session = _Session(pool=pool, config=config, stats=stats, deadline=deadline)
                rng = np.random.default_rng(np.random.SeedSequence(root_seed.entropy, spawn_key=(index,)))
                try:
                    outcome = _walk(session, observer, rng, index)
                except OutOfTime:
                    outcome = "out_of_time"
                except ParticipantStuck as exc:
                    outcome = "stuck"
                    if on_progress:
                        on_progress(f"participant {index}: {exc}")
                stats.count(outcome)
        finally:
            connections.close_all()

    lanes = max(1, min(config.concurrency, config.workers))
    with ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="sim") as executor:
        for future in [executor.submit(lane) for _ in range(lanes)]:
            future.result()
    pool.clear()
    return CrowdReport(config=config, stats=stats, elapsed_s=time.monotonic() - started)


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = 256


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def wsgi_server_running(host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve this process's Django WSGI app on ``host`` (a free port by default); yield its base URL.

    A threaded ``wsgiref`` server: good for pilots and tests, not for load figures (use
    gunicorn, as ``bench/load.py`` does).
    """
    from django.core.wsgi import get_wsgi_application

    server = make_server(host, port, get_wsgi_application(), server_class=_ThreadingWSGIServer,
                         handler_class=_QuietHandler)  # fmt: skip
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
