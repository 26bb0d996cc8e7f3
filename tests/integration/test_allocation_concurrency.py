"""Allocation under real concurrency on PostgreSQL (many threads, each with its own connection).

Scenario (research note ``django_quality.md`` §2.4): 50 items x 3 judgments = 150 slots,
120 participants wanting 5 trials each (demand 600), 48 threads. The invariants: no item over
its quota, no worker with the same item twice, every slot filled; the same after abandoned
leases expire and are swept while late answers race the sweeper.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import Count
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from studies.fixtures.builders import make_worker_study
from studies.models import Assignment, Item, Participant, Response, Study
from studies.services.allocation import assignments_lease, leases_sweep, trial_lease
from studies.services.responses import response_record

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("postgres_race")]

N_ITEMS, QUOTA, PER_WORKER, THREADS = 50, 3, 5, 48


def _study() -> Study:
    return make_worker_study(
        n_main=N_ITEMS, n_practice=0, judgments_per_item=QUOTA, trials_per_participant=PER_WORKER, with_files=False
    )


def _participants(study: Study, n: int, prefix: str) -> list[Participant]:
    return Participant.objects.bulk_create(
        Participant(study=study, platform="link", platform_worker_id=f"{prefix}{i}", worker_hash=f"{prefix}{i}",
                    status=Participant.Status.IN_PROGRESS, practice_passed=True)
        for i in range(n)
    )  # fmt: skip


def _work(participant: Participant, barrier: threading.Barrier | None = None) -> int:
    """One worker: take trials and answer them until none is left. Returns how many were answered."""
    answered = 0
    try:
        if barrier is not None:
            barrier.wait(timeout=30)
        while True:
            leases = trial_lease(participant=participant, mark_shown=True).leases  # shown, as the trial views do
            if not leases:
                return answered
            outcome = response_record(participant=participant, assignment_token=leases[0].token, choice=0)
            answered += outcome.status == "recorded"
    finally:
        connection.close()


def _late_answer(participant: Participant) -> str:
    try:
        lease = Assignment.objects.filter(participant=participant).order_by("position").first()
        return response_record(participant=participant, assignment_token=lease.token, choice=1).status
    finally:
        connection.close()


def _assert_invariants(study: Study, expect_filled: bool) -> None:
    items = list(Item.objects.filter(study=study, role=Item.Role.MAIN))
    answered = dict(
        Assignment.objects.filter(item__study=study, status=Assignment.Status.ANSWERED)
        .values_list("item_id").annotate(n=Count("id"))
    )  # fmt: skip
    leased = dict(
        Assignment.objects.filter(item__study=study, status=Assignment.Status.LEASED)
        .values_list("item_id").annotate(n=Count("id"))
    )  # fmt: skip
    for item in items:
        assert answered.get(item.pk, 0) + leased.get(item.pk, 0) <= QUOTA, f"item {item.pk} over quota"
        assert item.n_answered == answered.get(item.pk, 0), f"item {item.pk} answer counter drifted"
        assert item.n_leased == leased.get(item.pk, 0), f"item {item.pk} lease counter drifted"
    pairs = Assignment.objects.filter(item__study=study).values("participant_id", "item_id")
    assert pairs.count() == pairs.distinct().count(), "a worker got the same item twice"
    assert Response.objects.filter(assignment__item__study=study).count() == sum(answered.values())
    per_worker = Assignment.objects.filter(item__study=study, status=Assignment.Status.ANSWERED).values(
        "participant_id").annotate(n=Count("id"))  # fmt: skip
    assert max(row["n"] for row in per_worker) <= PER_WORKER
    if expect_filled:
        assert sum(answered.values()) == N_ITEMS * QUOTA, "capacity left unfilled"
        assert all(answered.get(item.pk, 0) == QUOTA for item in items)


def test_candidate_query_skips_locked_rows():
    study = _study()
    (participant,) = _participants(study, 1, "sql")
    with CaptureQueriesContext(connection) as queries:
        assignments_lease(participant=participant)
    assert any("FOR UPDATE" in q["sql"] and "SKIP LOCKED" in q["sql"] for q in queries.captured_queries)


def test_many_threads_fill_every_slot_and_never_exceed_quota():
    study = _study()
    workers = _participants(study, 120, "w")
    barrier = threading.Barrier(THREADS)
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        counts = list(pool.map(lambda p: _work(p, barrier if workers.index(p) < THREADS else None), workers))
    assert sum(counts) == N_ITEMS * QUOTA
    _assert_invariants(study, expect_filled=True)
    assert not Assignment.objects.filter(status=Assignment.Status.LEASED).exists()


def test_expired_leases_are_recovered_under_concurrency():
    study = _study()
    abandoning = _participants(study, 60, "gone")
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        list(pool.map(lambda p: (trial_lease(participant=p, mark_shown=True), connection.close()), abandoning))
    held = Assignment.objects.filter(status=Assignment.Status.LEASED).count()
    assert held == 60  # one lease each: no look-ahead before a participant's first answer
    Assignment.objects.update(expires_at=timezone.now() - timedelta(seconds=1))

    newcomers = _participants(study, 120, "new")
    stop = threading.Event()

    def sweeper() -> int:
        swept = 0
        try:
            while not stop.is_set():
                swept += leases_sweep()
        finally:
            connection.close()
        return swept

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        sweep = pool.submit(sweeper)
        late = [pool.submit(_late_answer, p) for p in abandoning]
        work = [pool.submit(_work, p) for p in newcomers]
        outcomes = [f.result() for f in late]
        [f.result() for f in work]
        stop.set()
        swept = sweep.result()
    assert set(outcomes) <= {"recorded", "expired"}
    _assert_invariants(study, expect_filled=False)
    # Newcomers who arrived before the sweep freed anything may have stopped early: a last
    # concurrent wave takes whatever is left, and every slot ends up answered exactly once.
    swept += leases_sweep()
    # Every abandoned lease was swept (by the sweeper, or by allocation finding nothing free) or answered late.
    assert not Assignment.objects.filter(participant__in=abandoning, status=Assignment.Status.LEASED).exists()
    assert swept + outcomes.count("recorded") > 0
    wave = _participants(study, 60, "mop")
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        list(pool.map(_work, wave))
    _assert_invariants(study, expect_filled=True)
    assert not Assignment.objects.filter(status=Assignment.Status.LEASED).exists()
