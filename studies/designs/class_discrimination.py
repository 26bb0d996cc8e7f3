""""What do you see?" (Selvaraju et al., Grad-CAM, section 5.1: class discrimination).

One classifier; an image with exactly two categories; the map of one of them; the worker picks
which of the two categories the highlighted evidence shows. Right = the category explained.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from studies.designs.base import Design
from studies.designs.registry import register

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from studies.designs.options import StudyOptions
    from studies.models import ClassifierModel, Image, Item, Study


class ClassDiscrimination(Design):
    name = "class_discrimination"
    label = "What do you see? (class discrimination)"
    default_question = "What do you see? Which of the two categories does the highlighted evidence show?"
    sides = ("main",)
    models_from = "model"
    models_missing = "a discrimination study explains one model: choose it"

    # ------------------------------------------------------------------ planning
    # Main items: every image with exactly two categories, one item per (category, method); the
    # stimulus is the method's map of that category's class, the options are the two categories
    # (in the image's order; the worker flow shuffles them) and the right one is the explained one.
    # Catch/practice candidates: images with two categories, one of them boxed; the map of the
    # target; the right option is the target. (main_items, obvious_answer, item_maps, obvious_maps
    # and obvious_side: the defaults of ``Design``.)

    def main_targets(self, study: Study, images: Sequence[Image], models: Sequence[ClassifierModel],
                     options: StudyOptions) -> dict[int, list[str]]:
        """Every image with exactly two distinct categories, with both."""
        from studies.lib.scenes import categories_of

        return {image.pk: categories_of(image) for image in images if len(categories_of(image)) == 2}

    def no_items_message(self, study: Study) -> str:
        return f"no image of {study.image_set.name!r} has exactly two categories"

    def obvious_usable(self, image: Image) -> bool:
        """Two distinct categories, at least one of them boxed."""
        from studies.lib.scenes import boxed_categories, categories_of

        return len(categories_of(image)) == 2 and bool(boxed_categories(image))

    # ------------------------------------------------------------------ the worker
    # One picture; the worker picks one of the two options, shown in the drawn order (keys 1 and 2).
    # Scored and graded by the defaults of ``Design``: ``correct = option_order[choice] == item.correct_option``.

    hint_key = "discrimination_hint"

    def example_answer(self, *, item: Item, wording: Any, place: str, gradient: bool) -> tuple[str, str]:
        """The option explained, and where the map's evidence sits: only the object stands out from the
        grey (a gradient image), or the warm colours sit on it (an overlay). None without a right option."""
        if item.correct_option is None or not item.options:
            return "", ""
        answer = str(item.options[item.correct_option])
        if gradient:
            why = (f"Only {place} stands out from the plain grey; everywhere else the picture is grey. "
                   f"So the evidence shows “{answer}”.")
        else:
            why = (f"The warm colours (yellow to red) sit on {place}; the rest of the picture stays blue. "
                   f"So the evidence shows “{answer}”.")
        return answer, why

    def answer_schema(self) -> dict[str, Any]:
        """An index into the two displayed options: 0 or 1."""
        return {"type": "integer", "minimum": 0, "maximum": 1}

    def trial_schema(self) -> dict[str, Any]:
        schema = super().trial_schema()
        schema["properties"]["options"]["description"] = "discrimination: the two categories, in the order shown"
        return schema

    # ------------------------------------------------------------------ results
    # Scored by accuracy (the share of judgments that chose the explained category), chance
    # ``1 / n_options``: the defaults of ``Design``, the choice with one right option.

    analysis_name = "discrimination"
    validity_not_applicable = {"robot_a_side": "discrimination"}

    # ------------------------------------------------------------------ the simulated observer


DESIGN = register(ClassDiscrimination())
