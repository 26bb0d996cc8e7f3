""""Does the highlighted evidence show <category>?" (a test-only design: yes or no).

A yes/no variant of "What do you see?". One classifier; an image with exactly two categories;
the map of one of them (the item's target); the page names one of the two categories and the
worker answers yes or no. Right = yes when the map's target is the named category.

Stored like a choice: ``Item.options`` is ``["yes", "no"]`` and ``correct_option`` 0 (yes: the
page names the target) or 1 (no: the page names the image's other category), so the named
category is ``target_label`` or the other one, read back from the item; nothing else is stored.
Main items alternate yes and no over the (image, target) pairs in order; catch and practice
items take the planner's balanced ``bit``.

This module is the whole design (tests/studies/designs/test_yes_no.py proves the contract with
it): it registers itself on import and its template is ``studies/designs/yes_no.html`` beside
it, under ``tests/studies/designs/templates``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from studies.designs.base import Design
from studies.designs.registry import register

if TYPE_CHECKING:
    import numpy as np

    from studies.designs.options import StudyOptions
    from studies.models import ClassifierModel, Image, Item, Study

YES, NO = "yes", "no"


def named_category(item: Item) -> str:
    """The category the page names: the target when the right answer is yes, else the image's other one."""
    if item.correct_option == 0:
        return item.target_label
    others = [c for c in dict.fromkeys(item.image.categories or []) if c != item.target_label]
    return others[0] if others else item.target_label


class YesNo(Design):
    name = "yes_no"
    label = "Does the highlighted evidence show it? (yes/no)"
    default_question = "Does the highlighted evidence show the category named below?"
    sides = ("main",)
    models_from = "model"
    models_missing = "a yes/no study explains one model: choose it"

    # ------------------------------------------------------------------ planning

    def main_targets(self, study: Study, images: Sequence[Image], models: Sequence[ClassifierModel],
                     options: StudyOptions) -> dict[int, list[str]]:  # fmt: skip
        """Every image with exactly two distinct categories, with both."""
        from studies.lib.scenes import categories_of

        return {image.pk: categories_of(image) for image in images if len(categories_of(image)) == 2}

    def main_items(self, study: Study, images: Sequence[Image],
                   targets: dict[int, list[str]]) -> list[tuple[Image, str, list[str], int | None]]:  # fmt: skip
        """One per (image, target); the answer alternates yes (the page names the target) and no."""
        pairs = [(image, category) for image in images for category in targets[image.pk]]
        return [(image, category, [YES, NO], k % 2) for k, (image, category) in enumerate(pairs)]

    def no_items_message(self, study: Study) -> str:
        return f"no image of {study.image_set.name!r} has exactly two categories"

    def obvious_usable(self, image: Image) -> bool:
        """Two distinct categories, at least one of them boxed."""
        from studies.lib.scenes import boxed_categories, categories_of

        return len(categories_of(image)) == 2 and bool(boxed_categories(image))

    def obvious_answer(self, image: Image, category: str, bit: int) -> tuple[list[str], int]:
        """Yes (``bit`` 0: the page names the target) or no (1: it names the other category)."""
        return [YES, NO], bit

    # ------------------------------------------------------------------ the worker
    # A choice between "yes" and "no" in a drawn order (the defaults of ``draw_choices``,
    # ``answer_range``, ``answer_score``, ``practice_feedback``: right = the item's right option);
    # the line under the map names the category asked about.

    def trial_content(self, *, item: Item, option_order: list[int], wording: Any) -> dict[str, Any]:
        """The answers in the drawn order and, under the map, the category asked about."""
        return {**super().trial_content(item=item, option_order=option_order, wording=wording),
                "predicted": f"The category: {named_category(item)}"}  # fmt: skip

    def trial_schema(self) -> dict[str, Any]:
        return {
            "answer": f"`{self.name}`: `choice` = 0-based index into `options` (yes / no)",
            "properties": {"predicted": {"type": "string", "description": "the category the question asks about"}},
        }

    # ------------------------------------------------------------------ results

    # ------------------------------------------------------------------ the simulated observer

    def observer_read(self, *, stimuli: list[bytes], options: list[str], class_label: str,
                      fraction: Callable[[bytes, str], float], rng: np.random.Generator,
                      noise: float, weak: float, strong: float) -> dict[str, int]:  # fmt: skip
        """A heatmap reader answers yes when more than half the map's salience (plus noise) lies on
        the named category (``class_label``), else no; the option index is where that answer is shown."""
        says_yes = fraction(stimuli[0], class_label) + rng.normal(0, noise) > 0.5
        return {"option": options.index(YES if says_yes else NO)}


DESIGN = register(YesNo())
