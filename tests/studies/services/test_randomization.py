"""Issue #12, item 6: every random choice a worker sees is keyed with the server secret and stored.

A worker knows their own participant token (it is in every URL) and may know the study seed (the
demo's is public). With the former public seeding ``random.Random(f"{seed}:{token}:slot{k}")`` they
predicted every Robot A side (12 of 12 in the report). These tests replay that attack on trials
leased by the real allocation path and check it does no better than chance now, that the same
attack on the former seeding succeeds (so the test has the power to see it), and that the page
and the images show what the assignment stored (not a re-derivation).
"""

from __future__ import annotations

import hashlib
import random
import re

import pytest
from django.test import override_settings
from django.urls import reverse
from scipy.stats import binomtest

from studies.fixtures.builders import make_worker_study
from studies.lib import choices
from studies.lib.choices import assignment_choices, practice_choices
from studies.lib.slots import catch_slots
from studies.models import Assignment, Item, Participant, Study
from studies.services.allocation import trial_lease
from studies.services.responses import response_record

pytestmark = pytest.mark.django_db

#: A fixed secret, so the figures below are the same wherever the suite runs.
SECRET = "test-randomization-secret-not-used-anywhere-else"
N_TRIALS = 200
PER_WORKER = 4


def public_slot_rng(*, seed: int, participant_token: str, label: str) -> random.Random:
    """The former generator: everything it is seeded with is known to the worker."""
    return random.Random(f"{seed}:{participant_token}:{label}")


def _participants(study: Study, n: int) -> list[Participant]:
    return [
        Participant.objects.create(
            study=study, token=f"randomization-worker-{k:04d}", platform="link", platform_worker_id=f"anon{k}",
            session_key=f"s{k}", worker_hash=f"h{k}",
            status=Participant.Status.IN_PROGRESS, practice_passed=True,
        )  # fmt: skip
        for k in range(n)
    ]


def _simulate(kind: str) -> tuple[Study, list[Assignment]]:
    """``N_TRIALS`` trials leased (and answered) through the services, ``PER_WORKER`` per participant."""
    n_workers = N_TRIALS // PER_WORKER
    study = make_worker_study(kind=kind, n_main=n_workers, n_practice=0, judgments_per_item=PER_WORKER,
                              trials_per_participant=PER_WORKER, with_files=False)  # fmt: skip
    for participant in _participants(study, n_workers):
        participant.study = study
        for _ in range(PER_WORKER):
            lease = trial_lease(participant=participant, lookahead=0, mark_shown=True)
            response_record(participant=participant, assignment_token=lease.leases[0].token, choice=0)
    shown = list(Assignment.objects.filter(item__study=study).select_related("participant", "item").order_by("id"))
    assert len(shown) == N_TRIALS
    return study, shown


def _attack(study: Study, assignment: Assignment) -> bool:
    """What a worker predicts for a trial from their token, the seed and the former formula; right or not."""
    rng = public_slot_rng(seed=study.seed, participant_token=assignment.participant.token, label=f"slot{assignment.position}")
    order = list(range(len(assignment.item.options or [])))
    rng.shuffle(order)
    if study.kind == Study.Kind.TRUST:
        return (rng.random() < 0.5) == assignment.model_a_shown_left
    return order[0] == assignment.option_order[0]  # which category is the first button


@override_settings(SECRET_KEY=SECRET)
@pytest.mark.parametrize("kind", [Study.Kind.TRUST, Study.Kind.CLASS_DISCRIMINATION])
def test_a_worker_who_knows_token_and_seed_predicts_no_better_than_chance(kind):
    study, shown = _simulate(kind)
    hits = sum(_attack(study, a) for a in shown)
    test = binomtest(hits, N_TRIALS, 0.5, alternative="two-sided")
    print(f"{kind}: the public-formula attack predicts {hits}/{N_TRIALS} ({hits / N_TRIALS:.1%}), binomial p = {test.pvalue:.3f}")
    assert test.pvalue > 0.01, (hits, test.pvalue)
    # A sanity check that the draws stay balanced (the fair-coin test over 2000 draws is in
    # test_worker_allocation.py): no worse than a 1-in-1000 deviation.
    if kind == Study.Kind.TRUST:
        left = sum(bool(a.model_a_shown_left) for a in shown)
        assert binomtest(left, N_TRIALS, 0.5).pvalue > 0.001, left
    else:
        assert all(sorted(a.option_order) == [0, 1] for a in shown)
        first = sum(a.option_order[0] == 0 for a in shown)
        assert binomtest(first, N_TRIALS, 0.5).pvalue > 0.001, first


@override_settings(SECRET_KEY=SECRET)
def test_the_same_attack_predicted_every_side_under_the_former_seeding(monkeypatch):
    """The test has power: with the public formula (the code before issue #12) the attack is perfect."""
    monkeypatch.setattr(choices, "slot_rng", public_slot_rng)  # the generator the choices are drawn from
    study, shown = _simulate(Study.Kind.TRUST)
    hits = sum(_attack(study, a) for a in shown)
    print(f"former seeding: the attack predicts {hits}/{N_TRIALS}, binomial p = {binomtest(hits, N_TRIALS, 0.5).pvalue:.1e}")
    assert hits == N_TRIALS
    assert binomtest(hits, N_TRIALS, 0.5).pvalue < 1e-50


def test_draws_depend_on_the_secret_and_are_stable_for_the_server():
    study = make_worker_study(kind=Study.Kind.TRUST, n_main=1, n_practice=0, with_files=False)
    item = Item.objects.get(study=study)
    tokens = [f"token{k}" for k in range(400)]

    def sides(secret: str) -> list[bool]:
        with override_settings(SECRET_KEY=secret):
            return [bool(assignment_choices(study=study, participant_token=t, slot=0, item=item).model_a_shown_left)
                    for t in tokens]  # fmt: skip

    first, again, other = sides("secret-one"), sides("secret-one"), sides("secret-two")
    assert first == again  # the server re-derives (same secret, seed, token, label)
    agree = sum(a == b for a, b in zip(first, other, strict=True))
    assert binomtest(agree, len(tokens), 0.5).pvalue > 0.01, agree  # another key: unrelated draws


@override_settings(SECRET_KEY=SECRET)
def test_catch_positions_are_not_predictable_from_token_and_seed():
    study = make_worker_study(n_main=8, n_catch=2, n_practice=0, with_files=False)
    planned, n_catch = 8, 2
    n, hits = 300, 0
    for k in range(n):
        token = f"worker{k}"
        rng = public_slot_rng(seed=study.seed, participant_token=token, label="catch")
        predicted = frozenset(rng.sample(range(1, planned), n_catch))
        hits += predicted == catch_slots(study=study, participant_token=token, planned=planned, n_catch=n_catch)
    chance = 1 / 21  # C(7, 2) equally likely pairs
    assert binomtest(hits, n, chance).pvalue > 0.01, hits


@override_settings(SECRET_KEY=SECRET)
def test_practice_choices_are_keyed_too():
    study = make_worker_study(kind=Study.Kind.TRUST, n_main=1, n_practice=1, with_files=False)
    Item.objects.filter(study=study, role=Item.Role.PRACTICE).update(public_id="fixed-practice-item")  # fixed figure
    item = Item.objects.get(study=study, role=Item.Role.PRACTICE)
    n, hits = 300, 0
    for k in range(n):
        token = f"worker{k}"
        rng = public_slot_rng(seed=study.seed, participant_token=token, label=f"slotpractice1-{item.public_id}")
        hits += (rng.random() < 0.5) == practice_choices(study=study, participant_token=token, attempt=1,
                                                          item=item).model_a_shown_left  # fmt: skip
    assert binomtest(hits, n, 0.5).pvalue > 0.01, hits


def _consented(client, study: Study) -> str:
    from tests.studies.web.test_worker_flow import consent_and_practice, enter, token_from

    token = token_from(enter(client, study))
    consent_and_practice(client, study, token)
    return token


def test_the_trust_page_and_its_images_show_the_stored_side(client):
    """The page reads ``Assignment.model_a_shown_left``: flipping the stored value flips the images."""
    study = make_worker_study(kind=Study.Kind.TRUST, n_main=4, n_practice=1, trials_per_participant=2)
    token = _consented(client, study)
    page = client.get(reverse("studies:worker-home", args=[token]))
    assert b"data-trial-form" in page.content
    assignment = Assignment.objects.select_related("item__stimulus_a", "item__stimulus_b").get(
        participant__token=token, status=Assignment.Status.LEASED
    )
    item = assignment.item

    def left_sha() -> str:
        url = reverse("studies:worker-stimulus", args=[token, assignment.token, "left"])
        body = b"".join(client.get(url).streaming_content)
        return hashlib.sha256(body).hexdigest()

    a_left = assignment.model_a_shown_left
    assert left_sha() == (item.stimulus_a.sha256 if a_left else item.stimulus_b.sha256)
    Assignment.objects.filter(pk=assignment.pk).update(model_a_shown_left=not a_left)
    assert left_sha() == (item.stimulus_b.sha256 if a_left else item.stimulus_a.sha256)
    # Answering scores against the stored side too: "Robot A clearly" = +2 for whichever model was Robot A.
    response_record(participant=Participant.objects.get(token=token), assignment_token=assignment.token, choice=0)
    assignment.refresh_from_db()
    assert assignment.response.score_model_a == (-2 if a_left else 2)


def test_the_discrimination_page_shows_the_stored_option_order(client):
    study = make_worker_study(n_main=4, n_practice=1, trials_per_participant=2)
    token = _consented(client, study)
    client.get(reverse("studies:worker-home", args=[token]))
    assignment = Assignment.objects.select_related("item").get(participant__token=token, status=Assignment.Status.LEASED)
    for order in ([0, 1], [1, 0]):
        Assignment.objects.filter(pk=assignment.pk).update(option_order=order)
        page = client.get(reverse("studies:worker-home", args=[token])).content.decode()
        buttons = re.findall(r'<button[^>]*name="choice"[^>]*>(.*?)</button>', page, flags=re.S)
        shown = [re.sub(r"<kbd[^>]*>.*?</kbd>|<[^>]+>", "", b).strip() for b in buttons]
        assert shown == [assignment.item.options[i] for i in order], (order, shown)
