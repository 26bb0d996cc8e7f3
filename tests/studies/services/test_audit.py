"""audit_study: a consistent study is clean; each broken invariant is named."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.db.models import F
from django.utils import timezone

from studies.fixtures.simulation.toy import toy_study_create
from studies.models import Assignment, Item, Participant, Response, Study
from studies.services.audit import study_audit

pytestmark = pytest.mark.django_db


def _participant(study: Study, worker: str) -> Participant:
    return Participant.objects.create(study=study, platform="link", platform_worker_id=worker, worker_hash=worker)


def _lease(participant: Participant, item: Item, position: int) -> Assignment:
    Item.objects.filter(pk=item.pk).update(n_leased=F("n_leased") + 1)
    return Assignment.objects.create(
        participant=participant, item=item, position=position, option_order=[0, 1],
        expires_at=timezone.now() + timedelta(minutes=10),
    )  # fmt: skip


def _answer(assignment: Assignment, chosen: int) -> Response:
    item = assignment.item
    Assignment.objects.filter(pk=assignment.pk).update(status="answered", answered_at=timezone.now())
    Item.objects.filter(pk=item.pk).update(n_leased=F("n_leased") - 1, n_answered=F("n_answered") + 1)
    return Response.objects.create(assignment=assignment, chosen_option=chosen, correct=chosen == item.correct_option)


@pytest.fixture
def answered_study() -> Study:
    """A toy study where two workers answered three items each and one lease is still open."""
    study = toy_study_create(n_images=2, methods=("focused", "diffuse"), judgments_per_item=2)
    items = list(study.items.order_by("pk"))
    for worker in ("w1", "w2"):
        participant = _participant(study, worker)
        for position, item in enumerate(items[:3]):
            _answer(_lease(participant, item, position), chosen=0)
    _lease(_participant(study, "w3"), items[4], 0)
    return study


def _codes(study: Study) -> list[str]:
    return [p.code for p in study_audit(study_id=study.pk).problems]


def test_consistent_study_is_clean(answered_study: Study) -> None:
    report = study_audit(study_id=answered_study.pk)
    assert report.ok, report.problems
    assert (report.assignments, report.responses, report.stimuli) == (7, 6, 8)


def test_answered_assignment_without_response_is_named(answered_study: Study) -> None:
    Response.objects.filter(assignment__item__study=answered_study).first().delete()
    report = study_audit(study_id=answered_study.pk)
    assert [p.code for p in report.problems] == ["responses"]
    assert "is answered but has no response" in report.problems[0].message


def test_response_of_unanswered_assignment_is_named(answered_study: Study) -> None:
    leased = Assignment.objects.get(item__study=answered_study, status="leased")
    Response.objects.create(assignment=leased, chosen_option=0, correct=leased.item.correct_option == 0)
    problems = study_audit(study_id=answered_study.pk).problems
    assert [p.code for p in problems] == ["responses"]
    assert leased.token in problems[0].message
    assert "'leased'" in problems[0].message


def test_wrong_correct_flag_is_named(answered_study: Study) -> None:
    response = Response.objects.filter(assignment__item__study=answered_study).first()
    Response.objects.filter(pk=response.pk).update(correct=not response.correct)
    assert _codes(answered_study) == ["correctness"]


def test_over_quota_item_is_named(answered_study: Study) -> None:
    item = answered_study.items.order_by("pk").first()  # 2 answered of judgments_per_item=2
    _lease(_participant(answered_study, "w9"), item, 0)
    problems = study_audit(study_id=answered_study.pk).problems
    assert [p.code for p in problems] == ["quota"]
    assert item.public_id in problems[0].message
    assert "2 answered + 1 open leases" in problems[0].message


def test_drifted_counters_are_named(answered_study: Study) -> None:
    item = answered_study.items.order_by("pk").last()
    Item.objects.filter(pk=item.pk).update(n_answered=5, n_leased=1)
    problems = study_audit(study_id=answered_study.pk).problems
    assert sorted(p.code for p in problems) == ["counters", "counters"]
    assert any("n_answered=5 but has 0 answered" in p.message for p in problems)


def test_expired_lease_that_kept_its_counter_is_named(answered_study: Study) -> None:
    Assignment.objects.filter(item__study=answered_study, status="leased").update(status="expired")
    assert _codes(answered_study) == ["counters"]


def test_same_identity_twice_is_named(answered_study: Study) -> None:
    Participant.objects.create(study=answered_study, platform="prolific", platform_worker_id="w1", worker_hash="x")
    assert _codes(answered_study) == []  # another platform is another identity
    Participant.objects.filter(platform="prolific").update(platform="link", platform_worker_id="w1 ")
    assert _codes(answered_study) == []
    # The database refuses an exact duplicate identity, so the audit's check is a second line of
    # defence; a repeated (participant, item) pair is likewise refused by a unique constraint.
    with pytest.raises(Exception, match="unique|UNIQUE"):
        _lease(Participant.objects.get(platform_worker_id="w1"), answered_study.items.order_by("pk").first(), 9)


def test_missing_and_altered_stimulus_files_are_named(answered_study: Study) -> None:
    items = list(answered_study.items.order_by("pk"))
    default_storage.delete(items[0].stimulus_a.file.name)
    altered = items[1].stimulus_a.file.name
    with default_storage.open(altered, "wb") as handle:
        handle.write(b"not the rendered heat map")
    problems = study_audit(study_id=answered_study.pk).problems
    # Stimulus files are content-addressed, so several stimuli may share one file.
    assert {p.code for p in problems} == {"stimulus"}
    assert any("is missing" in p.message and items[0].stimulus_a.file.name in p.message for p in problems)
    assert any("hashes to" in p.message and altered in p.message for p in problems)
    assert study_audit(study_id=answered_study.pk, check_files=False).ok


def test_every_slot_of_the_design_is_checked() -> None:
    """A four-panel design (distinction: slots a..d, one model): a missing file in slot c and an
    altered one in slot d are named, with each stimulus counted once."""
    from studies.fixtures.builders import make_worker_study

    study = make_worker_study(kind="distinction", n_main=2, n_practice=0)
    items = list(study.items.select_related("stimulus_c", "stimulus_d").order_by("pk"))
    report = study_audit(study_id=study.pk)
    assert report.ok
    assert report.stimuli == len({getattr(item, f"stimulus_{slot}_id") for item in items for slot in "abcd"}) == 8
    missing, altered = items[0].stimulus_c, items[1].stimulus_d
    default_storage.delete(missing.file.name)
    with default_storage.open(altered.file.name, "wb") as handle:
        handle.write(b"not the rendered heat map")
    problems = study_audit(study_id=study.pk).problems
    assert {p.code for p in problems} == {"stimulus"}
    assert [p.message for p in problems if "is missing" in p.message] == [
        f"stimulus {missing.pk} (gradcam) file {missing.file.name!r} is missing"]
    assert any("hashes to" in p.message and f"stimulus {altered.pk} " in p.message for p in problems)


def test_command_exits_nonzero_and_names_problems(answered_study: Study, capsys: pytest.CaptureFixture[str]) -> None:
    call_command("audit_study", answered_study.name)
    assert "clean" in capsys.readouterr().out
    Item.objects.filter(pk=answered_study.items.order_by("pk").last().pk).update(n_answered=7)
    with pytest.raises(SystemExit) as exited:
        call_command("audit_study", str(answered_study.pk))
    assert exited.value.code == 1
    captured = capsys.readouterr()
    assert "[counters]" in captured.err
    assert "n_answered=7" in captured.err
    assert "1 problem(s)" in captured.out


def test_lookup_by_pk_slug_and_name(answered_study: Study) -> None:
    from studies.selectors.studies import study_lookup

    for key in (str(answered_study.pk), answered_study.slug, answered_study.name):
        assert study_lookup(key=key) == answered_study


def test_command_unknown_study_is_a_clear_error() -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no-such-study"):
        call_command("audit_study", "no-such-study")


def test_open_lease_on_a_catch_item_is_not_a_counter_problem(answered_study: Study) -> None:
    """Catch items have no quota, so allocation leaves their ``n_leased`` alone."""
    main = answered_study.items.order_by("pk").first()
    catch = Item.objects.create(study=answered_study, role=Item.Role.CATCH, method="catch_box", image=main.image,
                                target_class=main.target_class, options=main.options, correct_option=0,
                                stimulus_a=main.stimulus_a)  # fmt: skip
    Assignment.objects.create(participant=_participant(answered_study, "w9"), item=catch, position=0,
                              option_order=[0, 1], expires_at=timezone.now() + timedelta(minutes=10))  # fmt: skip
    report = study_audit(study_id=answered_study.pk)
    assert report.ok, report.problems


@pytest.mark.parametrize(
    "command",
    ["audit_study", "audit_stimuli", "prepare_study", "evaluate_study", "export_study", "simulate_crowd",
     "invitations", "check_codes"],
)  # fmt: skip
def test_every_study_command_names_an_unknown_study(command: str) -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match=r"no study matches 'no-such-study'"):
        call_command(command, "no-such-study", *(["results.csv"] if command == "check_codes" else []))
