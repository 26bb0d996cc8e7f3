"""A complete study filled with synthetic judgments, for tests, screenshots and demos.

``synthetic_study_create`` writes an image set (file-less image rows), the model or model
pair, a study with exclusion rules, main and catch items, participants (some careless, some
fast, a share marked simulated), assignments with their randomized option order and Robot A
side, and one response per assignment - all with ``bulk_create``, deterministic for a seed.
These are *test responses*, not people: participants are named ``synthetic-<n>`` and, where
``simulated_share`` says so, flagged ``is_simulated``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
from django.db import transaction

from studies.models import (
    Assignment,
    ClassifierModel,
    Image,
    ImageSet,
    Item,
    ModelPair,
    Participant,
    Response,
    Study,
    new_token,
)
from studies.services.participation import completion_code_derive

__all__ = ["DEFAULT_RULES", "synthetic_study_create"]

CATEGORIES = ("cat", "dog", "car", "bus", "bird", "boat", "horse", "sheep", "chair", "sofa")
DEFAULT_RULES = [
    {"rule": "catch_accuracy_below", "threshold": 0.75},
    {"rule": "median_trial_time_below", "seconds": 1.0},
]


@transaction.atomic
def synthetic_study_create(
    *,
    kind: str = Study.Kind.CLASS_DISCRIMINATION,
    methods: Sequence[str] = ("gradcam", "guided_backprop"),
    quality: Sequence[float] = (0.7, 0.5),
    n_images: int = 12,
    n_workers: int = 20,
    trials_per_worker: int = 10,
    catch_per_worker: int = 2,
    n_careless: int = 2,
    n_fast: int = 1,
    simulated_share: float = 0.0,
    platform: str = Study.Platform.MTURK,
    exclusion_rules: list[dict] | None = None,
    seed: int = 0,
    start: datetime | None = None,
    name: str = "Synthetic study",
) -> Study:
    """Create a study with items, participants and one response per assignment.

    Args:
        kind: ``Study.Kind`` value.
        methods: Method names, one item per (method, image).
        quality: Per method: discrimination accuracy of attentive workers, or trust: mean
            score towards model B (-2..+2).
        n_images: Images (two categories each); also the number of stimulus units.
        n_workers: Participants. The first ``n_careless`` answer at random (and fail catch
            trials); the next ``n_fast`` answer in about 0.4 s per trial.
        trials_per_worker: Main trials per participant (distinct items).
        catch_per_worker: Catch trials per participant.
        simulated_share: Share of the *last* participants flagged ``is_simulated``.
        platform: ``Study.Platform`` of the participants (ids filled accordingly).
        exclusion_rules: JSON rules (default ``DEFAULT_RULES``).
        seed: Seed of every random choice.
        start: Time of the first trial (default 2026-01-05 09:00 UTC).
        name: Study name.

    Raises:
        ValueError: If ``methods`` and ``quality`` differ in length or a count is impossible.
    """
    if len(methods) != len(quality):
        raise ValueError(f"methods ({len(methods)}) and quality ({len(quality)}) differ in length")
    n_main_items = len(methods) * n_images
    if trials_per_worker > n_main_items:
        raise ValueError(f"trials_per_worker={trials_per_worker} exceeds the {n_main_items} main items")
    if n_careless + n_fast > n_workers:
        raise ValueError("n_careless + n_fast exceeds n_workers")
    rng = np.random.default_rng(seed)
    token = new_token()[:10].lower().replace("-", "x").replace("_", "y")
    image_set = ImageSet.objects.create(name=f"synthetic-{token}", source=ImageSet.Source.SYNTHETIC,
                                        categories=list(CATEGORIES))  # fmt: skip
    images = []
    for k in range(n_images):
        a, b = rng.choice(len(CATEGORIES), size=2, replace=False)
        digest = hashlib.sha256(f"{token}-{k}".encode()).hexdigest()
        images.append(Image(image_set=image_set, file=f"images/synthetic-{k}.png", original_name=f"pair_{k:03d}.png",
                            sha256=digest, width=224, height=112,
                            categories=[CATEGORIES[a], CATEGORIES[b]]))  # fmt: skip
    images = Image.objects.bulk_create(images)
    model = ClassifierModel.objects.create(name=f"synthetic-cnn-{token}", arch="synthetic_cnn",
                                           class_names=list(CATEGORIES))  # fmt: skip
    study_kwargs: dict = {"model": model}
    if kind == Study.Kind.TRUST:
        model_b = ClassifierModel.objects.create(name=f"synthetic-cnn-strong-{token}", arch="synthetic_cnn",
                                                 class_names=list(CATEGORIES))  # fmt: skip
        study_kwargs = {"model_pair": ModelPair.objects.create(name=f"pair-{token}", model_a=model, model_b=model_b)}
    study = Study.objects.create(
        name=name, kind=kind, methods=list(methods), image_set=image_set, platform=platform, seed=seed,
        judgments_per_item=max(1, n_workers * trials_per_worker // n_main_items),
        trials_per_participant=trials_per_worker, catch_trials=catch_per_worker,
        exclusion_rules=DEFAULT_RULES if exclusion_rules is None else exclusion_rules,
        status=Study.Status.LIVE, **study_kwargs,
    )  # fmt: skip

    items = []
    for m, method in enumerate(methods):
        for image in images:
            target = int(rng.integers(2))
            items.append(Item(study=study, role=Item.Role.MAIN, method=method, image=image,
                              target_class=CATEGORIES.index(image.categories[target]),
                              target_label=image.categories[target], options=list(image.categories),
                              correct_option=target if kind != Study.Kind.TRUST else None,
                              tie_rank=m * n_images + len(items)))  # fmt: skip
    catch_items = [
        Item(study=study, role=Item.Role.CATCH, method=methods[0], image=image, target_class=-1 - k,
             target_label="attention check", options=["the word 'yes'", "the word 'no'"], correct_option=0)
        for k, image in enumerate(images[: max(catch_per_worker, 1)])
    ]  # fmt: skip
    items = Item.objects.bulk_create(items)
    catch_items = Item.objects.bulk_create(catch_items)

    n_simulated = round(simulated_share * n_workers)
    participants = []
    for w in range(n_workers):
        worker_id = f"synthetic-{token}-{w:04d}"
        extra = (
            {"mturk_assignment_id": f"ASSIGN{w:05d}{token[:4].upper()}", "mturk_hit_id": f"HIT{token[:6].upper()}"}
            if platform == Study.Platform.MTURK
            else {"prolific_study_id": f"study{token[:6]}", "prolific_session_id": f"session{w:05d}"}
            if platform == Study.Platform.PROLIFIC else {}
        )  # fmt: skip
        participants.append(Participant(study=study, platform=platform, platform_worker_id=worker_id,
                                        worker_hash=hashlib.sha256(worker_id.encode()).hexdigest(),
                                        status=Participant.Status.COMPLETED, consent_version="1",
                                        practice_passed=True, is_simulated=w >= n_workers - n_simulated,
                                        **extra))  # fmt: skip
        person = participants[-1]
        person.session_key = extra.get("mturk_assignment_id") or extra.get("prolific_session_id") or worker_id
        person.completion_code = completion_code_derive(study=study, participant_token=person.token)
    participants = Participant.objects.bulk_create(participants)

    t0 = start or datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    assignments, answers = [], []
    for w, person in enumerate(participants):
        careless, fast = w < n_careless, n_careless <= w < n_careless + n_fast
        chosen_items = [items[k] for k in rng.choice(len(items), size=trials_per_worker, replace=False)]
        chosen_catch = [catch_items[k % len(catch_items)] for k in range(catch_per_worker)]
        sequence = chosen_items + chosen_catch
        order = rng.permutation(len(sequence))
        clock = t0 + timedelta(minutes=int(w * 7 + rng.integers(0, 5)))
        for position, k in enumerate(order):
            item = sequence[k]
            rt = int(rng.integers(250, 600)) if fast else int(rng.gamma(4.0, 700.0)) + 600
            shown = clock
            clock = clock + timedelta(milliseconds=rt + 300)
            option_order = [int(x) for x in rng.permutation(len(item.options))] if item.options else []
            a_left = bool(rng.integers(2)) if kind == Study.Kind.TRUST else None
            assignments.append(Assignment(participant=person, item=item, position=position,
                                          status=Assignment.Status.ANSWERED, option_order=option_order,
                                          model_a_shown_left=a_left, expires_at=clock + timedelta(minutes=10),
                                          shown_at=shown, answered_at=clock))  # fmt: skip
            if item.role == Item.Role.CATCH or kind != Study.Kind.TRUST:
                p_right = (0.0 if careless else 0.97) if item.role == Item.Role.CATCH else (
                    0.5 if careless else quality[list(methods).index(item.method)])
                right = bool(rng.random() < p_right)
                chosen = item.correct_option if right else 1 - item.correct_option
                answers.append({"chosen_option": chosen, "correct": right, "score_model_a": None, "ms": rt})
            else:
                mean_b = 0.0 if careless else quality[list(methods).index(item.method)]
                score_b = int(np.clip(np.rint(mean_b + rng.normal(0, 1.0)), -2, 2))
                answers.append({"chosen_option": None, "correct": None, "score_model_a": -score_b, "ms": rt})
    assignments = Assignment.objects.bulk_create(assignments, batch_size=2000)
    Response.objects.bulk_create(
        [Response(assignment=a, chosen_option=x["chosen_option"], correct=x["correct"],
                  score_model_a=x["score_model_a"], client_response_ms=x["ms"])
         for a, x in zip(assignments, answers, strict=True)],
        batch_size=2000,
    )  # fmt: skip
    finished = {}
    for a in assignments:
        finished[a.participant_id] = max(finished.get(a.participant_id, a.answered_at), a.answered_at)
    for person in participants:
        person.completed_at = finished.get(person.pk)
    Participant.objects.bulk_update(participants, ["completed_at"], batch_size=2000)
    counts: dict[int, int] = {}
    for a in assignments:
        counts[a.item_id] = counts.get(a.item_id, 0) + 1
    for item in [*items, *catch_items]:
        item.n_answered = counts.get(item.pk, 0)
    Item.objects.bulk_update([*items, *catch_items], ["n_answered"], batch_size=2000)
    return study
