"""Load benchmark: the worker JSON API under gunicorn + PostgreSQL, driven by simulated workers.

    python bench/load.py [--ks 50,200,500] [--seconds 20] [--gunicorn-workers 4] [--threads 4]

What it does (loopback only, bounded in time):

1. Creates a fresh PostgreSQL database ``xaistudy_load`` (``--database-url``), migrates it, and
   builds one live discrimination study (``studies.fixtures.simulation.toy``: 40 images x 3 methods x 2
   targets = 240 items, quota 10**6 judgments per item, 20 trials per participant, no practice).
2. Starts gunicorn on 127.0.0.1 with ``bench.load_settings`` (the project settings plus
   ``DEBUG=False``, persistent connections ``CONN_MAX_AGE=60``, Redis cache for the rate limiter
   with limits raised so that K hot clients from one address are measured, not refused).
3. For each K: K client threads, each running whole participants one after another (enter,
   consent, practice, then for each trial: GET the next trial, GET its image, POST the answer;
   then complete) with no think time, for ``--seconds``. One judgment = one trial fetched and
   answered. Prints judgments/s and p50/p95/p99 latency (ms) per endpoint.

The client runs on the same 2 cores as gunicorn and PostgreSQL, so the figures are a floor for
what a separate load generator would see. Closed loop with no think time: by Little's law the
mean latency is about K / request rate, so latency grows with K once the server saturates.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _prepare_database(database_url: str, media: Path) -> str:
    """Recreate the bench database, migrate, build the study; return its slug."""
    import dj_database_url
    import psycopg2

    parsed = dj_database_url.parse(database_url)
    admin = psycopg2.connect(host=parsed["HOST"] or "127.0.0.1", port=parsed["PORT"] or 5432,
                             user=parsed["USER"] or "postgres", dbname="postgres")  # fmt: skip
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{parsed["NAME"]}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{parsed["NAME"]}"')
    admin.close()
    os.environ.update({"DATABASE_URL": database_url, "DJANGO_MEDIA_ROOT": str(media),
                       "DJANGO_SETTINGS_MODULE": "bench.load_settings"})  # fmt: skip
    import django

    django.setup()
    from django.core.management import call_command

    from studies.fixtures.simulation.toy import toy_study_create

    call_command("migrate", interactive=False, verbosity=0)
    study = toy_study_create(name="load", n_images=40, size=128, judgments_per_item=10**6, trials_per_participant=20)
    return study.slug


def _start_gunicorn(port: int, database_url: str, media: Path, workers: int, threads: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": database_url, "DJANGO_MEDIA_ROOT": str(media),
           "DJANGO_SETTINGS_MODULE": "bench.load_settings", "PYTHONPATH": str(ROOT)}  # fmt: skip
    command = [sys.executable, "-m", "gunicorn", "xaistudy.wsgi:application", "-b", f"127.0.0.1:{port}",
               "-w", str(workers), "--backlog", "4096", "--timeout", "60", "--log-level", "warning"]  # fmt: skip
    if threads > 1:
        command += ["-k", "gthread", "--threads", str(threads)]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                               start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"gunicorn did not answer /healthz; see {log}")


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_sample(server_pgid: int) -> dict[str, float]:
    """CPU seconds (user + system) so far: per gunicorn process (``g<pid>``) and PostgreSQL
    backend (``p<pid>``), this process (``client``, the load generator), and the whole machine
    (``machine``: busy time from ``/proc/stat``)."""
    sample: dict[str, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        used = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
        if int(fields[2]) == server_pgid:
            sample[f"g{entry}"] = used
        elif comm.startswith("postgres"):
            sample[f"p{entry}"] = used
    times = os.times()
    sample["client"] = times.user + times.system
    cpu = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    sample["machine"] = (sum(cpu) - cpu[3] - cpu[4]) / _CLOCK_TICKS  # all but idle and iowait
    return sample


def _cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds spent between two samples, by group (processes that exited in between are lost)."""
    used = {"gunicorn": 0.0, "postgres": 0.0, "client": 0.0, "machine": 0.0}
    for name, value in after.items():
        group = {"g": "gunicorn", "p": "postgres"}.get(name[0], name)
        used[group] += value - before.get(name, 0.0)
    return used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="50,200,500", help="concurrent simulated workers, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="run time per K (default 20)")
    parser.add_argument("--gunicorn-workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="gthread threads per gunicorn worker (1 = sync)")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/xaistudy_load")
    args = parser.parse_args()
    ks = [int(k) for k in args.ks.split(",") if k.strip()]

    work = Path(tempfile.mkdtemp(prefix="xaistudy-load-"))
    media = work / "media"
    slug = _prepare_database(args.database_url, media)
    port = _free_port()
    server = _start_gunicorn(port, args.database_url, media, args.gunicorn_workers, args.threads, work / "gunicorn.log")
    from studies.fixtures.simulation.crowd import CrowdConfig, crowd_run

    print(f"gunicorn: {args.gunicorn_workers} {'sync' if args.threads <= 1 else f'gthread x{args.threads}'} "
          f"workers, CONN_MAX_AGE=60, PostgreSQL; client threads on the same {os.cpu_count()} CPUs; "
          f"{args.seconds:.0f} s per K")  # fmt: skip
    header = f"{'K':>4} {'judg/s':>7} {'req/s':>7} {'5xx':>4} {'429':>4} | endpoint p50/p95/p99 ms"
    print(header)
    cpu_lines: list[str] = []
    try:
        for k in ks:
            config = CrowdConfig(base_url=f"http://127.0.0.1:{port}/", study_slug=slug, observer="random",
                                 workers=10**7, concurrency=k, time_limit_s=args.seconds, run_id=f"K{k}",
                                 flag_simulated=False, seed=k)  # fmt: skip
            before = _cpu_sample(server.pid)
            report = crowd_run(config)
            spent = _cpu_used(before, _cpu_sample(server.pid))
            stats = report.stats
            rejected = sum(n for (_, status), n in stats.statuses.items() if status == 429)
            cells = []
            for endpoint in ("trial_get", "image", "trial_post", "enter"):
                p50, p95, p99 = stats.percentiles(endpoint)
                cells.append(f"{endpoint} {p50:.0f}/{p95:.0f}/{p99:.0f}")
            print(f"{k:>4} {report.judgments_per_s:>7.1f} {stats.requests / report.elapsed_s:>7.1f} "
                  f"{stats.server_errors:>4} {rejected:>4} | " + "  ".join(cells), flush=True)  # fmt: skip
            used = {name: value / report.elapsed_s for name, value in spent.items()}
            judgments = max(1, stats.judgments)
            per_judgment = 1000 * (spent["gunicorn"] + spent["postgres"]) / judgments
            per_request = 1000 * (spent["gunicorn"] + spent["postgres"]) / max(1, stats.requests)
            other = used["machine"] - used["gunicorn"] - used["postgres"] - used["client"]
            cpu_lines.append(f"{k:>4} cores busy: gunicorn {used['gunicorn']:.2f}  postgres {used['postgres']:.2f}  "
                             f"load generator {used['client']:.2f}  other processes {max(other, 0):.2f}  "
                             f"(machine {used['machine']:.2f} of {os.cpu_count()}); server CPU per judgment "
                             f"{per_judgment:.1f} ms, per request {per_request:.1f} ms")  # fmt: skip
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    print("CPU per second of run (cores busy; PostgreSQL counts every backend on the cluster); server CPU")
    print("= gunicorn + PostgreSQL, all endpoints (entry, consent, ... included) over judgments / requests:")
    print("\n".join(cpu_lines))
    print(f"(gunicorn log: {work / 'gunicorn.log'})")


if __name__ == "__main__":
    main()
