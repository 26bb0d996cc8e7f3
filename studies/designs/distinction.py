""""Which is the correct class?" (HIVE distinction; Kim et al., ECCV 2022).

One classifier; one image; the explanations (the study method's maps) of the model's **top-4
classes** for that image, side by side in four panels, each captioned with its class name, in an
order shuffled per participant and trial. The worker picks the panel whose explanation is that of
the image's true class (chance 25%). HIVE reports it separately for images whose top-1
prediction is correct and for those whose top-1 is wrong (Grad-CAM on ImageNet: 51.2% / 30.0%).

Stored like a choice with a right answer: ``Item.options`` are the top-4 classes' names in the
model's rank order (option 0 = the top-1 class), ``correct_option`` is the true class's rank (0 when
the top-1 prediction is correct); ``target_label`` / ``target_class`` are the true category and its
class. Slot k (``stimulus_a`` .. ``stimulus_d``) is the map of option k. The displayed panel
``p<j>`` shows option ``option_order[j-1]`` (the stored, drawn order), so an image URL names a
panel, never a class or whether it is right. A response stores the option chosen (an index into
``Item.options``, as in every choice design); ``correct = chosen == correct_option``.

Only single-category images (one true class, as on ImageNet) whose true class is among the
model's top-4 predictions (``Prediction`` rows) can be scored; the others are skipped and counted
in the plan's notes. Main items are balanced like agreement's: as many wrong as right top-1
predictions, the larger group cut by a seeded sample (``"{seed}:distinction"``).

The split of the results reads, per judgment, its item's right answer (``Judgments.item_right_option``,
the item's ``correct_option`` loaded by ``selectors.judgments``): the top-1 prediction is right where
it is 0. A trial stores only its panel order (no Robot A side: one model). The analysis
(:func:`distinction_analysis`) is agreement's split table (``studies.designs.agreement``: its row class
and result cells) with chance 25%.

Catch and practice items: the true class's map in the right panel; the three other panels (captioned
with three other categories of the image set) show that map kept inside the background corner
farthest from the object (``gated_bg:``, as trust's unreasonable robot on a one-box image), so only
the right panel highlights the object.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from studies.designs.base import Design
from studies.designs.registry import register

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    import numpy as np

    from studies.analysis import DiscriminationAnalysis, ExclusionRule, Judgments, StudyAnalysis
    from studies.designs.options import StudyOptions
    from studies.models import ClassifierModel, Image, Item, Stimulus, Study

#: panels per trial (the model's top-k classes shown)
PANELS = 4
#: the stimulus slots, one per panel: slot k = the map of option k (rank k)
SLOTS = ("a", "b", "c", "d")
#: the displayed panels, in page order
SIDES = ("p1", "p2", "p3", "p4")


def split_masks(j: Judgments) -> dict[str, np.ndarray]:
    """``on_correct`` / ``on_incorrect``: the judgments of items whose top-1 prediction is right /
    wrong: the item's right answer (``j.item_right_option``, the true class's rank) is 0 / above 0;
    an item without one (-1) and a judgment without a known answer are in neither."""
    assert j.item_right_option is not None, "distinction: the split needs Judgments.item_right_option"
    known = j.answer >= 0
    return {"on_correct": known & (j.item_right_option == 0), "on_incorrect": known & (j.item_right_option > 0)}


def distinction_analysis(j: Judgments, **kwargs: Any) -> DiscriminationAnalysis:
    """``discrimination_analysis`` with chance ``1 / 4`` on every judgment, each method's row
    extended with the same statistics on the judgments of items with a correct and with an
    incorrect top-1 prediction (``*_on_correct``, ``*_on_incorrect``; same bootstrap seed): the
    row class of ``studies.designs.agreement`` (``AgreementRow``)."""
    from dataclasses import asdict, replace

    from studies.analysis import discrimination_analysis
    from studies.designs.agreement import _agreement_row_class

    kwargs = {**kwargs, "n_options": PANELS}
    whole = discrimination_analysis(j, **kwargs)
    parts = {suffix: discrimination_analysis(j.subset(mask), **kwargs) for suffix, mask in split_masks(j).items()}
    row_class = _agreement_row_class()
    rows = []
    for g, row in enumerate(whole.rows):
        extra = {f"{stat}_{suffix}": getattr(part.rows[g], stat) for suffix, part in parts.items()
                 for stat in ("n_judgments", "n_correct", "n_items", "accuracy", "wilson_low", "wilson_high",
                              "boot_low", "boot_high", "binomial_p")}  # fmt: skip
        rows.append(row_class(**asdict(row), **extra))
    return replace(whole, rows=tuple(rows))


class Distinction(Design):
    name = "distinction"
    label = "Which is the correct class? (HIVE distinction)"
    default_question = "Which is the correct class?"
    sides = SIDES
    models_from = "model"
    models_missing = "a distinction study explains one model's top-4 classes: choose the model"

    @property
    def stimulus_slots(self) -> tuple[str, ...]:
        """Four slots of the one model: slot k is the map of option k (the model's rank-k class)."""
        return SLOTS

    # ------------------------------------------------------------------ planning

    def _scorable(self, images: Sequence[Image], model: ClassifierModel,
                  options: StudyOptions) -> tuple[dict[int, list[str]], dict[str, int]]:  # fmt: skip
        """Image id -> the names of the model's top-4 classes in rank order, for the images that can be
        scored; and how many were skipped, by reason. Usable: one category (one true class), a stored
        prediction with at least 4 classes whose names map back to them, the true class among them."""
        from studies.designs.agreement import Agreement
        from studies.lib.scenes import PrepareInputError, categories_of, class_index
        from studies.models import Prediction

        rows = Prediction.objects.filter(model=model, image__in=images, weights_sha256=model.weights_sha256 or "")
        top = {row.image_id: [int(c) for c in row.top_classes or []] for row in rows}
        targets: dict[int, list[str]] = {}
        skipped = {"several categories": 0, "no top-4 prediction": 0, "true class not in the top 4": 0}
        for image in images:
            categories = categories_of(image)
            if len(categories) != 1:
                skipped["several categories"] += 1
                continue
            classes = top.get(image.pk, [])[:PANELS]
            names = [Agreement.predicted_category(model, image, cls, options.class_map) for cls in classes]
            try:
                usable = (len(classes) == PANELS and len(set(names)) == PANELS
                          and [class_index(model, n, class_map=options.class_map) for n in names] == classes)
                truth = class_index(model, categories[0], class_map=options.class_map, image=image)
            except PrepareInputError:
                usable, truth = False, -1
            if not usable:
                skipped["no top-4 prediction"] += 1
            elif truth not in classes:
                skipped["true class not in the top 4"] += 1
            else:
                targets[image.pk] = names
        return targets, skipped

    def main_targets(self, study: Study, images: Sequence[Image], models: Sequence[ClassifierModel],
                     options: StudyOptions) -> dict[int, list[str]]:  # fmt: skip
        """Image id -> the model's top-4 class names (rank order) for the scorable images
        (:meth:`_scorable`); ``{}`` when the top-1 is right on all of them or wrong on all."""
        targets, _ = self._scorable(images, models[0], options)
        images_by_id = {image.pk: image for image in images}
        rights = {self._top1_right(images_by_id[pk], names) for pk, names in targets.items()}
        return targets if rights == {True, False} else {}

    @staticmethod
    def _top1_right(image: Image, names: list[str]) -> bool:
        from studies.lib.scenes import categories_of

        return names[0] == categories_of(image)[0]

    def main_notes(self, study: Study, images: Sequence[Image], models: Sequence[ClassifierModel],
                   options: StudyOptions) -> list[str]:  # fmt: skip
        """How many images were skipped, by reason (they cannot be scored)."""
        _, skipped = self._scorable(images, models[0], options)
        return [f"distinction: {n} image(s) skipped ({reason})" for reason, n in skipped.items() if n]

    def main_items(self, study: Study, images: Sequence[Image],
                   targets: dict[int, list[str]]) -> list[tuple[Image, str, list[str], int | None]]:  # fmt: skip
        """One per image: target = its true category, options = the top-4 names (rank order), right
        answer = the true class's rank. Balanced as agreement's: the larger of the right-top-1
        (``correct_option == 0``) and wrong-top-1 groups is cut to the smaller's size (a seeded sample,
        ``random.Random(f"{study.seed}:distinction")``, kept in image order); nothing is cut when a
        group is empty."""
        from studies.designs.agreement import balanced_cut
        from studies.lib.scenes import categories_of

        questions = []
        for image in images:
            truth = categories_of(image)[0]
            names = list(targets[image.pk])
            questions.append((image, truth, names, names.index(truth)))
        return balanced_cut(questions, [q[3] == 0 for q in questions], label=f"{study.seed}:distinction")

    def no_items_message(self, study: Study) -> str:
        return (f"a distinction study needs single-category images of {study.image_set.name!r} whose true class is "
                f"among the model's top-4 predictions, some with a right and some with a wrong top-1 (the items are "
                f"balanced); none qualify (see the plan's notes for the images skipped)")  # fmt: skip

    def obvious_usable(self, image: Image) -> bool:
        """One category, boxed, in an image set of at least 4 categories (the other panels' classes)."""
        from studies.lib.scenes import boxed_categories, categories_of

        return (len(categories_of(image)) == 1 and bool(boxed_categories(image))
                and len(set(image.image_set.categories or [])) >= PANELS)  # fmt: skip

    def obvious_answer(self, image: Image, category: str, bit: int) -> tuple[list[str], int]:
        """The boxed ``category`` and the first three other categories of the image set; the right one
        stored at index ``bit`` (the worker sees a drawn order)."""
        others = [c for c in dict.fromkeys(image.image_set.categories or []) if c != category][:PANELS - 1]
        options = [*others[:bit], category, *others[bit:]]
        return options, bit

    def item_maps(self, study: Study, item: Item, models: Sequence[ClassifierModel], *, method: str, image: Image,
                  options: StudyOptions) -> list[tuple[str, ClassifierModel, str, int]]:
        """Slot k: the model's map of option k's class. Catch/practice: the right option's slot holds the
        map of the target as it is, the three others its map kept inside the background corner farthest
        from the object (``gated_bg:<method>``, one stimulus shared by them: a background gate needs the
        object's box, which only the target has)."""
        from studies.lib.scenes import GATED_BACKGROUND_PREFIX, class_index
        from studies.models import Item as ItemModel

        model = models[0]
        out = []
        for k, name in enumerate(item.options or []):
            if item.role != ItemModel.Role.MAIN:
                gated = k != item.correct_option
                out.append((SLOTS[k], model, (GATED_BACKGROUND_PREFIX + method) if gated else method, item.target_class))
                continue
            out.append((SLOTS[k], model, method, class_index(model, name, class_map=options.class_map)))
        return out

    def obvious_maps(self, item: Item, other: str | None) -> list[tuple[Stimulus, str, str | None]]:
        """The right panel's map shows the target (the other panels are kept off the object)."""
        return [(getattr(item, f"stimulus_{SLOTS[item.correct_option or 0]}"), item.target_label, None)]

    def obvious_side(self, item: Item) -> str:
        """Where the right option is stored (the worker sees a drawn order)."""
        return f"option{item.correct_option}"

    # ------------------------------------------------------------------ the worker
    # Four panels p1..p4: panel j shows option ``option_order[j-1]``'s map, captioned with its class;
    # the worker clicks one of the four (keys 1-4); drawn and scored by the defaults of ``Design``
    # (the panel order ``rng.shuffle`` of the options, no Robot A side; ``correct = option_order[choice]
    # == item.correct_option``).

    def side_slot(self, side: str, *, option_order: list[int], model_a_shown_left: bool | None) -> str | None:
        """Panel ``p<j>`` shows slot ``SLOTS[option_order[j-1]]``; any other side none."""
        if side not in SIDES or SIDES.index(side) >= len(option_order):
            return None
        k = option_order[SIDES.index(side)]
        return SLOTS[k] if 0 <= k < len(SLOTS) else None

    def side_labels(self, *, item: Item, option_order: list[int], wording: Any) -> list[str]:
        """Panel j's caption: the class name of option ``option_order[j-1]``."""
        names = [str(item.options[k]) for k in option_order if 0 <= k < len(item.options or [])]
        return (names + [""] * len(SIDES))[:len(SIDES)]

    def example_answer(self, *, item: Item, wording: Any, place: str, gradient: bool) -> tuple[str, str]:
        """The class of the panel whose map sits on the object (catch and practice items: the other
        panels highlight only the background)."""
        if item.correct_option is None or not item.options:
            return "", ""
        answer = str(item.options[item.correct_option])
        where = (f"only the “{answer}” panel stands out from the grey on {place}" if gradient
                 else f"only in the “{answer}” panel do the warm colours (yellow to red) sit on {place}")
        why = f"Each panel explains one class. {where[0].upper()}{where[1:]}; the others highlight the background."
        return answer, why

    def answer_schema(self) -> dict[str, Any]:
        """An index into the four displayed panels: 0..3."""
        return {"type": "integer", "minimum": 0, "maximum": PANELS - 1}

    def trial_schema(self) -> dict[str, Any]:
        schema = super().trial_schema()
        schema["answer"] = ("`distinction`: `choice` = 0-based index of the panel clicked, in `images` order "
                            "(`options` lists the panels' classes in the same order)")
        return schema

    # ------------------------------------------------------------------ results

    analysis_name = "distinction"
    score_caption = "accuracy (all items)"
    results_template = "studies/designs/distinction.html"
    validity_not_applicable = {
        "robot_a_side": "one model per trial",
        "blind_observer": "distinction: four classes of one picture; no option names a position on it",
    }  # fmt: skip
    position_balance = "target"
    target_name = "true class"
    target_description = "the image's true class (one of the four panels)"

    def analysis_options(self, *, n_options: int) -> dict[str, Any]:
        return {}

    def analyse(self, judgments: Judgments, rules: Sequence[ExclusionRule], *, n_options: int = PANELS,
                **kwargs: Any) -> StudyAnalysis:  # fmt: skip
        """:func:`distinction_analysis` on every worker and without the excluded ones."""
        from studies import analysis

        return analysis.analyse_both(judgments, rules, table=distinction_analysis, **kwargs)

    def results_row(self, row: Any) -> dict[str, Any]:
        """Agreement's cells (``studies.designs.agreement.Agreement.results_row``): all items, then the
        items with a correct and with an incorrect top-1 prediction."""
        from studies.designs.registry import design_for

        return design_for("agreement").results_row(row)

    # ------------------------------------------------------------------ the simulated observer

    def observer_read(self, *, stimuli: list[bytes], options: list[str], class_label: str,
                      fraction: Callable[[bytes, str], float], rng: np.random.Generator,
                      noise: float, weak: float, strong: float) -> dict[str, int]:  # fmt: skip
        """The panel whose map puts the most salience on the object of its own caption's class
        (``fraction(panel k, option k) + N(0, noise)``; 0 for a class the picture lacks)."""
        perceived = [fraction(png, option) + rng.normal(0, noise) for png, option in zip(stimuli, options, strict=False)]
        return {"option": int(max(range(len(perceived)), key=perceived.__getitem__))}

    def observer_synthetic(self, *, correct_option: int | None, quality: float | None,
                           rng: np.random.Generator) -> dict[str, int | bool | None]:  # fmt: skip
        """Right with probability ``quality`` (careless: 0.25), one ``rng.random()`` draw; a wrong answer
        is one of the three other options, one ``rng.integers(3)`` draw."""
        assert correct_option is not None, "distinction: a synthetic answer needs the right option"
        right = bool(rng.random() < (1 / PANELS if quality is None else quality))
        chosen = correct_option if right else [k for k in range(PANELS) if k != correct_option][int(rng.integers(PANELS - 1))]
        return {"chosen_option": chosen, "correct": right, "score_model_a": None}


DESIGN = register(Distinction())
