"""Allocation rules that hold on any database (the race itself is tested on PostgreSQL in tests/integration)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from studies.fixtures.builders import make_worker_study
from studies.lib.choices import assignment_choices
from studies.lib.slots import catch_slots
from studies.models import Assignment, Item, Participant, Study
from studies.services.allocation import (
    assignments_lease,
    leases_sweep,
    trial_lease,
)
from studies.services.responses import response_record
from studies.tasks import sweep_leases

pytestmark = pytest.mark.django_db


def _participants(study: Study, n: int) -> list[Participant]:
    return [
        Participant.objects.create(study=study, platform="link", platform_worker_id=f"p{i}", worker_hash=f"h{i}",
                                   status=Participant.Status.IN_PROGRESS, practice_passed=True)
        for i in range(n)
    ]  # fmt: skip


def _finish(participant: Participant) -> int:
    done = 0
    while leases := trial_lease(participant=participant, mark_shown=True).leases:  # shown, as the trial views do
        assert response_record(participant=participant, assignment_token=leases[0].token, choice=0).status == "recorded"
        done += 1
    return done


def test_fewest_judgments_first_then_seeded_tie_rank():
    study = make_worker_study(n_main=4, judgments_per_item=2, trials_per_participant=1, with_files=False)
    by_rank = list(Item.objects.filter(study=study, role=Item.Role.MAIN).order_by("tie_rank", "id"))
    first, second = _participants(study, 2)
    assert assignments_lease(participant=first, lookahead=0)[0].item_id == by_rank[0].pk
    # by_rank[0] now has one slot in use, so the next worker gets the next-ranked empty item.
    assert assignments_lease(participant=second, lookahead=0)[0].item_id == by_rank[1].pk


def test_quota_is_exact_and_items_never_repeat():
    study = make_worker_study(n_main=5, judgments_per_item=2, trials_per_participant=4, with_files=False)
    workers = _participants(study, 6)
    answered = [_finish(w) for w in workers]
    assert sum(answered) == 10  # 5 items x 2
    for item in Item.objects.filter(study=study, role=Item.Role.MAIN):
        assert item.n_answered == 2
        assert item.n_leased == 0
    for worker in workers:
        items = list(Assignment.objects.filter(participant=worker).values_list("item_id", flat=True))
        assert len(items) == len(set(items))


def test_catch_trials_are_interleaved_at_seeded_slots():
    study = make_worker_study(n_main=10, n_catch=3, judgments_per_item=3, trials_per_participant=5, with_files=False)
    (worker,) = _participants(study, 1)
    assert _finish(worker) == 8  # five main trials and three catch trials
    roles = list(Assignment.objects.filter(participant=worker).order_by("position").values_list("item__role", flat=True))
    expected = catch_slots(study=study, participant_token=worker.token, planned=8, n_catch=3)
    assert {i for i, role in enumerate(roles) if role == Item.Role.CATCH} == expected
    assert 0 not in expected


def test_random_choices_are_stored_and_rederivable():
    study = make_worker_study(kind=Study.Kind.TRUST, n_main=6, trials_per_participant=4, with_files=False)
    (worker,) = _participants(study, 1)
    _finish(worker)
    for slot, assignment in enumerate(Assignment.objects.filter(participant=worker).order_by("position").select_related("item")):
        again = assignment_choices(study=study, participant_token=worker.token, slot=slot, item=assignment.item)
        assert assignment.model_a_shown_left == again.model_a_shown_left
        assert assignment.option_order == again.option_order


def test_robot_a_side_is_a_fair_coin_across_participants():
    study = make_worker_study(kind=Study.Kind.TRUST, n_main=1, with_files=False)
    item = Item.objects.filter(study=study).first()
    left = sum(assignment_choices(study=study, participant_token=f"t{i}", slot=0, item=item).model_a_shown_left for i in range(2000))
    assert 900 < left < 1100  # 2000 fair flips: 5 standard deviations either side of 1000


def test_option_order_is_a_permutation_and_both_orders_occur():
    study = make_worker_study(n_main=1, with_files=False)
    item = Item.objects.filter(study=study, role=Item.Role.MAIN).first()
    orders = {tuple(assignment_choices(study=study, participant_token=f"t{i}", slot=0, item=item).option_order) for i in range(50)}
    assert orders == {(0, 1), (1, 0)}


def test_sweep_returns_expired_slots_and_keeps_answers():
    study = make_worker_study(n_main=2, judgments_per_item=1, trials_per_participant=2, lease_seconds=60, with_files=False)
    first, second = _participants(study, 2)
    opening = trial_lease(participant=first, mark_shown=True).leases
    assert len(opening) == 1  # no look-ahead before the first answer
    response_record(participant=first, assignment_token=opening[0].token, choice=0)
    leases = opening + trial_lease(participant=first, mark_shown=True).leases
    assert len(leases) == 2
    assert assignments_lease(participant=second) == []  # both slots in use (and nothing overdue to sweep)
    later = timezone.now() + timedelta(seconds=61)
    assert leases_sweep(now=later) == 1
    assert Assignment.objects.get(pk=leases[0].pk).status == Assignment.Status.ANSWERED
    assert Assignment.objects.get(pk=leases[1].pk).status == Assignment.Status.EXPIRED
    assert leases_sweep(now=later) == 0
    taken = assignments_lease(participant=second)
    assert [a.item_id for a in taken] == [leases[1].item_id]
    # The first worker's late answer finds the slot taken: nothing is stored.
    assert response_record(participant=first, assignment_token=leases[1].token, choice=0).status == "expired"
    item = Item.objects.get(pk=leases[1].item_id)
    assert (item.n_leased, item.n_answered) == (1, 0)


def test_late_answer_is_kept_while_the_slot_is_free():
    study = make_worker_study(n_main=1, judgments_per_item=1, trials_per_participant=1, lease_seconds=1, with_files=False)
    (worker,) = _participants(study, 1)
    lease = trial_lease(participant=worker, mark_shown=True).leases[0]
    Assignment.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - timedelta(seconds=5))
    call_command("sweep_leases")
    assert sweep_leases() == 0  # the Celery task wraps the same service
    assert response_record(participant=worker, assignment_token=lease.token, choice=0).status == "recorded"
    item = Item.objects.get(pk=lease.item_id)
    assert (item.n_leased, item.n_answered) == (0, 1)


def test_admin_shows_what_to_paste_into_each_platform(staff_client, settings):
    settings.XAISTUDY_PUBLIC_URL = "https://study.example.org"
    study = make_worker_study(platform=Study.Platform.PROLIFIC, with_files=False)
    page = staff_client.get(f"/admin/studies/study/{study.pk}/change/").content.decode()
    assert "ExternalURL" not in page  # only the study's own platform (issue #13; tests/studies/test_lifecycle.py)
    assert f"https://study.example.org/s/{study.slug}/?PROLIFIC_PID={{{{%PROLIFIC_PID%}}}}&amp;STUDY_ID={{{{%STUDY_ID%}}}}" in page
    assert f"complete?cc={study.completion_code}" in page
