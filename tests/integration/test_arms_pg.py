"""Between-subject arms under real concurrency on PostgreSQL (issue 16, item 1), for every design
that runs arms.

48 threads, each with its own connection, enter the same study with three arms at once; the
arms' counts must differ by at most one and every participant hold exactly one of the arms. Then
those participants lease and answer items concurrently: nobody gets a main item outside its arm's
methods, no item goes over its quota, nobody sees an item twice, and the audit is clean.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from django.db.models import Count
from django.test.utils import CaptureQueriesContext

from studies.fixtures.builders import make_worker_study
from studies.models import Assignment, Item, Participant, Study
from studies.selectors.allocation import arm_counts
from studies.services.allocation import trial_lease
from studies.services.audit import study_audit
from studies.services.participation import PlatformIdentity, participant_enter
from studies.services.responses import response_record

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("postgres_race")]

METHODS = ["gradcam", "rise", "lime"]
ARMS = [{"name": f"arm_{m}", "methods": [m]} for m in METHODS]
N_ITEMS, QUOTA, PER_WORKER, THREADS = 60, 3, 5, 48  # per arm: 20 items x 3 = 60 slots, 16 workers x 5 = 80 wanted


#: the designs whose studies run between-subject arms (issue 16): each one's arm and item allocation
DESIGNS = ["class_discrimination", "agreement", "distinction", "forward_simulation", "ai_assisted_decision"]


def _study(kind: str = "class_discrimination") -> Study:
    study = make_worker_study(kind=kind, n_main=N_ITEMS, n_practice=0, judgments_per_item=QUOTA,
                              trials_per_participant=PER_WORKER, with_files=False)  # fmt: skip
    for k, pk in enumerate(Item.objects.filter(study=study, role=Item.Role.MAIN).order_by("id").values_list("pk", flat=True)):
        Item.objects.filter(pk=pk).update(method=METHODS[k % len(METHODS)])
    Study.objects.filter(pk=study.pk).update(methods=METHODS, arms=ARMS)
    study.refresh_from_db()
    return study


def _enter(study: Study, k: int, barrier: threading.Barrier) -> int:
    try:
        barrier.wait(timeout=30)
        identity = PlatformIdentity(platform="prolific", worker_id=f"{k:024x}", prolific_study_id="s" * 24,
                                    prolific_session_id=f"{k:024d}")  # fmt: skip
        return participant_enter(study=Study.objects.get(pk=study.pk), identity=identity).participant.pk
    finally:
        connection.close()


def _work(participant: Participant, barrier: threading.Barrier) -> int:
    answered = 0
    try:
        barrier.wait(timeout=30)
        while True:
            leases = trial_lease(participant=participant, mark_shown=True).leases
            if not leases:
                return answered
            outcome = response_record(participant=participant, assignment_token=leases[0].token, choice=0)
            answered += outcome.status == "recorded"
    finally:
        connection.close()


def test_entry_locks_the_study_row():
    study = _study()
    with CaptureQueriesContext(connection) as queries:
        participant_enter(study=study, identity=PlatformIdentity(platform="link"))
    assert any("FOR NO KEY UPDATE" in q["sql"] for q in queries.captured_queries)


@pytest.mark.parametrize("kind", DESIGNS)
def test_many_threads_enter_balanced_then_lease_only_their_arm(kind: str):
    study = _study(kind)
    barrier = threading.Barrier(THREADS)
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        ids = list(pool.map(lambda k: _enter(study, k, barrier), range(THREADS)))
    assert len(set(ids)) == THREADS
    counts = arm_counts(study=study)
    print(f"{kind}: arm counts after {THREADS} concurrent entries: {counts}")
    assert set(counts) == {a["name"] for a in ARMS}
    assert sum(counts.values()) == THREADS
    assert max(counts.values()) - min(counts.values()) <= 1, counts
    people = list(Participant.objects.filter(study=study))
    assert len(people) == THREADS
    assert all(p.arm in counts for p in people), "each participant holds one known arm"

    Participant.objects.filter(study=study).update(status=Participant.Status.IN_PROGRESS, practice_passed=True)
    people = list(Participant.objects.select_related("study").filter(study=study))
    barrier = threading.Barrier(THREADS)
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        answered = list(pool.map(lambda p: _work(p, barrier), people))
    print(f"{kind}: answered {sum(answered)} (slots {N_ITEMS * QUOTA})")

    arm_method = {a["name"]: a["methods"][0] for a in ARMS}
    held = Assignment.objects.filter(participant__study=study).values_list("participant__arm", "item__method")
    outside = [(arm, method) for arm, method in held if method != arm_method[arm]]
    assert not outside, f"main items outside the participant's arm: {outside[:5]}"
    for item in Item.objects.filter(study=study, role=Item.Role.MAIN):
        assert item.n_answered + item.n_leased <= QUOTA, f"item {item.pk} over quota"
        assert item.n_answered == QUOTA, "every slot filled (each arm wants more than it has)"
    pairs = Assignment.objects.filter(participant__study=study).values("participant_id", "item_id")
    assert pairs.count() == pairs.distinct().count(), "a worker got the same item twice"
    per_worker = Assignment.objects.filter(participant__study=study).values("participant_id").annotate(n=Count("id"))
    assert max(row["n"] for row in per_worker) <= PER_WORKER
    assert sum(answered) == N_ITEMS * QUOTA
    report = study_audit(study_id=study.pk, check_files=False)
    assert report.ok, report.problems
