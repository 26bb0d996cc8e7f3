"""Planning: which items a study shows, which stimuli they need, and how work is chunked.

Pure Django (no torch): the web process may import it.

**Class discrimination** ("What do you see?", Selvaraju et al. 2017 §5.1): every image with
exactly two categories gives one main item per (category, method); the stimulus is the
method's map for that category's class, the options are the two categories (in the image's
order; the worker flow shuffles them per assignment) and ``correct_option`` is the index of
the explained one.

**Trust** ("Which robot is more reasonable?", §5.2): an image is used when both models of the
pair predict its true class, as in the paper (``Study.require_both_correct``). With ``m``
categories on an image, a model "predicts" category ``c`` when ``c``'s class is among its top
``m`` classes (top-1 for single-category images; top-2 for the two-object scenes). When more
than one category qualifies, the target is the one on the side (left/right) that has been the
target less often so far (images in id order; ties by the seed), so "the named object is
always on the left" cannot stand in for reading the maps. Without the requirement every
category qualifies. One main item per (image, method): ``stimulus_a`` is model A's map,
``stimulus_b`` model B's, for the same class.

**Catch, practice and example items** are real maps from the same pipeline as the main items:
the study's methods, the same ``explain`` call, the same renderer, nothing drawn by hand, so
they cannot be told from main trials by their look. They are planned as *candidates*, every
(image, boxed category, method) of the images set aside for them; once every map exists
(the preparation's last step), :func:`obvious_select` keeps those whose maps give the answer
most plainly (:func:`obvious_share`: the share of the map's salience, read back from the PNG,
on the right object's box rather than the other object's) and deletes the rest.
Discrimination: the map of the target category; the right option is that category. Trust
(``correct_option`` 0 = robot A is the reasonable one, balanced): the reasonable robot's map of
the target, the other robot's map of the image's *other* category (on an image with one box:
its map of the target kept inside the background corner farthest from the object, stimulus
method ``gated_bg:<method>``).

* **Practice pool**: ``practice_trials * practice_attempts + 1`` items kept (the worked example
  of the instructions is the pool's first item; every attempt can then show items never shown
  before, ``studies.services.participation.practice_draw``), on images that no main item uses.
* **Catch pool**: ``2 * catch_trials`` items kept, on other images than the practice (so a
  catch trial is not recognisable as "the practice picture").
* Images for both come first from those the main items do not take (trust: those the models do
  not both get right), then are *reserved* from the main set: at most a third of it, chosen so
  that the main items' layout stays as balanced as it was (:func:`layout_balance`); practice
  first (its feedback shows answers, so never on a main image when it can be helped), catch one
  image when two or more can be reserved. With too few images they share images with main
  items (a catch item then shows a main item's picture).
* The kept items alternate sides (discrimination: the target's left/right; trust: robot A/B),
  cycle through the study's methods, and spread over (image, target) pairs.

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

from studies.models import ClassifierModel, Image, Item, Prediction, Stimulus, Study
from studies.services.stimuli import (
    DEFAULT_OVERLAY_BASE,
    GATED_BACKGROUND_PREFIX,
    OVERLAY_BASES,
    StimulusKey,
    base_method,
    box_mask,
    rendering_of,
    settings_hash,
    stimulus_salience,
    stimulus_settings,
)

RESERVED_OPTION_KEYS = frozenset({"display_size", "class_map", "chunk_size", "top_k", "exact", "overlay_base"})
DEFAULT_CHUNK_SIZE = 8
DEFAULT_TOP_K = 5
MIN_DISPLAY_SIZE = 224
#: At most this share of the main images is reserved for the practice pool.
MAX_RESERVED_SHARE = 1 / 3
#: Box centres closer than this share of the width: the objects are one above the other ("centre").
SIDE_MIN_GAP = 0.1


class PrepareInputError(ValueError):
    """The study's input cannot be prepared; the message names the model, layer, image or method."""


@dataclass(frozen=True)
class Slot:
    """One stimulus an item needs: which side (``a``/``b``) and under which key."""

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


def study_models(study: Study) -> list[ClassifierModel]:
    """The models whose maps the study shows: the model, or the pair's A then B."""
    if study.kind == Study.Kind.TRUST:
        pair = study.model_pair
        return [pair.model_a, pair.model_b]
    return [study.model]


def method_options(study: Study, method: str) -> dict[str, Any]:
    """Per-method options for ``explain`` from ``Study.explainer_options`` (reserved keys excluded)."""
    value = (study.explainer_options or {}).get(method, {})
    return dict(value) if isinstance(value, dict) else {}


def exact_maps(study: Study) -> bool:
    """``explainer_options["exact"]``: compute the maps on the model exactly as given
    (``explain(..., fast=False)``) instead of the engine's fast copy, which agrees to float
    rounding (docs/explainers.md). Part of the stimulus key, so switching it makes new stimuli."""
    return bool((study.explainer_options or {}).get("exact"))


def overlay_base(study: Study) -> str:
    """``explainer_options["overlay_base"]``: what a colour overlay is blended with, ``"gray"`` (the
    picture's luminance, default: the map is the only colour on screen) or ``"color"`` (the picture
    as it is, the paper's look). Part of the stimulus key."""
    value = (study.explainer_options or {}).get("overlay_base") or DEFAULT_OVERLAY_BASE
    if value not in OVERLAY_BASES:
        raise PrepareInputError(f"explainer_options['overlay_base'] must be one of {OVERLAY_BASES}, got {value!r}")
    return str(value)


def display_size(study: Study) -> int:
    """Side of the rendered stimuli: ``explainer_options["display_size"]`` or the largest model input (>= 224)."""
    configured = (study.explainer_options or {}).get("display_size")
    if configured:
        return int(configured)
    return max([MIN_DISPLAY_SIZE] + [m.input_size for m in study_models(study)])


def chunk_size(study: Study) -> int:
    return int((study.explainer_options or {}).get("chunk_size") or DEFAULT_CHUNK_SIZE)


def class_index(model: ClassifierModel, category: str, *, class_map: dict[str, int] | None = None, image: Image | None = None) -> int:
    """Class id of ``category`` for ``model``: ``class_map`` first, then a case-insensitive name match.

    Raises:
        PrepareInputError: naming the category, the image and the model.
    """
    if class_map and category in class_map:
        return int(class_map[category])
    names = [str(n).lower() for n in model.class_names or []]
    try:
        return names.index(category.lower())
    except ValueError:
        where = f" of image {image.original_name!r}" if image is not None else ""
        raise PrepareInputError(
            f"category {category!r}{where} is not a class of model {model.name!r} "
            f"({len(names)} classes); add it to explainer_options['class_map']"
        ) from None


# --- layout -------------------------------------------------------------------------------


def image_sides(image: Image, *, min_gap: float = SIDE_MIN_GAP) -> dict[str, str]:
    """Where each category of a two-category image is: ``"left"``, ``"right"`` or ``"centre"``.

    Decided by the centres of the categories' first boxes; centres closer than ``min_gap`` of the
    image width (one object above the other) are both ``"centre"``. Images without exactly two
    distinct categories, each with a box, give ``{}``.
    """
    categories = list(dict.fromkeys(image.categories or []))
    boxes = [_box_for(image, c) for c in categories]
    if len(categories) != 2 or any(b is None for b in boxes):
        return {}
    (a, b), (box_a, box_b) = categories, boxes
    ca, cb = (box_a["x0"] + box_a["x1"]) / 2, (box_b["x0"] + box_b["x1"]) / 2
    width = float(image.width or max(box_a["x1"], box_b["x1"]) or 1)
    if abs(ca - cb) < min_gap * width:
        return {a: "centre", b: "centre"}
    return {a: "left", b: "right"} if ca < cb else {a: "right", b: "left"}


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


class _SideBalancer:
    """Picks, among candidate categories, the one whose side has been picked less (ties: seeded)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.counts: Counter[str] = Counter()

    def pick(self, image: Image, candidates: Sequence[str]) -> str:
        sides = image_sides(image)
        order = list(candidates)
        self.rng.shuffle(order)
        choice = min(order, key=lambda c: self.counts[sides.get(c, "centre")] if sides.get(c) in ("left", "right") else 0)
        self.counts[sides.get(choice, "centre")] += 1
        return choice


# --- planning -----------------------------------------------------------------------------


def _trust_categories(image: Image, models: Sequence[ClassifierModel], predictions: dict[tuple[int, int], Prediction],
                      class_map: dict[str, int] | None, require_both_correct: bool) -> list[str]:
    """The image's categories the trust study may ask about (both models predict them, when required)."""
    categories = list(dict.fromkeys(image.categories or []))
    if not require_both_correct:
        return categories
    m = len(categories)
    qualifying = []
    for category in categories:
        cls = class_index(models[0], category, class_map=class_map, image=image)
        if all((pred := predictions.get((model.pk, image.pk))) is not None and cls in list(pred.top_classes)[:m]
               for model in models):
            qualifying.append(category)
    return qualifying


def _predictions(models: Sequence[ClassifierModel], images: Sequence[Image]) -> dict[tuple[int, int], Prediction]:
    found: dict[tuple[int, int], Prediction] = {}
    for model in models:
        rows = Prediction.objects.filter(model=model, image__in=images, weights_sha256=model.weights_sha256 or "")
        for row in rows:
            found[(model.pk, row.image_id)] = row
    return found


def _box_for(image: Image, category: str) -> dict[str, Any] | None:
    return next((b for b in image.boxes or [] if b.get("category") == category), None)


def study_plan(*, study: Study) -> PlanSummary:
    """Create (or keep) the study's items; delete planned items that the rules no longer produce.

    Idempotent: items are matched on their unique key (study, role, method, image, target), so a
    second call creates nothing. Raises :class:`PrepareInputError` for unmappable categories.
    """
    models = study_models(study)
    class_map = (study.explainer_options or {}).get("class_map") or None
    overlay_base(study)  # a bad value fails here, naming the option
    images = list(study.image_set.images.order_by("pk"))
    # main candidates: image -> the categories a main item may target
    main_targets: dict[int, list[str]] = {}
    if study.kind == Study.Kind.CLASS_DISCRIMINATION:
        for image in images:
            categories = list(dict.fromkeys(image.categories or []))
            if len(categories) == 2:
                main_targets[image.pk] = categories
    else:
        predictions = _predictions(models, images)
        for image in images:
            qualifying = _trust_categories(image, models, predictions, class_map, study.require_both_correct)
            if qualifying:
                main_targets[image.pk] = qualifying
    obvious = _obvious_plan(study, models[0], images, main_targets, class_map)
    main_images = [image for image in images if image.pk in main_targets and image.pk not in obvious.reserved]

    wanted: list[dict[str, Any]] = []
    if study.kind == Study.Kind.CLASS_DISCRIMINATION:
        model = models[0]
        for image in main_images:
            categories = main_targets[image.pk]
            for index, category in enumerate(categories):
                cls = class_index(model, category, class_map=class_map, image=image)
                for method in study.methods:
                    wanted.append({"role": Item.Role.MAIN, "method": method, "image": image, "target_class": cls,
                                   "target_label": category, "options": categories, "correct_option": index})
    else:
        balancer = _SideBalancer(random.Random(f"{study.seed}:trust-target"))
        for image in main_images:
            label = balancer.pick(image, main_targets[image.pk])
            cls = class_index(models[0], label, class_map=class_map, image=image)
            for method in study.methods:
                wanted.append({"role": Item.Role.MAIN, "method": method, "image": image, "target_class": cls,
                               "target_label": label, "options": [], "correct_option": None})
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
                item.stimulus_a = item.stimulus_b = None
                item.save(update_fields=[*defaults, "stimulus_a", "stimulus_b"])
            keep.add(item.pk)
        stale = study.items.exclude(pk__in=keep).filter(assignments__isnull=True)
        deleted = stale.count()
        stale.delete()
        _assign_tie_ranks(study)
    roles = [spec["role"] for spec in wanted]
    return PlanSummary(main=roles.count(Item.Role.MAIN), catch=roles.count(Item.Role.CATCH),
                       practice=roles.count(Item.Role.PRACTICE), created=created, deleted=deleted,
                       reserved=len(obvious.reserved), practice_shared=obvious.practice_shared,
                       layout=layout_balance(main_images))


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


def _boxed_categories(image: Image) -> list[str]:
    return [c for c in dict.fromkeys(image.categories or []) if _box_for(image, c)]


def _obvious_plan(study: Study, model: ClassifierModel, images: Sequence[Image], main_targets: dict[int, list[str]],
                  class_map: dict[str, int] | None) -> _ObviousPlan:
    """Practice and catch *candidates* (module docstring), and the main images reserved for them.

    Every (image, boxed category, method) of the practice images is a practice candidate, and of
    the catch images a catch candidate; :func:`obvious_select` keeps the best of them once their
    maps exist.
    """
    rng = random.Random(f"{study.seed}:obvious")
    discrimination = study.kind == Study.Kind.CLASS_DISCRIMINATION

    def usable(image: Image) -> bool:
        if discrimination:
            return len(list(dict.fromkeys(image.categories or []))) == 2 and bool(_boxed_categories(image))
        return bool(_boxed_categories(image))

    boxed = [image for image in images if usable(image)]
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

    methods = list(dict.fromkeys(study.methods or []))
    specs: list[dict[str, Any]] = []
    for role, pool, count in ((Item.Role.PRACTICE, practice_images, n_practice), (Item.Role.CATCH, catch_images, n_catch)):
        if not count:
            continue
        candidates = [(image, category, method) for image in pool for category in _boxed_categories(image)
                      for method in methods]
        robots = _balanced_bits(len(candidates), random.Random(f"{study.seed}:{role}-robots"))
        for (image, category, method), robot in zip(candidates, robots, strict=True):
            cls = class_index(model, category, class_map=class_map, image=image)
            if discrimination:
                options = list(dict.fromkeys(image.categories))
                specs.append({"role": role, "method": method, "image": image, "target_class": cls, "target_label": category,
                              "options": options, "correct_option": options.index(category)})
            else:
                specs.append({"role": role, "method": method, "image": image, "target_class": cls,
                              "target_label": category, "options": [], "correct_option": robot})
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
    if against is None or _box_for(image, against) is None:
        total = float(salience.sum())
        return mass_on / total if total > 0 else 0.0
    other = box_mask(image, against, size) & ~inside
    mass_other = float(salience[other].sum())
    return mass_on / (mass_on + mass_other) if mass_on + mass_other > 0 else 0.0


def obvious_share(study: Study, item: Item, cache: dict[int, Any] | None = None) -> float:
    """How plainly a catch/practice item's maps give its right answer (0..1, from the PNGs).

    Discrimination: the share of the map's salience on the target's box out of both objects'
    boxes. Trust: the smaller of that share for the reasonable robot's map (on the target) and
    for the other robot's map (on the other object, or on the background). Salience is read from
    the rendered pixels (:func:`studies.services.stimuli.stimulus_salience`), as a worker sees it.
    """
    cache = {} if cache is None else cache
    image = item.image
    other = next((c for c in _boxed_categories(image) if c != item.target_label), None)
    if study.kind == Study.Kind.CLASS_DISCRIMINATION:
        return _share(_salience_in(item.stimulus_a, cache), image, item.target_label, other)
    right, wrong = (item.stimulus_a, item.stimulus_b) if item.correct_option == 0 else (item.stimulus_b, item.stimulus_a)
    right_share = _share(_salience_in(right, cache), image, item.target_label, other)
    if other is None:
        return right_share
    return min(right_share, _share(_salience_in(wrong, cache), image, other, item.target_label))


def obvious_select(*, study: Study) -> ObviousSelection:
    """Keep the practice and catch candidates whose maps give the answer most plainly; delete the rest.

    Runs when every stimulus slot is filled (the preparation's last step). Per role it keeps
    :func:`practice_pool_size` / :func:`catch_pool_size` items, one at a time, preferring in this
    order: a share of at least :data:`OBVIOUS_MIN_SHARE` (:func:`obvious_share`); the side that
    has been kept less (discrimination: the target's left/right; trust: robot A or B); an
    (image, target) not kept yet; the next method of the study's methods in a seeded cycle (so
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
    methods = list(dict.fromkeys(study.methods or []))
    random.Random(f"{study.seed}:obvious-methods").shuffle(methods)
    for role, need in ((Item.Role.PRACTICE, practice_pool_size(study)), (Item.Role.CATCH, catch_pool_size(study))):
        items = list(study.items.filter(role=role).select_related("image", "stimulus_a", "stimulus_b")
                     .annotate(used=Exists(Assignment.objects.filter(item=OuterRef("pk")))).order_by("tie_rank", "pk"))
        if not items:
            continue
        shares = {item.pk: obvious_share(study, item, cache) for item in items}
        chosen = [item for item in items if item.used]
        pool = [item for item in items if not item.used]

        def side(item: Item) -> str:
            if study.kind == Study.Kind.TRUST:
                return f"robot{item.correct_option}"
            return image_sides(item.image).get(item.target_label, "centre")

        while len(chosen) < need and pool:
            sides = Counter(side(item) for item in chosen)
            pairs = {(item.image_id, item.target_class) for item in chosen}
            want_method = methods[len(chosen) % len(methods)] if methods else None
            best = max(pool, key=lambda c: (shares[c.pk] >= OBVIOUS_MIN_SHARE, -sides[side(c)],
                                            (c.image_id, c.target_class) not in pairs, c.method == want_method,
                                            shares[c.pk]))
            chosen.append(best)
            pool.remove(best)
        if pool:
            deleted += Item.objects.filter(pk__in=[item.pk for item in pool], assignments__isnull=True).delete()[0]
        kept[role] = len(chosen)
        below[role] = sum(shares[item.pk] < OBVIOUS_MIN_SHARE for item in chosen)
        lowest[role] = round(min((shares[item.pk] for item in chosen), default=1.0), 3)
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


def _wrong_side(model: ClassifierModel, method: str, item: Item, image: Image,
                class_map: dict[str, int] | None) -> tuple[str, int]:
    """The unreasonable robot of a trust catch/practice item: its real map of the image's other
    boxed category; or, on an image with one box, its map of the target kept inside the
    background corner farthest from the object (``gated_bg:``)."""
    others = [c for c in dict.fromkeys(image.categories or []) if c != item.target_label and _box_for(image, c)]
    if others:
        return method, class_index(model, others[0], class_map=class_map, image=image)
    return GATED_BACKGROUND_PREFIX + method, item.target_class


def item_slots(study: Study, items: Iterable[Item] | None = None) -> list[Slot]:
    """Every stimulus slot of the study's items with the key it must be filled from."""
    models = study_models(study)
    size = display_size(study)
    exact = exact_maps(study)
    base = overlay_base(study)
    class_map = (study.explainer_options or {}).get("class_map") or None
    items = list(study.items.all() if items is None else items)
    slots: list[Slot] = []
    settings_cache: dict[tuple[int, str], tuple[dict[str, Any], str]] = {}
    trust_obvious = [i for i in items if i.role != Item.Role.MAIN and study.kind == Study.Kind.TRUST]
    images = Image.objects.in_bulk({i.image_id for i in trust_obvious}) if trust_obvious else {}

    def key_for(item: Item, model: ClassifierModel, method: str, target: int) -> tuple[StimulusKey, dict[str, Any]]:
        if (model.pk, method) not in settings_cache:
            settings = stimulus_settings(model=model, method=method,
                                         options=method_options(study, base_method(method)),
                                         display_size=size, exact=exact, overlay_base=base)
            settings_cache[(model.pk, method)] = (settings, settings_hash(settings))
        settings, digest = settings_cache[(model.pk, method)]
        return StimulusKey(item.image_id, model.pk, method, target, digest), settings

    for item in items:
        if item.role == Item.Role.MAIN:
            sides = [("a", models[0], item.method, item.target_class)]
            if study.kind == Study.Kind.TRUST:
                sides.append(("b", models[1], item.method, item.target_class))
        elif study.kind == Study.Kind.CLASS_DISCRIMINATION:
            sides = [("a", models[0], obvious_base_method(study, item), item.target_class)]
        else:
            method = obvious_base_method(study, item)
            right = (method, item.target_class)
            right_a = item.correct_option != 1
            a_method, a_target = right if right_a else _wrong_side(models[0], method, item, images[item.image_id], class_map)
            b_method, b_target = _wrong_side(models[1], method, item, images[item.image_id], class_map) if right_a else right
            sides = [("a", models[0], a_method, a_target), ("b", models[1], b_method, b_target)]
        for side, model, method, target in sides:
            key, settings = key_for(item, model, method, target)
            slots.append(Slot(item.pk, side, key, settings))
    return slots


def slot_counts(study: Study) -> tuple[int, int]:
    """``(filled, total)`` stimulus slots of the study's items (the job's done/total)."""
    per_item = 2 if study.kind == Study.Kind.TRUST else 1
    items = study.items.all()
    total = items.count() * per_item
    filled = items.filter(stimulus_a__isnull=False).count()
    if per_item == 2:
        filled += items.filter(stimulus_b__isnull=False).count()
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
    size = chunk_size(study)
    chunks: list[Chunk] = []
    for model in study_models(study):
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
