"""Server CPU per API request, in process: the load benchmark's request sequence without HTTP.

    python bench/load_profile.py [--participants 30] [--profile trial_get,trial_post,image]

Same database preparation and settings as ``bench/load.py`` (fresh PostgreSQL database, one
toy study, ``bench.load_settings``), then participants walk the study one after another by
calling the WSGI application directly (enter, consent, then for each trial ``GET trial``,
``GET image``, ``POST trial``; then complete). ``time.process_time`` around each call gives
the CPU this process spent per endpoint: Django, the views, the ORM, psycopg2 and the Redis
client, but not PostgreSQL's own CPU nor gunicorn's HTTP parsing. With ``--profile`` one
endpoint's calls run under ``cProfile`` and the top functions by cumulative time are printed.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.load import _prepare_database  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=30)
    parser.add_argument("--profile", default="", help="endpoints to run under cProfile, comma-separated")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/xaistudy_h2")
    parser.add_argument("--top", type=int, default=45)
    args = parser.parse_args()
    slug = _prepare_database(args.database_url, Path(tempfile.mkdtemp(prefix="xaistudy-prof-")) / "media")

    from django.core.wsgi import get_wsgi_application

    application = get_wsgi_application()
    cpu: dict[str, list[float]] = defaultdict(list)
    profiled = {name for name in args.profile.split(",") if name}
    profilers = {name: cProfile.Profile(time.process_time) for name in profiled}  # CPU time, not wall time

    def call(method: str, url: str, endpoint: str, token: str = "", body: dict | None = None) -> tuple[int, bytes]:
        parts = urlsplit(url)
        payload = json.dumps(body).encode() if body is not None else b""
        environ = {
            "REQUEST_METHOD": method, "PATH_INFO": parts.path, "QUERY_STRING": parts.query, "SCRIPT_NAME": "",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1:8000", "HTTP_ACCEPT": "application/json",
            "wsgi.input": io.BytesIO(payload), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
            "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False, "wsgi.version": (1, 0),
        }  # fmt: skip
        if token:
            environ["HTTP_X_PARTICIPANT_TOKEN"] = token
        if body is not None:
            environ["CONTENT_TYPE"] = "application/json"
            environ["CONTENT_LENGTH"] = str(len(payload))
        status: list[str] = []
        profiler = profilers.get(endpoint) if participant_index else None
        started = time.process_time()
        if profiler:
            profiler.enable()
        result = application(environ, lambda s, h, exc_info=None: status.append(s))
        data = b"".join(result)
        if hasattr(result, "close"):
            result.close()
        if profiler:
            profiler.disable()
        if participant_index:  # the first participant's calls warm the caches: not counted
            cpu[endpoint].append(time.process_time() - started)
        return int(status[0].split()[0]), data

    participant_index = 0
    for index in range(args.participants):
        participant_index = index
        status, data = call("POST", f"/api/v1/studies/{slug}/enter", "enter", body={})
        entered = json.loads(data)
        token = entered["participant_token"]
        call("POST", "/api/v1/participant/consent", "consent", token,
             {"agree": True, "consent_version": entered["study"]["consent_version"]})  # fmt: skip
        status, data = call("GET", "/api/v1/participant/practice", "practice_get", token)
        answers = {v["token"]: 0 for v in json.loads(data)["trials"]}
        for _round in range(3):
            status, data = call("POST", "/api/v1/participant/practice", "practice_post", token, {"answers": answers})
            graded = json.loads(data)
            if graded["passed"]:
                break
            answers.update({f["token"]: f["correct_choice"] for f in graded["feedback"] if f["correct_choice"] is not None})
        while True:
            status, data = call("GET", "/api/v1/participant/trial", "trial_get", token)
            assert status == 200, data
            view = json.loads(data)["trial"]
            if view is None:
                break
            for image in view["images"]:
                status, _ = call("GET", image["url"], "image", token)
                assert status == 200
            status, data = call("POST", "/api/v1/participant/trial", "trial_post", token,
                                {"assignment": view["token"], "choice": index % 2, "client_response_ms": 900})  # fmt: skip
            assert status == 200, data
            assert json.loads(data)["outcome"] == "recorded", data
        status, data = call("POST", "/api/v1/participant/complete", "complete", token)
        assert status == 200, data

    print(f"{'endpoint':<13} {'n':>5} {'CPU ms mean':>11} {'median':>7}  (the first participant's calls are not counted)")
    for endpoint, values in cpu.items():
        ordered = sorted(values)
        print(f"{endpoint:<13} {len(values):>5} {1000 * sum(values) / len(values):>11.2f} {1000 * ordered[len(values) // 2]:>7.2f}")
    for name, profiler in profilers.items():
        for order in ("cumulative", "tottime"):
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(args.top)
            print(f"=== {name} by {order} (CPU seconds, cProfile overhead included)\n{out.getvalue()}")


if __name__ == "__main__":
    main()
