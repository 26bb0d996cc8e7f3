"""The one "next step for this participant" selector and its gates (``studies.selectors.participation``)."""

from __future__ import annotations

import pytest

from studies.fixtures.builders import make_worker_study
from studies.models import Participant
from studies.selectors.participation import participant_next_step, stage_allows, stage_allows_status
from studies.services.allocation import trial_lease

pytestmark = pytest.mark.django_db

S = Participant.Status


@pytest.mark.parametrize(("status", "passed", "practice", "trials"), [
    (S.STARTED, False, False, False),
    (S.CONSENTED, False, True, False),
    (S.CONSENTED, True, False, False),
    (S.IN_PROGRESS, True, False, True),
    (S.IN_PROGRESS, False, False, False),
    (S.SCREENED_OUT, False, False, False),
    (S.COMPLETED, True, False, False),
    (S.DECLINED, False, False, False),
])  # fmt: skip
def test_the_gates(status, passed, practice, trials):
    assert stage_allows_status("practice", status=status, practice_passed=passed) is practice
    assert stage_allows_status("trials", status=status, practice_passed=passed) is trials
    participant = Participant(status=status, practice_passed=passed)
    assert stage_allows(participant, "practice") is practice
    assert stage_allows(participant, "trials") is trials


def test_an_unknown_step_is_refused():
    with pytest.raises(ValueError, match="unknown step"):
        stage_allows_status("nap", status=S.IN_PROGRESS, practice_passed=True)  # type: ignore[arg-type]


def _participant(study, **fields) -> Participant:
    return Participant.objects.create(study=study, platform="link", platform_worker_id="w1", session_key="w1",
                                      worker_hash="h", **fields)  # fmt: skip


def test_next_step_reads_the_stage_or_the_lease():
    study = make_worker_study(n_main=4, n_practice=0, trials_per_participant=2, with_files=False)
    participant = _participant(study, status=S.CONSENTED)
    assert participant_next_step(participant).stage == "practice"
    Participant.objects.filter(pk=participant.pk).update(status=S.IN_PROGRESS, practice_passed=True)
    participant.refresh_from_db()
    step = participant_next_step(participant)
    assert (step.stage, step.answered, step.planned, step.leases) == ("trial", 0, 2, [])  # read, nothing leased
    lease = trial_lease(participant=participant, mark_shown=True, only_if_answering=True)
    step = participant_next_step(participant, lease=lease)
    assert step.stage == "trial"
    assert [a.pk for a in step.leases] == [a.pk for a in lease.leases]
    assert (step.answered, step.planned) == (lease.answered, lease.planned)
