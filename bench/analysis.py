"""Benchmark: a study's full results from 1,000,000 judgments in PostgreSQL.

Usage::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/xaistudy_bench python bench/analysis.py \
        [--judgments 1000000] [--methods 10] [--workers 5000] [--n-boot 1000] [--rebuild] [--fetch]

``DATABASE_URL`` must point at PostgreSQL (default above) and name a database containing
``bench`` (the benchmark may drop and recreate it); it is created and migrated if missing. The first run writes a class-discrimination study with the requested
judgments (each worker answers ``judgments / workers`` trials, 5% of them catch trials, two
exclusion rules) entirely in SQL (``INSERT ... SELECT generate_series``, about a minute);
later runs reuse it (``--rebuild``, or an incomplete earlier build, drops and recreates the
whole database). Then it times, in seconds:

1. loading the judgments into numpy (``study_judgments_load``: binary COPY; ``--fetch``
   also times the ``fetchall`` path),
2. computing the results (``study_results_compute``: both tables, with and without the
   exclusions, cluster bootstrap with ``--n-boot`` replicates, Krippendorff alpha, Holm),
3. rendering the three plots (PNG),
4. streaming the summary CSV (reuses the results),

and prints the total (the page's work: 1 + 2). Goal: under 10 s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/xaistudy_bench")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "xaistudy.settings")

BENCH_NAME = "bench-analysis-{n}-{m}-{w}"
CATCH_SHARE = 0.05
N_CATCH_ITEMS = 50


def _admin_connection(url: str):  # type: ignore[no-untyped-def]
    import dj_database_url
    import psycopg2

    cfg = dj_database_url.parse(url)
    if "postgresql" not in cfg["ENGINE"]:
        raise SystemExit(f"DATABASE_URL must point at PostgreSQL, got {url!r}")
    conn = psycopg2.connect(dbname="postgres", user=cfg["USER"] or "postgres", password=cfg["PASSWORD"] or None,
                            host=cfg["HOST"] or "127.0.0.1", port=cfg["PORT"] or 5432)  # fmt: skip
    conn.autocommit = True
    if "bench" not in cfg["NAME"]:
        conn.close()
        raise SystemExit(f"refusing to write into database {cfg['NAME']!r}: the benchmark drops and fills its "
                         "database, so its name must contain 'bench' (e.g. xaistudy_bench)")  # fmt: skip
    return conn, cfg["NAME"]


def _ensure_database(url: str, *, fresh: bool) -> None:
    """Create the database if missing; with ``fresh``, drop it first (fast way to rebuild)."""
    conn, name = _admin_connection(url)
    with conn.cursor() as cur:
        if fresh:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if cur.fetchone() is None:
            cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()


def _build(n_judgments: int, n_methods: int, n_workers: int, name: str):  # type: ignore[no-untyped-def]
    """Write the study with SQL only; return it."""
    from django.db import connection, transaction

    from studies.models import ClassifierModel, ImageSet, Study

    trials = n_judgments // n_workers
    n_catch = max(1, round(trials * CATCH_SHARE))
    n_main = trials - n_catch
    n_images = max(200, n_main * n_workers // (n_methods * 50))  # about 50 ratings per item
    n_items = n_images * n_methods
    if n_main > n_items:
        raise SystemExit("too few items for the trials per worker")
    methods = [f"method_{k}" for k in range(n_methods)]
    with transaction.atomic():
        image_set = ImageSet.objects.create(name=name, categories=["a", "b"])
        model, _ = ClassifierModel.objects.get_or_create(name="bench-model", defaults={"arch": "synthetic_cnn"})
        study = Study.objects.create(
            name=name, kind=Study.Kind.CLASS_DISCRIMINATION, methods=methods, model=model, image_set=image_set,
            seed=7, exclusion_rules=[{"rule": "catch_accuracy_below", "threshold": 0.75},
                                     {"rule": "median_trial_time_below", "seconds": 1.0}],
        )  # fmt: skip
    sid, iset = study.pk, image_set.pk
    steps = [
        ("SELECT setseed(0.42)", []),
        ("""INSERT INTO studies_image (image_set_id, file, original_name, sha256, width, height, categories, boxes, mask)
            SELECT %s, 'images/b' || g || '.png', 'b' || g || '.png', md5(g::text) || md5(g::text), 224, 112,
                   '["a", "b"]'::jsonb, '[]'::jsonb, ''
            FROM generate_series(0, %s) g""", [iset, n_images - 1]),
        # main items: (method m, image k) -> item index m * n_images + k, ordered by id
        ("""INSERT INTO studies_item (study_id, public_id, role, method, image_id, target_class, target_label, options,
                                     correct_option, tie_rank, n_leased, n_answered)
            SELECT %s, md5(%s || '-' || m || '-' || im.id), 'main', 'method_' || m, im.id, 0, 'a',
                   '["a", "b"]'::jsonb, 0, m * 100000 + im.id, 0, 0
            FROM generate_series(0, %s) m
            CROSS JOIN (SELECT id FROM studies_image WHERE image_set_id = %s) im
            ORDER BY m, im.id""", [sid, sid, n_methods - 1, iset]),
        ("""INSERT INTO studies_item (study_id, public_id, role, method, image_id, target_class, target_label, options,
                                     correct_option, tie_rank, n_leased, n_answered)
            SELECT %s, md5(%s || '-catch-' || im.id), 'catch', 'method_0', im.id, -1, 'check',
                   '["yes", "no"]'::jsonb, 0, 0, 0, 0
            FROM (SELECT id FROM studies_image WHERE image_set_id = %s ORDER BY id LIMIT %s) im""",
         [sid, sid, iset, N_CATCH_ITEMS]),
        # workers: 2% careless (random answers, fail catch trials), 1% fast
        ("""INSERT INTO studies_participant (study_id, token, platform, platform_worker_id, worker_hash,
                mturk_assignment_id, mturk_hit_id, mturk_submit_to, prolific_study_id, prolific_session_id, status,
                consent_version, practice_passed, questionnaire, is_simulated, started_at, completed_at,
                session_key, completion_code, invitation, entry_client)
            SELECT %s, md5(%s || '-p-' || w), 'mturk', 'W' || w, md5('w' || w), 'A' || w, 'HIT', '', '', '',
                   'completed', '1', true, '{}'::jsonb, false, now() - interval '1 day', now(),
                   'A' || w, '', '', ''
            FROM generate_series(0, %s) w""", [sid, sid, n_workers - 1]),
        ("CREATE TEMP TABLE bench_items AS SELECT row_number() OVER (ORDER BY id) - 1 AS k, id, role, method "
         "FROM studies_item WHERE study_id = %s", [sid]),
        ("CREATE UNIQUE INDEX ON bench_items (k)", []),
        ("CREATE TEMP TABLE bench_people AS SELECT row_number() OVER (ORDER BY id) - 1 AS w, id "
         "FROM studies_participant WHERE study_id = %s", [sid]),
        ("CREATE UNIQUE INDEX ON bench_people (id)", []),
        ("ANALYZE bench_items", []),
        ("ANALYZE bench_people", []),
        # each worker: n_main distinct main items (stride 101 over the item ring) + n_catch catch items
        ("""INSERT INTO studies_assignment (participant_id, item_id, token, position, status, option_order,
                model_a_shown_left, leased_at, expires_at, shown_at, answered_at)
            SELECT p.id, it.id, md5(p.id || '-' || t), t, 'answered',
                   CASE WHEN random() < 0.5 THEN '[0, 1]'::jsonb ELSE '[1, 0]'::jsonb END, NULL,
                   now(), now(), ts, ts + interval '2 seconds'
            FROM bench_people p
            CROSS JOIN generate_series(0, %s) t
            JOIN bench_items it ON it.k = CASE WHEN t < %s THEN (p.w * 37 + t * 101) %% %s
                                               ELSE %s + (p.w + t - %s) %% %s END
            CROSS JOIN LATERAL (SELECT now() - interval '1 day' + (p.w * 17 + t) * interval '1 second' AS ts) c""",
         [trials - 1, n_main, n_items, n_items, n_main, N_CATCH_ITEMS]),
        ("ANALYZE studies_assignment", []),
        ("ANALYZE studies_item", []),
        ("""INSERT INTO studies_response (assignment_id, chosen_option, correct, score_model_a, client_response_ms,
                                         focus_events, comment, created_at)
            SELECT a.id, CASE WHEN x.ok THEN 0 ELSE 1 END, x.ok, NULL, x.rt, '[]'::jsonb, '', a.answered_at
            FROM studies_assignment a
            JOIN studies_item it ON it.id = a.item_id
            JOIN bench_people p ON p.id = a.participant_id
            CROSS JOIN LATERAL (SELECT
                random() < CASE WHEN p.w %% 50 = 0 THEN (CASE WHEN it.role = 'catch' THEN 0.0 ELSE 0.5 END)
                                WHEN it.role = 'catch' THEN 0.98
                                ELSE 0.45 + 0.03 * substr(it.method, 8)::int END AS ok,
                CASE WHEN p.w %% 100 = 1 THEN 300 + (random() * 300)::int
                     ELSE 800 + (random() * 4000)::int END AS rt) x""", []),
        ("DROP TABLE bench_items", []),
        ("DROP TABLE bench_people", []),
        ("ANALYZE", []),
    ]
    with connection.cursor() as cur:
        for sql, params in steps:
            start = time.perf_counter()
            cur.execute(sql, params)
            label = " ".join(sql.split())[:60]
            print(f"    build: {label:<60s} {time.perf_counter() - start:6.1f} s", flush=True)
    return study


def _server_cpu(study) -> None:  # type: ignore[no-untyped-def]
    """CPU seconds that PostgreSQL spends on the judgment query (serial plan, same host only).

    With parallel workers the work is spread over processes that exit at once; a serial plan
    keeps it in the backend, whose ``/proc/<pid>/stat`` utime + stime is read before and after.
    """
    from django.db import connection, transaction

    from studies.selectors.judgments import study_judgments_load

    with connection.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    stat = Path(f"/proc/{pid}/stat")
    if not stat.exists():
        print("  (server CPU: PostgreSQL runs on another host; not measured)")
        return

    def ticks() -> float:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        before, start, cpu = ticks(), time.perf_counter(), time.process_time()
        study_judgments_load(study=study)
        wall, client, server = time.perf_counter() - start, time.process_time() - cpu, ticks() - before
    print(f"  {'load judgments, serial plan (diagnostic)':<52s} {wall:7.2f} s wall {client:7.2f} s cpu"
          f" + {server:.2f} s PostgreSQL cpu")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judgments", type=int, default=1_000_000)
    parser.add_argument("--methods", type=int, default=10)
    parser.add_argument("--workers", type=int, default=5_000)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--rebuild", action="store_true", help="write the study again")
    parser.add_argument("--fetch", action="store_true", help="also time the fetchall loader")
    parser.add_argument("--repeat", type=int, default=1, help="run the timed stages N times, report each")
    args = parser.parse_args()

    url = os.environ["DATABASE_URL"]
    _ensure_database(url, fresh=args.rebuild)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from studies.models import Response, Study
    from studies.selectors.judgments import study_judgments_load
    from studies.services.exports import csv_lines, export_rows
    from studies.services.results import study_results_compute
    from studies.web.plots import accuracy_figure, answers_figure, figure_bytes, timeline_figure

    call_command("migrate", interactive=False, verbosity=0)
    name = BENCH_NAME.format(n=args.judgments, m=args.methods, w=args.workers)
    expected = (args.judgments // args.workers) * args.workers
    study = Study.objects.filter(name=name).first()
    complete = study is not None and Response.objects.filter(assignment__item__study=study).count() == expected
    if not complete:
        if Study.objects.exists():  # partial or other data: start from an empty database
            connection.close()
            _ensure_database(url, fresh=True)
            call_command("migrate", interactive=False, verbosity=0)
        print(f"building {name} in {url} ...", flush=True)
        start = time.perf_counter()
        study = _build(args.judgments, args.methods, args.workers, name)
        print(f"  built in {time.perf_counter() - start:.1f} s (not counted)")
    n = Response.objects.filter(assignment__item__study=study).count()
    print(f"study {study.pk}: {n:,} judgments (incl. catch), {args.methods} methods, {args.workers:,} workers; "
          f"n_boot={args.n_boot}; {os.cpu_count()} CPUs")  # fmt: skip

    def timed(label: str, fn):  # type: ignore[no-untyped-def]
        start, cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall = time.perf_counter() - start
        print(f"  {label:<52s} {wall:7.2f} s wall {time.process_time() - cpu:7.2f} s cpu", flush=True)
        return result, wall

    totals = []
    for run in range(args.repeat):
        print(f"run {run + 1}/{args.repeat} (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
        if args.fetch:
            timed("load judgments (fetchall path)", lambda: study_judgments_load(study=study, method="fetch"))
        loaded, t_load = timed("load judgments (binary COPY -> numpy)", lambda: study_judgments_load(study=study))
        results, t_compute = timed(
            "results: both tables (with + without exclusions)",
            lambda loaded=loaded: study_results_compute(study=study, loaded=loaded, n_boot=args.n_boot),
        )
        rows = results.analysis.with_exclusions.rows
        timed("plots (3 PNG)", lambda rows=rows, results=results: [
            figure_bytes(accuracy_figure(rows)), figure_bytes(answers_figure(rows)),
            figure_bytes(timeline_figure(results.timeline_edges_ms, results.timeline_counts))])  # fmt: skip
        timed("summary CSV", lambda results=results: "".join(
            csv_lines(*export_rows(study=study, kind="summary", results=results))))  # fmt: skip
        totals.append(t_load + t_compute)
        print(f"  {'TOTAL load + results (what the page computes)':<52s} {totals[-1]:7.2f} s wall")
    if args.repeat > 1:
        print(f"best TOTAL of {args.repeat}: {min(totals):.2f} s wall")
    _server_cpu(study)
    report = results.analysis.exclusions
    first = results.analysis.with_exclusions.rows[-1]
    print(f"excluded {report.n_workers_excluded} of {report.n_workers_total} workers "
          f"({', '.join(f'{c.rule}: {c.n_workers}' for c in report.per_rule)}); {first.method}: "
          f"acc={first.accuracy:.4f} wilson=[{first.wilson_low:.4f}, {first.wilson_high:.4f}] "
          f"boot=[{first.boot_low:.4f}, {first.boot_high:.4f}] n={first.n_judgments:,}")  # fmt: skip


if __name__ == "__main__":
    main()
