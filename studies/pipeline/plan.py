"""Planning: which items a study shows, which stimuli they need, and how work is chunked.

Pure Django (no torch): the web process may import it.

**What the items are** is the study's design's (``design_for(study)``, :mod:`studies.designs`):
which images and categories main items target (``Design.main_targets``), their options and
right answer (``Design.main_items``), which images carry catch and practice candidates and
their answers (``Design.obvious_usable``, ``Design.obvious_answer``), which map fills each
stimulus slot (``Design.item_maps``) and how an obvious item's maps must read
(``Design.obvious_maps``, ``Design.obvious_side``). The rules of the two designs of the paper
are in ``studies/designs/class_discrimination.py`` and ``studies/designs/trust.py``. This
module applies them: creates the items, keys the stimuli, reserves images, chunks the work.

**Catch, practice and example items** are real maps from the same pipeline as the main items:
the study's methods, the same ``explain`` call, the same renderer, nothing drawn by hand, so
they cannot be told from main trials by their look. They are planned as *candidates*, every
(image, boxed category, method) of the images set aside for them; once every map exists
(the preparation's last step), :func:`obvious_select` keeps those whose maps give the answer
most plainly (:func:`obvious_share`: the share of the map's salience, read back from the PNG,
on the right object's box rather than the other object's) and deletes the rest.

* **Practice pool**: ``practice_trials * practice_attempts + 1`` items kept (the worked example
  of the instructions is the pool's first item; every attempt can then show items never shown
  before, ``studies.services.participation.practice_draw``), on images that no main item uses.
* **Catch pool**: ``2 * catch_trials`` items kept, on other images than the practice (so a
  catch trial is not recognisable as "the practice picture").
* Images for both come first from those the main items do not take (e.g. trust: those the
  models do not both get right), then are *reserved* from the main set: at most a third of it, chosen so
  that the main items' layout stays as balanced as it was (:func:`layout_balance`); practice
  first (its feedback shows answers, so never on a main image when it can be helped), catch one
  image when two or more can be reserved. With too few images they share images with main
  items (a catch item then shows a main item's picture).
* The kept items alternate sides (``Design.obvious_side``: the target's left/right; trust:
  robot A/B), cycle through the study's methods, and spread over (image, target) pairs.

**Layout balance** (:func:`layout_balance`, :func:`study_layout_balance`): per category, on how
many distinct images of a set of items it is the left or the right object (box centres; objects
one above the other are ``centre``). The validity audit reads it; the offline worlds are built
balanced (``docs/worlds.md``); for an imported set nothing is flipped, the audit reports it.

**Tie ranks** are a permutation of all items drawn from ``random.Random(study.seed)`` over the
items sorted by their natural key, so they are reproducible from the seed alone.

**Chunks** partition, for each model, the sorted ids of the images that have stimulus slots for
that model into groups of ``chunk_size``. The partition depends only on the plan, so a chunk
rerun after a crash explains exactly the same batch (byte-identical PNGs on the same machine).
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import Q

from studies.designs import design_for
from studies.designs.options import OptionsError, StudyOptions
from studies.lib.arms import arm_names
from studies.lib.rendering import is_map
from studies.lib.scenes import (
    PrepareInputError,
    box_for,
    boxed_categories,
    class_index,
    image_sides,
)
from studies.models import ClassifierModel, Image, Item, Stimulus, Study
from studies.pipeline.stimuli import (
    StimulusKey,
    base_method,
    box_mask,
    rendering_of,
    settings_hash,
    stimulus_salience,
    stimulus_settings,
)

MIN_DISPLAY_SIZE = 224
#: every stimulus slot an item has (``Item.stimulus_a`` .. ``stimulus_d``); a design fills
#: ``Design.stimulus_slots`` of them
ITEM_SLOTS = ("a", "b", "c", "d")
#: At most this share of the main images is reserved for the practice pool.
MAX_RESERVED_SHARE = 1 / 3


@dataclass(frozen=True)
class Slot:
    """One stimulus an item needs: which slot (``a``..``d``: ``Item.stimulus_<side>``) and under which key."""

    item_id: int
    side: str
    key: StimulusKey
    settings: dict[str, Any]


@dataclass(frozen=True)
class Chunk:
    """A batch of images explained by one model in one ``explain`` call."""

    model_id: int
    image_ids: tuple[int, ...]


@dataclass(frozen=True)
class PlanSummary:
    main: int
    catch: int
    practice: int
    created: int
    deleted: int
    #: main images set aside for the practice pool, and practice items on images main items use
    reserved: int = 0
    practice_shared: int = 0
    #: :func:`layout_balance` of the main items' images
    layout: dict[str, dict[str, int]] = field(default_factory=dict)
    #: what the design says about main items it could not make (``Design.main_notes``: e.g. images skipped)
    notes: tuple[str, ...] = ()


def study_options(study: Study) -> StudyOptions:
    """The study's parsed ``explainer_options`` (``design_for(study).options``); a bad value raises
    :class:`PrepareInputError` with the option's message (so the job fails naming the key)."""
    try:
        return design_for(study).options(study)
    except OptionsError as exc:
        raise PrepareInputError(str(exc)) from exc


def display_size(study: Study, options: StudyOptions | None = None) -> int:
    """Side of the rendered stimuli: ``explainer_options["display_size"]`` or the largest model input (>= 224)."""
    configured = (options or study_options(study)).display_size
    if configured:
        return configured
    return max([MIN_DISPLAY_SIZE] + [m.input_size for m in design_for(study).study_models(study)])


# --- layout -------------------------------------------------------------------------------


def layout_balance(items: Iterable[Item | Image]) -> dict[str, dict[str, int]]:
    """Per category, on how many distinct images it is the left, the right or a ``centre`` object.

    ``items``: items (their images are read, each image counted once) or images. Only
    two-category images with boxes count (:func:`image_sides`). A balanced set has
    ``left == right`` for every category; a heatmap-blind observer could exploit any category
    with ``left != right``. Returns ``{category: {"left": n, "right": n, "centre": n}}``, sorted.
    """
    seen: set[Any] = set()
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for entry in items:
        image = entry.image if isinstance(entry, Item) else entry
        key = image.pk if image.pk is not None else id(image)
        if key in seen:
            continue
        seen.add(key)
        for category, side in image_sides(image).items():
            counts[category][side] += 1
    return {c: {"left": counts[c]["left"], "right": counts[c]["right"], "centre": counts[c]["centre"]}
            for c in sorted(counts)}


def layout_imbalance(balance: dict[str, dict[str, int]]) -> int:
    """``sum |left - right|`` over the categories of a :func:`layout_balance` (0 = balanced)."""
    return sum(abs(v["left"] - v["right"]) for v in balance.values())


def study_layout_balance(study: Study, *, role: str = Item.Role.MAIN) -> dict[str, dict[str, int]]:
    """:func:`layout_balance` of the images of the study's items of ``role`` (default: main)."""
    images = Image.objects.filter(pk__in=study.items.filter(role=role).values("image_id")).order_by("pk")
    return layout_balance(images)


# --- planning -----------------------------------------------------------------------------


def study_plan(*, study: Study) -> PlanSummary:
    """Create (or keep) the study's items; delete planned items that the rules no longer produce.

    Idempotent: items are matched on their unique key (study, role, method, image, target), so a
    second call creates nothing. Raises :class:`PrepareInputError` for unmappable categories.
    """
    design = design_for(study)
    options = study_options(study)  # a bad value fails here, naming the option
    models = design.study_models(study)
    images = list(study.image_set.images.order_by("pk"))
    # main candidates: image -> the categories a main item may target
    main_targets = design.main_targets(study, images, models, options)
    obvious = _obvious_plan(study, models[0], images, main_targets, options)
    main_images = [image for image in images if image.pk in main_targets and image.pk not in obvious.reserved]

    wanted: list[dict[str, Any]] = []
    for image, label, answers, correct in design.main_items(study, main_images, main_targets):
        cls = class_index(models[0], label, class_map=options.class_map, image=image)
        for method in study.methods:
            wanted.append({"role": Item.Role.MAIN, "method": method, "image": image, "target_class": cls,
                           "target_label": label, "options": answers, "correct_option": correct})
    wanted.extend(obvious.specs)

    created = 0
    keep: set[int] = set()
    with transaction.atomic():
        for spec in wanted:
            key = {k: spec[k] for k in ("role", "method", "image", "target_class")}
            defaults = {k: spec[k] for k in ("target_label", "options", "correct_option")}
            item, was_created = Item.objects.get_or_create(study=study, **key, defaults=defaults)
            created += was_created
            if not was_created and any(getattr(item, k) != v for k, v in defaults.items()):
                for k, v in defaults.items():
                    setattr(item, k, v)
                slots = [f"stimulus_{slot}" for slot in ITEM_SLOTS]
                for name in slots:
                    setattr(item, name, None)
                item.save(update_fields=[*defaults, *slots])
            keep.add(item.pk)
        stale = study.items.exclude(pk__in=keep).filter(assignments__isnull=True)
        deleted = stale.count()
        stale.delete()
        _assign_tie_ranks(study)
    roles = [spec["role"] for spec in wanted]
    return PlanSummary(main=roles.count(Item.Role.MAIN), catch=roles.count(Item.Role.CATCH),
                       practice=roles.count(Item.Role.PRACTICE), created=created, deleted=deleted,
                       reserved=len(obvious.reserved), practice_shared=obvious.practice_shared,
                       layout=layout_balance(main_images),
                       notes=tuple(design.main_notes(study, images, models, options)))


@dataclass
class _ObviousPlan:
    specs: list[dict[str, Any]]
    reserved: set[int]
    practice_shared: int


def practice_pool_size(study: Study) -> int:
    """Practice items to keep: ``practice_trials * practice_attempts`` plus one for the worked example."""
    if study.practice_trials <= 0:
        return 0
    return study.practice_trials * max(1, study.practice_attempts) + 1


def catch_pool_size(study: Study) -> int:
    """Catch items to keep: ``2 * catch_trials``."""
    return 2 * max(0, study.catch_trials)


def _obvious_plan(study: Study, model: ClassifierModel, images: Sequence[Image], main_targets: dict[int, list[str]],
                  options: StudyOptions) -> _ObviousPlan:
    """Practice and catch *candidates* (module docstring), and the main images reserved for them.

    Every (image, boxed category, method) of the practice images is a practice candidate, and of
    the catch images a catch candidate; :func:`obvious_select` keeps the best of them once their
    maps exist.
    """
    rng = random.Random(f"{study.seed}:obvious")
    design = design_for(study)
    boxed = [image for image in images if design.obvious_usable(image)]
    rng.shuffle(boxed)
    n_practice, n_catch = practice_pool_size(study), catch_pool_size(study) if boxed else 0
    want_practice = 1 + math.ceil((n_practice - 1) / 2) if n_practice else 0
    want_catch = math.ceil(n_catch / 2)
    spare = [image for image in boxed if image.pk not in main_targets]
    practice_images, catch_images = spare[:want_practice], spare[want_practice:want_practice + want_catch]
    missing_practice, missing_catch = want_practice - len(practice_images), want_catch - len(catch_images)
    budget = min(int(len(main_targets) * MAX_RESERVED_SHARE), missing_practice + missing_catch)
    reserved: set[int] = set()
    if budget > 0:
        main_images = [image for image in images if image.pk in main_targets]
        picked = _reserve_balanced(main_images, [image for image in boxed if image.pk in main_targets], budget)
        reserved = {image.pk for image in picked}
        # practice first (its feedback shows answers: never on a main image), but leave catch one
        # image when there are two or more to give
        n_practice_picked = min(max(missing_practice, 0), len(picked))
        if missing_catch > 0 and len(picked) >= 2 and n_practice_picked == len(picked):
            n_practice_picked -= 1
        practice_images += picked[:n_practice_picked]
        catch_images += picked[n_practice_picked:]
    main_boxed = [image for image in boxed if image.pk in main_targets]
    if n_practice and not practice_images:  # too few images: practice shares images with main items
        practice_images = main_boxed[:max(1, want_practice)]
    if n_catch and not catch_images:
        catch_images = [image for image in main_boxed if image not in practice_images][:want_catch] or list(boxed[:1])
    practice_shared_ids = {image.pk for image in practice_images if image.pk in main_targets and image.pk not in reserved}

    # catch and practice items show real maps kept inside a box: methods that show no map (the picture
    # alone, example images; ``studies.lib.rendering.NON_MAP_METHODS``) give none, unless the design
    # says otherwise (``Design.obvious_methods``: forward simulation's learning phase, one pool per arm)
    methods = design.obvious_methods(study)
    specs: list[dict[str, Any]] = []
    for role, pool, count in ((Item.Role.PRACTICE, practice_images, n_practice), (Item.Role.CATCH, catch_images, n_catch)):
        if not count:
            continue
        candidates = [(image, category, method) for image in pool for category in boxed_categories(image)
                      for method in methods]
        bits = _balanced_bits(len(candidates), random.Random(f"{study.seed}:{role}-robots"))
        for (image, category, method), bit in zip(candidates, bits, strict=True):
            cls = class_index(model, category, class_map=options.class_map, image=image)
            answers, correct = design.obvious_answer(image, category, bit)
            specs.append({"role": role, "method": method, "image": image, "target_class": cls,
                          "target_label": category, "options": answers, "correct_option": correct})
    practice_shared = sum(1 for spec in specs if spec["role"] == Item.Role.PRACTICE and spec["image"].pk in practice_shared_ids)
    return _ObviousPlan(specs, reserved, practice_shared)


def _reserve_balanced(main_images: Sequence[Image], candidates: Sequence[Image], count: int) -> list[Image]:
    """``count`` of ``candidates`` whose removal from ``main_images`` leaves the layout most balanced.

    Greedy: each pick is the candidate (in the given, seeded order) after whose removal
    :func:`layout_imbalance` of the rest is smallest.
    """
    remaining = list(main_images)
    picked: list[Image] = []
    pool = list(candidates)
    for _ in range(min(count, len(pool))):
        best = min(pool, key=lambda c: layout_imbalance(layout_balance([i for i in remaining if i.pk != c.pk])))
        picked.append(best)
        pool.remove(best)
        remaining = [i for i in remaining if i.pk != best.pk]
    return picked


def _balanced_bits(count: int, rng: random.Random) -> list[int]:
    """``count`` zeros and ones, as many of each as possible, in a seeded order."""
    bits = [i % 2 for i in range(count)]
    rng.shuffle(bits)
    return bits


# --- choosing the obvious items once their maps exist ----------------------------------------

#: A catch or practice candidate is obvious when at least this share of its map's salience on
#: the two objects lies on the right one (trust: for both robots' maps).
OBVIOUS_MIN_SHARE = 0.75


@dataclass(frozen=True)
class ObviousSelection:
    """What :func:`obvious_select` kept: per role, the kept count, how many of them fall short of
    :data:`OBVIOUS_MIN_SHARE` (too few obvious candidates), the lowest share kept, and deleted."""

    kept: dict[str, int]
    below_threshold: dict[str, int]
    min_share: dict[str, float]
    deleted: int


def _salience_in(stimulus: Stimulus, cache: dict[int, Any]) -> Any:
    if stimulus.pk not in cache:
        with stimulus.file.open("rb") as handle:
            cache[stimulus.pk] = stimulus_salience(handle.read(), rendering_of(stimulus.method))
    return cache[stimulus.pk]


def _share(salience: Any, image: Image, on: str, against: str | None) -> float:
    """Share of the salience on ``on``'s box out of ``on`` + ``against`` (or of the whole map)."""
    size = salience.shape[0]
    inside = box_mask(image, on, size)
    mass_on = float(salience[inside].sum())
    if against is None or box_for(image, against) is None:
        total = float(salience.sum())
        return mass_on / total if total > 0 else 0.0
    other = box_mask(image, against, size) & ~inside
    mass_other = float(salience[other].sum())
    return mass_on / (mass_on + mass_other) if mass_on + mass_other > 0 else 0.0


def obvious_share(study: Study, item: Item, cache: dict[int, Any] | None = None) -> float | None:
    """How plainly a catch/practice item's maps give its right answer (0..1, from the PNGs); ``None``
    when the item shows no map to read (``studies.lib.rendering.is_map`` false for every one of its
    stimuli: the picture alone of a forward-simulation control arm's learning item).

    The smallest, over the item's maps (``Design.obvious_maps``: each map, the category it must
    show and the one it must not), of the share of the map's salience on the first category's
    box out of both boxes (or of the whole map when the second has no box). Discrimination: the
    map on the target rather than the other object. Trust: the reasonable robot's map on the
    target and the other robot's map on the other object (or on the background). Salience is read
    from the rendered pixels (:func:`studies.pipeline.stimuli.stimulus_salience`), as a worker sees it.
    """
    cache = {} if cache is None else cache
    image = item.image
    other = next((c for c in boxed_categories(image) if c != item.target_label), None)
    shares = [_share(_salience_in(stimulus, cache), image, on, against)
              for stimulus, on, against in design_for(study).obvious_maps(item, other) if is_map(stimulus.method)]
    return min(shares) if shares else None


def _plain(share: float | None) -> bool:
    """A candidate's share is enough (:data:`OBVIOUS_MIN_SHARE`), or it shows no map to fall short."""
    return share is None or share >= OBVIOUS_MIN_SHARE


def obvious_select(*, study: Study) -> ObviousSelection:
    """Keep the practice and catch candidates whose maps give the answer most plainly; delete the rest.

    Runs when every stimulus slot is filled (the preparation's last step). Per role it keeps
    :func:`practice_pool_size` / :func:`catch_pool_size` items, one at a time, preferring in this
    order: a share of at least :data:`OBVIOUS_MIN_SHARE` (:func:`obvious_share`; a candidate with no
    map to read, share ``None``, counts as plain, and such candidates are taken in their seeded
    ``tie_rank`` order); the side that
    has been kept less (``Design.obvious_side``; discrimination: the target's left/right; trust:
    robot A or B); an
    (image, target) not kept yet; the next of ``Design.obvious_methods`` in a seeded cycle (first
    of all, before the share, for a role the arms draw from their own methods, ``Design.arm_roles``,
    so each arm gets its share of the pool; so
    catch and practice show the study's methods about as often as the main items do); then the
    larger share. Candidates answered already are always kept. Deterministic: the PNGs are.
    """
    from django.db.models import Exists, OuterRef

    from studies.models import Assignment

    kept: dict[str, int] = {}
    below: dict[str, int] = {}
    lowest: dict[str, float] = {}
    cache: dict[int, Any] = {}
    deleted = 0
    design = design_for(study)
    methods = design.obvious_methods(study)
    random.Random(f"{study.seed}:obvious-methods").shuffle(methods)
    side = design.obvious_side
    with_arms = bool(arm_names(study.arms))
    for role, need in ((Item.Role.PRACTICE, practice_pool_size(study)), (Item.Role.CATCH, catch_pool_size(study))):
        items = list(study.items.filter(role=role).select_related("image", *(f"stimulus_{slot}" for slot in ITEM_SLOTS))
                     .annotate(used=Exists(Assignment.objects.filter(item=OuterRef("pk")))).order_by("tie_rank", "pk"))
        if not items:
            continue
        shares = {item.pk: obvious_share(study, item, cache) for item in items}
        chosen = [item for item in items if item.used]
        pool = [item for item in items if not item.used]

        while len(chosen) < need and pool:
            sides = Counter(side(item) for item in chosen)
            pairs = {(item.image_id, item.target_class) for item in chosen}
            want_method = methods[len(chosen) % len(methods)] if methods else None
            # a role drawn per arm (``Design.arm_roles``) needs every arm's pool: the method cycle first
            per_arm = with_arms and role in design.arm_roles
            best = max(pool, key=lambda c: (not per_arm or c.method == want_method, _plain(shares[c.pk]), -sides[side(c)],
                                            (c.image_id, c.target_class) not in pairs, c.method == want_method,
                                            shares[c.pk] or 0.0))
            chosen.append(best)
            pool.remove(best)
        if pool:
            deleted += Item.objects.filter(pk__in=[item.pk for item in pool], assignments__isnull=True).delete()[0]
        kept[role] = len(chosen)
        below[role] = sum(not _plain(shares[item.pk]) for item in chosen)
        lowest[role] = round(min((shares[item.pk] for item in chosen if shares[item.pk] is not None), default=1.0), 3)
    if deleted:
        _assign_tie_ranks(study)
    return ObviousSelection(kept, below, lowest, deleted)


def _assign_tie_ranks(study: Study) -> None:
    items = sorted(study.items.all(), key=lambda i: (i.role, i.method, i.image_id, i.target_class))
    ranks = list(range(len(items)))
    random.Random(study.seed).shuffle(ranks)
    changed = []
    for item, rank in zip(items, ranks, strict=True):
        if item.tie_rank != rank:
            item.tie_rank = rank
            changed.append(item)
    Item.objects.bulk_update(changed, ["tie_rank"], batch_size=500)


def obvious_base_method(study: Study, item: Item) -> str:
    """The engine method of a catch/practice item's maps: its own, or the study's first for an
    item planned before catch items used real methods (``catch_box``/``catch``)."""
    if item.method in (study.methods or []):
        return item.method
    return (study.methods or [item.method])[0]


def item_slots(study: Study, items: Iterable[Item] | None = None) -> list[Slot]:
    """Every stimulus slot of the study's items with the key it must be filled from."""
    design = design_for(study)
    models = design.study_models(study)
    options = study_options(study)
    size = display_size(study, options)
    items = list(study.items.all() if items is None else items)
    slots: list[Slot] = []
    settings_cache: dict[tuple[int, str], tuple[dict[str, Any], str]] = {}
    obvious = [i for i in items if i.role != Item.Role.MAIN]
    images = Image.objects.in_bulk({i.image_id for i in obvious}) if obvious else {}

    def key_for(item: Item, model: ClassifierModel, method: str, target: int) -> tuple[StimulusKey, dict[str, Any]]:
        if (model.pk, method) not in settings_cache:
            settings = stimulus_settings(model=model, method=method,
                                         options=options.method_options(base_method(method)),
                                         display_size=size, exact=options.exact, overlay_base=options.overlay_base)
            settings_cache[(model.pk, method)] = (settings, settings_hash(settings))
        settings, digest = settings_cache[(model.pk, method)]
        return StimulusKey(item.image_id, model.pk, method, target, digest), settings

    for item in items:
        main = item.role == Item.Role.MAIN
        method = item.method if main else obvious_base_method(study, item)
        for side, model, stimulus_method, target in design.item_maps(
                study, item, models, method=method, image=images.get(item.image_id), options=options):
            key, settings = key_for(item, model, stimulus_method, target)
            slots.append(Slot(item.pk, side, key, settings))
    return slots


def slot_counts(study: Study) -> tuple[int, int]:
    """``(filled, total)`` stimulus slots of the study's items (the job's done/total)."""
    sides = design_for(study).stimulus_slots
    items = study.items.all()
    total = items.count() * len(sides)
    filled = sum(items.filter(**{f"stimulus_{side}__isnull": False}).count() for side in sides)
    return filled, total


def study_chunks(study: Study, *, only_missing: bool = True) -> list[Chunk]:
    """The fixed partition into chunks (per model, sorted image ids); optionally only those with empty slots."""
    items = list(study.items.all())
    by_model: dict[int, set[int]] = defaultdict(set)
    missing: dict[int, set[int]] = defaultdict(set)
    for slot, item in _slots_with_items(study, items):
        by_model[slot.key.model_id].add(slot.key.image_id)
        if getattr(item, f"stimulus_{slot.side}_id") is None:
            missing[slot.key.model_id].add(slot.key.image_id)
    size = study_options(study).chunk_size
    chunks: list[Chunk] = []
    for model in design_for(study).study_models(study):
        image_ids = sorted(by_model.get(model.pk, ()))
        for start in range(0, len(image_ids), size):
            group = tuple(image_ids[start:start + size])
            if not only_missing or missing[model.pk].intersection(group):
                chunks.append(Chunk(model.pk, group))
    return chunks


def _slots_with_items(study: Study, items: list[Item]) -> list[tuple[Slot, Item]]:
    by_id = {item.pk: item for item in items}
    return [(slot, by_id[slot.item_id]) for slot in item_slots(study, items)]


def chunk_slots(study: Study, chunk: Chunk) -> list[Slot]:
    """The slots of ``chunk``: items on its images, the side drawn by its model."""
    items = list(study.items.filter(image_id__in=chunk.image_ids))
    return [slot for slot in item_slots(study, items) if slot.key.model_id == chunk.model_id]


def items_link(study: Study, slots: Iterable[tuple[Slot, int]]) -> None:
    """Point each slot's item side at its stimulus id (only where still empty)."""
    with transaction.atomic():
        for slot, stimulus_id in slots:
            field = f"stimulus_{slot.side}"
            Item.objects.filter(Q(pk=slot.item_id) & Q(**{f"{field}__isnull": True})).update(**{field: stimulus_id})
