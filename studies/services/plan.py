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
``m`` classes (top-1 for single-category images; top-2 for the two-object scenes); the target
is the first of the image's categories that both models predict. Without the requirement the
target is the first category. One main item per (image, method): ``stimulus_a`` is model A's
map, ``stimulus_b`` model B's, for the same class.

**Catch and practice items** have an obvious answer and are drawn (seeded) from images with
boxes. Discrimination: the "map" is exactly the box of one category (method ``catch_box``), so
the right option is plain to see. Trust (item method ``catch``): one robot's map is exactly the
object's box, the other's lies on the background corner farthest from every object
(``catch_background``); ``correct_option`` is 0 when robot A (stimulus_a) shows the object and
1 when robot B does, chosen by the seed. Practice items are built the same way (on other
images when there are enough), so the practice round teaches the interface with answers a
worker can check. Pool sizes: ``2 * catch_trials`` catch and ``practice_trials`` practice
items, capped by the images that have boxes.

**Tie ranks** are a permutation of all items drawn from ``random.Random(study.seed)`` over the
items sorted by their natural key, so they are reproducible from the seed alone.

**Chunks** partition, for each model, the sorted ids of the images that have stimulus slots for
that model into groups of ``chunk_size``. The partition depends only on the plan, so a chunk
rerun after a crash explains exactly the same batch (byte-identical PNGs on the same machine).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Q

from studies.models import ClassifierModel, Image, Item, Prediction, Study
from studies.services.stimuli import StimulusKey, settings_hash, stimulus_settings

CATCH_ITEM_METHOD = "catch"  # trust catch/practice items (stimulus methods below)
CATCH_BOX = "catch_box"
CATCH_BACKGROUND = "catch_background"
RESERVED_OPTION_KEYS = frozenset({"display_size", "class_map", "chunk_size", "top_k", "exact"})
DEFAULT_CHUNK_SIZE = 8
DEFAULT_TOP_K = 5
MIN_DISPLAY_SIZE = 224


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


def _trust_target(image: Image, models: Sequence[ClassifierModel], predictions: dict[tuple[int, int], Prediction],
                  class_map: dict[str, int] | None, require_both_correct: bool) -> int | None:
    categories = list(image.categories or [])
    if not categories:
        return None
    classes = [class_index(models[0], c, class_map=class_map, image=image) for c in categories]
    if not require_both_correct:
        return classes[0]
    m = len(categories)
    for cls in classes:
        if all(
            (pred := predictions.get((model.pk, image.pk))) is not None and cls in list(pred.top_classes)[:m]
            for model in models
        ):
            return cls
    return None


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
    images = list(study.image_set.images.order_by("pk"))
    wanted: list[dict[str, Any]] = []
    if study.kind == Study.Kind.CLASS_DISCRIMINATION:
        model = models[0]
        for image in images:
            categories = list(dict.fromkeys(image.categories or []))
            if len(categories) != 2:
                continue
            for index, category in enumerate(categories):
                cls = class_index(model, category, class_map=class_map, image=image)
                for method in study.methods:
                    wanted.append({"role": Item.Role.MAIN, "method": method, "image": image, "target_class": cls,
                                       "target_label": category, "options": categories, "correct_option": index})
    else:
        predictions = _predictions(models, images)
        for image in images:
            cls = _trust_target(image, models, predictions, class_map, study.require_both_correct)
            if cls is None:
                continue
            label = next(c for c in image.categories if class_index(models[0], c, class_map=class_map) == cls)
            for method in study.methods:
                wanted.append({"role": Item.Role.MAIN, "method": method, "image": image, "target_class": cls,
                                   "target_label": label, "options": [], "correct_option": None})
    wanted.extend(_obvious_items(study, models[0], images, class_map))

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
                       practice=roles.count(Item.Role.PRACTICE), created=created, deleted=deleted)


def _obvious_items(study: Study, model: ClassifierModel, images: Sequence[Image],
                   class_map: dict[str, int] | None) -> list[dict[str, Any]]:
    """Catch and practice items (see the module docstring), drawn from images with boxes."""
    rng = random.Random(f"{study.seed}:obvious")
    boxed = [img for img in images if any(_box_for(img, c) for c in img.categories or [])]
    rng.shuffle(boxed)
    n_catch = min(len(boxed), 2 * study.catch_trials)
    n_practice = min(len(boxed), study.practice_trials)
    pools = [(Item.Role.CATCH, boxed[:n_catch])]
    rest = boxed[n_catch:]
    pools.append((Item.Role.PRACTICE, (rest if len(rest) >= n_practice else boxed)[:n_practice]))
    specs: list[dict[str, Any]] = []
    for role, pool in pools:
        for image in pool:
            categories = [c for c in dict.fromkeys(image.categories) if _box_for(image, c)]
            category = rng.choice(categories)
            cls = class_index(model, category, class_map=class_map, image=image)
            if study.kind == Study.Kind.CLASS_DISCRIMINATION:
                options = list(dict.fromkeys(image.categories))
                if len(options) != 2:
                    continue
                specs.append({"role": role, "method": CATCH_BOX, "image": image, "target_class": cls, "target_label": category,
                                  "options": options, "correct_option": options.index(category)})
            else:
                specs.append({"role": role, "method": CATCH_ITEM_METHOD, "image": image, "target_class": cls,
                                  "target_label": category, "options": [], "correct_option": rng.randrange(2)})
    return specs


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


def item_slots(study: Study, items: Iterable[Item] | None = None) -> list[Slot]:
    """Every stimulus slot of the study's items with the key it must be filled from."""
    models = study_models(study)
    size = display_size(study)
    exact = exact_maps(study)
    items = study.items.all() if items is None else items
    slots: list[Slot] = []
    settings_cache: dict[tuple[int, str], tuple[dict[str, Any], str]] = {}

    def key_for(item: Item, model: ClassifierModel, method: str) -> tuple[StimulusKey, dict[str, Any]]:
        if (model.pk, method) not in settings_cache:
            settings = stimulus_settings(model=model, method=method, options=method_options(study, method),
                                         display_size=size, exact=exact)
            settings_cache[(model.pk, method)] = (settings, settings_hash(settings))
        settings, digest = settings_cache[(model.pk, method)]
        return StimulusKey(item.image_id, model.pk, method, item.target_class, digest), settings

    for item in items:
        if study.kind == Study.Kind.CLASS_DISCRIMINATION:
            key, settings = key_for(item, models[0], item.method)
            slots.append(Slot(item.pk, "a", key, settings))
            continue
        if item.method == CATCH_ITEM_METHOD:
            a_method, b_method = (CATCH_BOX, CATCH_BACKGROUND) if item.correct_option == 0 else (CATCH_BACKGROUND, CATCH_BOX)
        else:
            a_method = b_method = item.method
        for side, model, method in (("a", models[0], a_method), ("b", models[1], b_method)):
            key, settings = key_for(item, model, method)
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
