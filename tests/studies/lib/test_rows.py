"""The hot-path SQL (studies/lib/rows.py) builds the same instances the ORM would.

Runs on SQLite in the unit suite and on PostgreSQL under ``DATABASE_URL``: the converters
differ per backend (JSON text, booleans, datetimes), which is what these tests compare.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.forms.models import model_to_dict
from django.urls import NoReverseMatch, reverse, set_script_prefix
from django.utils import timezone

from studies.fixtures.builders import make_worker_study
from studies.lib import rows
from studies.models import Assignment, Item, Participant, Response
from studies.selectors.allocation import slot_counts
from studies.selectors.participation import assignment_for_image, participant_by_token, stimulus_path
from studies.services.allocation import participant_lock, trial_lease
from studies.services.participation import PlatformIdentity, participant_consent, participant_enter
from studies.services.responses import response_record

pytestmark = pytest.mark.django_db


def _values(obj) -> dict:  # type: ignore[no-untyped-def]
    return {f.attname: getattr(obj, f.attname) for f in type(obj)._meta.concrete_fields}


def _participant_in_trials() -> Participant:
    study = make_worker_study(n_main=6, n_catch=1, trials_per_participant=3, with_files=False)
    study.wording = {"robot_a": "Left one"}
    study.save(update_fields=["wording"])
    participant = participant_enter(study=study, identity=PlatformIdentity(platform="link")).participant
    participant_consent(participant=participant, agree=True, version=study.consent_version)
    Participant.objects.filter(pk=participant.pk).update(status=Participant.Status.IN_PROGRESS, practice_passed=True)
    return participant_by_token(participant.token)  # type: ignore[return-value]


def test_participant_by_token_equals_the_orm_lookup():
    participant = _participant_in_trials()
    orm = Participant.objects.select_related("study").get(token=participant.token)
    assert _values(participant) == _values(orm)
    assert _values(participant.study) == _values(orm.study)
    assert participant.study.wording == {"robot_a": "Left one"}
    assert participant.practice_passed is True
    assert participant_by_token("nope") is None
    assert participant_by_token("") is None


def test_leases_counts_and_lock_equal_the_orm():
    participant = _participant_in_trials()
    first = trial_lease(participant=participant, mark_shown=True).leases[0]  # one lease until an answer
    response_record(participant=participant, assignment_token=first.token, choice=0)
    trial_lease(participant=participant)  # allocates the next and one ahead; the second call reads them back
    lease = trial_lease(participant=participant, mark_shown=True)
    assert len(lease.leases) == 2
    for held in lease.leases:
        orm = Assignment.objects.select_related("item").get(pk=held.pk)
        assert _values(held) == _values(orm)
        assert _values(held.item) == _values(orm.item)
    assert lease.leases[0].shown_at is not None
    assert participant_lock(participant.pk) == (Participant.Status.IN_PROGRESS, True)
    with pytest.raises(Participant.DoesNotExist):
        participant_lock(-1)
    counts = slot_counts(participant=participant)
    assert (counts.answered, counts.open, counts.expired) == (1, 2, 0)


def test_submit_stores_what_the_orm_would_read_back():
    participant = _participant_in_trials()
    first = trial_lease(participant=participant, mark_shown=True).leases[0]
    outcome = response_record(
        participant=participant, assignment_token=first.token, choice=1, client_response_ms=1234,
        focus_events=[{"type": "blur", "t": 5}], comment=" why ",
    )  # fmt: skip
    assert outcome.status == "recorded"
    stored = Response.objects.get(assignment=first)
    assert (stored.client_response_ms, stored.focus_events, stored.comment) == (1234, [{"type": "blur", "t": 5}], "why")
    assert stored.created_at is not None
    assert stored.chosen_option == first.option_order[1]
    first.refresh_from_db()
    assert first.status == Assignment.Status.ANSWERED
    item = Item.objects.get(pk=first.item_id)
    assert item.n_answered == 1
    assert item.n_leased == 0
    again = response_record(participant=participant, assignment_token=first.token, choice=0)
    assert again.status == "duplicate"
    assert Response.objects.filter(assignment=first).count() == 1


def test_insert_equals_save():
    participant = _participant_in_trials()
    item = Item.objects.filter(study=participant.study, role=Item.Role.MAIN).first()
    expires = timezone.now() + timedelta(minutes=5)
    made = rows.insert(Assignment(participant=participant, item=item, position=7, option_order=[1, 0], expires_at=expires))
    assert made.pk is not None
    assert not made._state.adding
    orm = Assignment.objects.get(pk=made.pk)
    assert model_to_dict(orm) == model_to_dict(made)
    assert orm.leased_at is not None
    assert orm.token == made.token


def test_image_lookup_loads_the_stimuli_of_the_participants_own_trial():
    participant = _participant_in_trials()
    lease = trial_lease(participant=participant).leases[0]
    found = assignment_for_image(participant_token=participant.token, assignment_token=lease.token)
    assert found is not None
    orm = Assignment.objects.select_related("item__stimulus_a", "item__stimulus_b").get(pk=lease.pk)
    assert found.model_a_shown_left == orm.model_a_shown_left
    for side in ("stimulus_a", "stimulus_b"):
        mine, theirs = getattr(found.item, side), getattr(orm.item, side)
        assert (mine and (mine.pk, mine.file.name, mine.sha256)) == (theirs and (theirs.pk, theirs.file.name, theirs.sha256))
    assert assignment_for_image(participant_token="someone-else", assignment_token=lease.token) is None
    assert assignment_for_image(participant_token=participant.token, assignment_token="unknown") is None


@pytest.mark.parametrize(
    "args",
    [
        ("tok_en-1", "Assign-ment_2", "main"),
        ("a b", "ü%20x", "left"),
        ("x;y=z", "~:@!$&'()*+,", "right"),
    ],
)
def test_stimulus_path_equals_reverse(args):
    assert stimulus_path(*args) == reverse("studies:worker-stimulus", args=list(args))


@pytest.mark.parametrize("args", [("", "a", "main"), ("p/q", "a", "main")])
def test_stimulus_path_refuses_what_reverse_refuses(args):
    with pytest.raises(NoReverseMatch):
        stimulus_path(*args)


def test_stimulus_path_follows_the_script_prefix():
    set_script_prefix("/study-site/")
    try:
        assert stimulus_path("t", "a", "main") == reverse("studies:worker-stimulus", args=["t", "a", "main"])
        assert stimulus_path("t", "a", "main").startswith("/study-site/")
    finally:
        set_script_prefix("/")
