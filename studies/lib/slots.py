"""The keyed randomness of a participant's slots: one generator per (study seed, participant, label).

Every random choice a worker sees (option order, which model is shown as Robot A, the catch
positions and which catch item, the practice draws) comes from :func:`slot_rng`, a generator keyed
with the server's ``SECRET_KEY`` (issue #12): ``HMAC-SHA256(salted_hmac key "xaistudy.slot-rng",
f"{study.seed}:{participant.token}:{label}")``. The worker knows their token and the seed may be
public (the demo's is), but without the secret neither predicts a draw better than chance
(``tests/studies/services/test_randomization.py``; the former public seeding
``random.Random(f"{seed}:{token}:{label}")`` let a worker predict every Robot A side).

Pure (no query): used by ``studies.services`` (allocation, practice) and by
:mod:`studies.lib.choices`, which the selectors read too.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from django.utils.crypto import salted_hmac

if TYPE_CHECKING:
    from studies.models import Study

#: The key salt of :func:`slot_rng` (``salted_hmac`` with ``SECRET_KEY``).
SLOT_RNG_SALT = "xaistudy.slot-rng"


def slot_rng(*, seed: int, participant_token: str, label: str) -> random.Random:
    """A deterministic generator for one participant's choice ``label``, keyed with the server secret.

    Seeded with ``HMAC-SHA256(key from SECRET_KEY and SLOT_RNG_SALT, f"{seed}:{token}:{label}")``:
    the server can draw the same values again, a worker who knows their token and the study seed
    cannot (the former ``random.Random(f"{seed}:{token}:{label}")`` could be replayed by anyone).
    """
    digest = salted_hmac(SLOT_RNG_SALT, f"{seed}:{participant_token}:{label}", algorithm="sha256").digest()
    return random.Random(int.from_bytes(digest, "big"))


def catch_slots(*, study: Study, participant_token: str, planned: int, n_catch: int) -> frozenset[int]:
    """The 0-based slots that show a catch trial: ``n_catch`` distinct slots drawn from 1..planned-1 (keyed,
    label ``catch``)."""
    if n_catch <= 0 or planned <= 1:
        return frozenset()
    rng = slot_rng(seed=study.seed, participant_token=participant_token, label="catch")
    return frozenset(rng.sample(range(1, planned), min(n_catch, planned - 1)))
