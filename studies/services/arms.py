"""Between-subject arms: which arm a new participant joins (balanced, unpredictable, concurrency-safe).

Rule (:mod:`studies.lib.arms`): the arm with the fewest *counted* participants so far (the study's
participants that are neither declined nor screened out), ties broken by a draw from
:func:`studies.lib.slots.slot_rng` keyed with the server secret and the new participant's token
(label ``arm``), so a worker cannot predict or choose an arm by the moment they enter.

Concurrency: :func:`arm_assign` runs inside the entry transaction that inserts the participant and
first locks the study's row (``SELECT ... FOR NO KEY UPDATE``: it excludes another entry's lock but
not the foreign-key checks of rows that merely reference the study), so on PostgreSQL two entries of
one study count and insert one after the other (READ COMMITTED: the count after the lock sees every entry
committed before it). The arms' counts therefore differ by at most one at every commit, as long as
nobody leaves the count (declining or being screened out later makes room that the next entries fill).
SQLite has no row locks but runs one writer at a time.
"""

from __future__ import annotations

from studies.lib.arms import arm_names, arm_pick
from studies.lib.slots import slot_rng
from studies.models import Study
from studies.selectors.allocation import arm_counts


def arm_assign(*, study: Study, participant_token: str) -> str:
    """The arm a participant entering now joins ("" for a study without arms).

    Must run inside the transaction that inserts the participant (``transaction.atomic``): it locks
    the study's row until that transaction ends. Reads the arms again under the lock.
    """
    arms = Study.objects.select_for_update(no_key=True).filter(pk=study.pk).values_list("arms", flat=True).first()
    names = arm_names(arms)
    if not names:
        return ""
    counts = arm_counts(study=study)
    rng = slot_rng(seed=study.seed, participant_token=participant_token, label="arm")
    return arm_pick(names, counts, rng)
