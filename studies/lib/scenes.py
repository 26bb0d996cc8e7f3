"""An image as a scene: its categories, their boxes, which is left or right, and a category's class.

Pure helpers (no database, no torch) shared by the study designs (``studies.designs``), the
planner (``studies.pipeline.plan``) and the gpu runners (``studies.pipeline.gpu``), so none of
them has to import another for them. They read ``Image`` and ``ClassifierModel`` rows' fields only.

Also here: :class:`PrepareInputError`, the one error of bad preparation input (a category no
class of the model, an unreadable image, weights that do not fit), and the stimulus-method
prefixes of the catch and practice maps (``gated:``, ``gated_bg:``), which a design names when it
says what an item's maps are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from studies.models import ClassifierModel, Image

__all__ = [
    "GATED_BACKGROUND_PREFIX",
    "GATED_PREFIX",
    "SIDE_MIN_GAP",
    "PrepareInputError",
    "box_for",
    "boxed_categories",
    "categories_of",
    "class_index",
    "image_sides",
]

#: Box centres closer than this share of the width: the objects are one above the other ("centre").
SIDE_MIN_GAP = 0.1

#: Stimulus-method prefixes of the obvious (catch, practice) renderings: the real method's map
#: kept only inside the target category's box (``gated:``) or only inside the background corner
#: farthest from every object (``gated_bg:``), rendered exactly like the main stimuli.
GATED_PREFIX = "gated:"
GATED_BACKGROUND_PREFIX = "gated_bg:"


class PrepareInputError(ValueError):
    """The study's input cannot be prepared; the message names the model, layer, image or method."""


def categories_of(image: Image) -> list[str]:
    """The image's distinct categories, in the image's order."""
    return list(dict.fromkeys(image.categories or []))


def box_for(image: Image, category: str) -> dict[str, Any] | None:
    """The first box of ``category`` on the image, or None."""
    return next((b for b in image.boxes or [] if b.get("category") == category), None)


def boxed_categories(image: Image) -> list[str]:
    """The image's distinct categories that have a box, in the image's order."""
    return [c for c in categories_of(image) if box_for(image, c)]


def image_sides(image: Image, *, min_gap: float = SIDE_MIN_GAP) -> dict[str, str]:
    """Where each category of a two-category image is: ``"left"``, ``"right"`` or ``"centre"``.

    Decided by the centres of the categories' first boxes; centres closer than ``min_gap`` of the
    image width (one object above the other) are both ``"centre"``. Images without exactly two
    distinct categories, each with a box, give ``{}``.
    """
    categories = categories_of(image)
    boxes = [box_for(image, c) for c in categories]
    if len(categories) != 2 or any(b is None for b in boxes):
        return {}
    (a, b), (box_a, box_b) = categories, boxes
    ca, cb = (box_a["x0"] + box_a["x1"]) / 2, (box_b["x0"] + box_b["x1"]) / 2
    width = float(image.width or max(box_a["x1"], box_b["x1"]) or 1)
    if abs(ca - cb) < min_gap * width:
        return {a: "centre", b: "centre"}
    return {a: "left", b: "right"} if ca < cb else {a: "right", b: "left"}


def class_index(model: ClassifierModel, category: str, *, class_map: Mapping[str, int] | None = None,
                image: Image | None = None) -> int:
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
