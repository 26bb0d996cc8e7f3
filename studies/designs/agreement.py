""""Is the model's prediction correct?" (HIVE agreement; Kim et al., ECCV 2022).

One classifier; one image, the model's top-1 prediction ("The model predicts: <category>") and
the map of that predicted class; the worker rates on HIVE's 4-point confidence scale whether the
prediction is correct ("Definitely incorrect", "Probably incorrect", "Probably correct",
"Definitely correct"). The question is the study's (default :attr:`Agreement.default_question`).

Stored like a choice with a right answer: ``Item.options`` is ``["incorrect", "correct"]``,
``correct_option`` 1 when the prediction is right (the predicted category is one of the image's
categories), 0 when it is wrong; ``target_label`` / ``target_class`` are the predicted category
and its class. A response stores the scale position clicked (0..3) as ``chosen_option``; the
worker judged the prediction correct iff the position is >= 2, and ``correct`` = that judgement
agrees with the truth.

Main items are balanced: as many wrong as right predictions (the larger group is cut to the
smaller one's size, seeded by ``"{study.seed}:agreement"``), so "always correct" scores 50%.
Results: accuracy per method on all items and separately on the items with correct and with
incorrect predictions (HIVE reports those two; Grad-CAM on CUB: 72.4% / 32.8%), each with the
Wilson and two-way cluster-bootstrap intervals of ``studies.analysis.discrimination_analysis``;
chance is 50%.

Simulated observers: a ``heatmap_reader`` looks at the map of the predicted class and says
"correct" when most of its salience sits on an object of the predicted category (the map looks
right: the evidence is where the named thing is), and "incorrect" otherwise; it is sure
("Definitely") when the share is far from one half (by more than its ``strong`` threshold). A
``random`` observer picks one of the four answers with equal probability and scores 50% on
both kinds of item; a straight-liner always clicks "Definitely incorrect" (100% on incorrect,
0% on correct predictions, 50% overall thanks to the balance).
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
    from studies.models import ClassifierModel, Image, Item, Study

#: ``Item.options``: index 0 = the prediction is wrong, 1 = it is right (``correct_option``)
INCORRECT, CORRECT = "incorrect", "correct"
#: HIVE's confidence scale, in page order; positions 2 and 3 judge the prediction correct
SCALE = ("Definitely incorrect", "Probably incorrect", "Probably correct", "Definitely correct")
#: the line under the map (``{label}`` = the predicted category)
PREDICTED = "The model predicts: {label}"
#: the split of the results: suffix of the row fields, and the subset's name
SPLITS = (("on_correct", "correct predictions"), ("on_incorrect", "incorrect predictions"))


def judged_correct(choice: int) -> bool:
    """Whether a scale position (0..3) says the prediction is correct (``Probably`` / ``Definitely correct``)."""
    return choice >= len(SCALE) // 2


def _split_fields() -> list[str]:
    return [f"{stat}_{suffix}" for suffix, _ in SPLITS
            for stat in ("n_judgments", "n_correct", "n_items", "accuracy", "wilson_low", "wilson_high",
                         "boot_low", "boot_high", "binomial_p")]  # fmt: skip


def _agreement_row_class() -> type:
    """:class:`studies.analysis.DiscriminationRow` plus the accuracy on correct and on incorrect
    predictions (made once, lazily: ``studies.analysis`` imports numpy and scipy)."""
    global _AgreementRow
    if _AgreementRow is None:
        from dataclasses import make_dataclass

        from studies.analysis import DiscriminationRow

        cls = make_dataclass("AgreementRow", [(name, object) for name in _split_fields()],
                             bases=(DiscriminationRow,), frozen=True)  # fmt: skip
        cls.__module__ = __name__
        cls.__qualname__ = "AgreementRow"
        _AgreementRow = cls
    return _AgreementRow


_AgreementRow: type | None = None


def __getattr__(name: str) -> Any:  # the row class, by name (pickling a cached result finds it here)
    if name == "AgreementRow":
        return _agreement_row_class()
    raise AttributeError(name)


def prediction_was_correct(j: Judgments) -> np.ndarray:
    """Per judgment, whether its item shows a correct prediction, read back from the answer
    (``answer`` 1 = judged correct, see :meth:`Agreement.judgment_answers`) and the ``correct``
    flag: the prediction is right iff the worker judged it correct and was right, or judged it
    wrong and was wrong. Judgments with an unknown answer are neither (see :func:`split_masks`)."""
    assert j.correct is not None
    assert j.answer is not None
    return (j.answer == 1) == j.correct


def split_masks(j: Judgments) -> dict[str, np.ndarray]:
    """``on_correct`` / ``on_incorrect``: the judgments of items with a correct / an incorrect prediction."""
    known = j.answer >= 0
    right = prediction_was_correct(j)
    return {"on_correct": known & right, "on_incorrect": known & ~right}


def agreement_analysis(j: Judgments, **kwargs: Any) -> DiscriminationAnalysis:
    """``discrimination_analysis`` on every judgment (chance 50%), each method's row extended with the
    same statistics on the judgments of correct predictions and of incorrect ones (``*_on_correct``,
    ``*_on_incorrect``; the same bootstrap seed and exclusions)."""
    from dataclasses import asdict, replace

    from studies.analysis import discrimination_analysis

    kwargs = {**kwargs, "n_options": 2}
    whole = discrimination_analysis(j, **kwargs)
    parts = {suffix: discrimination_analysis(j.subset(mask), **kwargs) for suffix, mask in split_masks(j).items()}
    row_class = _agreement_row_class()
    rows = []
    for g, row in enumerate(whole.rows):
        extra: dict[str, Any] = {}
        for suffix, part in parts.items():
            sub = part.rows[g]
            for stat in ("n_judgments", "n_correct", "n_items", "accuracy", "wilson_low", "wilson_high",
                         "boot_low", "boot_high", "binomial_p"):  # fmt: skip
                extra[f"{stat}_{suffix}"] = getattr(sub, stat)
        rows.append(row_class(**asdict(row), **extra))
    return replace(whole, rows=tuple(rows))


def balanced_cut(questions: list, right: Sequence[bool], *, label: str) -> list:
    """The questions with the model right and wrong in equal numbers: the larger group is cut to the
    smaller's size by a seeded sample (``random.Random(label)``), kept in the given order; nothing is
    cut when a group is empty. Shared by the designs that split by the model's correctness."""
    import random

    right_k = [k for k, is_right in enumerate(right) if is_right]
    wrong_k = [k for k, is_right in enumerate(right) if not is_right]
    n = min(len(right_k), len(wrong_k))
    if n == 0:
        return questions
    rng = random.Random(label)
    keep = set(rng.sample(right_k, n)) | set(rng.sample(wrong_k, n))
    return [q for k, q in enumerate(questions) if k in keep]


class Agreement(Design):
    name = "agreement"
    label = "Is the model's prediction correct? (HIVE agreement)"
    default_question = "Is the model's prediction correct?"
    sides = ("main",)
    models_from = "model"
    models_missing = "an agreement study explains one model's predictions: choose the model"

    # ------------------------------------------------------------------ planning
    # Main targets: per image, the model's top-1 class (``Prediction`` rows of the study's model
    # with its current weights), named by the image's own category when it is one of them (then
    # the prediction is correct), else by the model's class name (``class_map`` inverted first).
    # The images are used only when the model is right on some and wrong on others. Main items
    # (after the planner sets images aside for catch and practice): one per image, balanced right
    # and wrong (:meth:`main_items`). Catch/practice: a boxed category of the image shown as the
    # prediction, with the map of that category: an obvious correct prediction (:meth:`obvious_answer`;
    # ``obvious_maps`` and ``obvious_side``: the defaults).

    def main_targets(self, study: Study, images: Sequence[Image], models: Sequence[ClassifierModel],
                     options: StudyOptions) -> dict[int, list[str]]:  # fmt: skip
        """Image id -> ``[the predicted category]``; ``{}`` when the predictions are all right or all wrong."""
        from studies.models import Prediction

        model = models[0]
        rows = Prediction.objects.filter(model=model, image__in=images, weights_sha256=model.weights_sha256 or "")
        top1 = {row.image_id: int(list(row.top_classes)[0]) for row in rows if row.top_classes}
        targets: dict[int, list[str]] = {}
        for image in images:
            if image.pk in top1:
                targets[image.pk] = [self.predicted_category(model, image, top1[image.pk], options.class_map)]
        rights = {self.is_correct(image, targets[image.pk][0]) for image in images if image.pk in targets}
        return targets if rights == {True, False} else {}

    @staticmethod
    def predicted_category(model: ClassifierModel, image: Image, cls: int, class_map: dict[str, int] | None) -> str:
        """The name of class ``cls`` for this image: the image's category of that class if it has one
        (a correct prediction), else the category ``class_map`` maps to it, else the model's class name."""
        from studies.lib.scenes import PrepareInputError, categories_of, class_index

        for category in categories_of(image):
            try:
                if class_index(model, category, class_map=class_map, image=image) == cls:
                    return category
            except PrepareInputError:
                continue
        for category, index in (class_map or {}).items():
            if int(index) == cls:
                return str(category)
        names = list(model.class_names or [])
        return str(names[cls]) if 0 <= cls < len(names) else str(cls)

    @staticmethod
    def is_correct(image: Image, category: str) -> bool:
        """Whether ``category`` is one of the image's categories (the prediction is right)."""
        from studies.lib.scenes import categories_of

        return category in categories_of(image)

    def main_items(self, study: Study, images: Sequence[Image],
                   targets: dict[int, list[str]]) -> list[tuple[Image, str, list[str], int | None]]:  # fmt: skip
        """One per (image, predicted category); right answer 1 (the prediction is correct) or 0.
        Balanced: the larger of the two groups is cut to the smaller one's size (a seeded sample,
        ``random.Random(f"{study.seed}:agreement")``; kept in image order). When one group is empty
        (only outside the planner, e.g. a test's items, or when every image of one group went to
        catch and practice) nothing is cut."""
        questions = [(image, category, [INCORRECT, CORRECT], int(self.is_correct(image, category)))
                     for image in images for category in targets[image.pk]]  # fmt: skip
        return balanced_cut(questions, [q[3] == 1 for q in questions], label=f"{study.seed}:agreement")

    def no_items_message(self, study: Study) -> str:
        return (f"an agreement study needs images of {study.image_set.name!r} that the model predicts right and "
                f"images it predicts wrong (the items are balanced); the model's predictions are all right, "
                f"all wrong or missing")  # fmt: skip

    def obvious_answer(self, image: Image, category: str, bit: int) -> tuple[list[str], int]:
        """A correct prediction: the boxed ``category`` is shown as the prediction, with its map."""
        return [INCORRECT, CORRECT], 1

    # ------------------------------------------------------------------ the worker
    # One picture (the map of the predicted class), the prediction under it, and the 4-point scale
    # (keys 1-4); no options are drawn.

    def draw_choices(self, *, rng: Any, item: Item) -> tuple[list[int], bool | None]:
        """Nothing to draw: the scale has a fixed order and one model is shown."""
        return [], None

    def stored_order_problem(self, order: Any, n_options: int) -> str | None:
        """Nothing is drawn (:meth:`draw_choices`): the stored order is empty."""
        return None if order == [] else f"stores option_order {order!r}; the scale's order is fixed (expected [])"

    def trial_content(self, *, item: Item, option_order: list[int], wording: Any) -> dict[str, Any]:
        """The 4-point scale (:data:`SCALE`) and, under the map, "The model predicts: <category>"."""
        return {"options": [], "scale": list(SCALE), "predicted": PREDICTED.format(label=item.target_label),
                "comment_prompt": ""}  # fmt: skip

    def answer_range(self, option_order: list[int]) -> tuple[int, str]:
        """A position on the 4-point scale: 0..3."""
        return len(SCALE), "scale position"

    def answer_score(self, *, item: Item, option_order: list[int], model_a_shown_left: bool | None,
                     choice: int) -> tuple[int | None, bool | None, int | None]:  # fmt: skip
        """``chosen_option`` = the scale position; ``correct`` = (position >= 2, judged correct) equals
        (``item.correct_option == 1``, the prediction is correct); ``None`` without a right answer."""
        correct = None if item.correct_option is None else judged_correct(choice) == (item.correct_option == 1)
        return choice, correct, None

    def practice_feedback(self, *, item: Item, option_order: list[int],
                          model_a_shown_left: bool | None) -> tuple[int | None, Any, str]:  # fmt: skip
        """The sure end of the scale on the right side ("Definitely correct" or "Definitely
        incorrect") and the right answer in words."""
        if item.correct_option not in (0, 1):
            return None, None, ""
        if item.correct_option == 1:
            return len(SCALE) - 1, None, f"the prediction “{item.target_label}” is correct"
        return 0, None, f"the prediction “{item.target_label}” is incorrect"

    def example_answer(self, *, item: Item, wording: Any, place: str, gradient: bool) -> tuple[str, str]:
        """A correct prediction whose map sits on the predicted object (catch and practice items are)."""
        if item.correct_option != 1:
            return "", ""
        answer = SCALE[-1]
        where = (f"only {place} stands out from the plain grey" if gradient
                 else f"the warm colours (yellow to red) sit on {place}")
        why = (f"The model predicts “{item.target_label}”, and {where}: it looked at the {item.target_label}. "
               f"So the prediction is right: “{answer}”.")
        return answer, why

    def answer_schema(self) -> dict[str, Any]:
        """A position on the 4-point scale: 0..3."""
        return {"type": "integer", "minimum": 0, "maximum": len(SCALE) - 1}

    def trial_schema(self) -> dict[str, Any]:
        string = {"type": "string"}
        return {
            "answer": "`agreement`: `choice` = 0-based position on `scale` (0 = 'Definitely incorrect', "
                      "3 = 'Definitely correct'; 2 and 3 judge the prediction correct)",
            "properties": {
                "scale": {"type": "array", "items": string,
                          "description": "agreement: the 4-point confidence scale, definitely incorrect to definitely correct"},
                "predicted": {**string, "description": "agreement: the model's top-1 prediction, in words"},
            },
        }  # fmt: skip

    # ------------------------------------------------------------------ results
    # Accuracy (the share of judgments that judged the prediction rightly), chance 50%, on all main
    # items and separately on correct and incorrect predictions (``agreement_analysis``); the split
    # is read back from each judgment's answer and correct flag (:func:`prediction_was_correct`).

    analysis_name = "agreement"
    score_caption = "accuracy (all predictions)"
    results_template = "studies/results/designs/agreement.html"
    validity_not_applicable = {
        "robot_a_side": "one picture per trial",
        "blind_observer": "agreement: the answer is whether the prediction is right, balanced 50/50; "
                          "no option names a position on the picture",
    }  # fmt: skip
    position_balance = "target"
    target_name = "predicted class"
    target_description = "the class the model predicted (the one the worker is told)"

    def judgment_answers(self, *, chosen_option: np.ndarray, position: np.ndarray, score_model_a: np.ndarray,
                         score_known: np.ndarray, model_a_shown_left: np.ndarray) -> dict[str, np.ndarray]:  # fmt: skip
        """``answer`` = 1 judged correct, 0 judged incorrect (-1 unknown; agreement and the plurality
        vote are on the judgement); ``option_position`` = the scale position clicked (straight-lining)."""
        import numpy as np

        known = chosen_option >= 0
        return {"answer": np.where(known, (chosen_option >= len(SCALE) // 2).astype(np.intp), -1),
                "option_position": np.where(known, chosen_option, -1)}  # fmt: skip

    def analysis_options(self, *, n_options: int) -> dict[str, Any]:
        """Chance is 50% (right or wrong prediction)."""
        return {}

    def analyse(self, judgments: Judgments, rules: Sequence[ExclusionRule], *, n_options: int = 2,
                **kwargs: Any) -> StudyAnalysis:  # fmt: skip
        """:func:`agreement_analysis` on every worker and without the excluded ones."""
        from studies import analysis

        return analysis.analyse_both(judgments, rules, table=agreement_analysis, **kwargs)

    def results_row(self, row: Any) -> dict[str, Any]:
        """The accuracy row of every prediction, plus per split (``on_correct``, ``on_incorrect``) the
        accuracy, correct / n, the bootstrap interval and the binomial p against 50%."""
        from studies.analysis.display import number_text, p_text, percent_text

        cells = super().results_row(row)
        for suffix, _ in SPLITS:
            get = lambda stat, s=suffix: getattr(row, f"{stat}_{s}", None)  # noqa: E731
            cells[suffix] = {
                "score": percent_text(get("accuracy")), "detail": f"{get('n_correct')}/{get('n_judgments')}",
                "boot": f"[{number_text(get('boot_low'))}, {number_text(get('boot_high'))}]",
                "p": p_text(get("binomial_p")), "items": get("n_items"),
            }  # fmt: skip
        return cells

    def export_answer(self, *, options: list[str], order: list[int], chosen_option: int | None,
                      score_model_a: int | None, model_a_shown_left: bool | None,
                      scale: Sequence[str]) -> dict[str, Any]:  # fmt: skip
        """The scale position clicked as ``answer_option`` and ``answer_position``, its label
        (:data:`SCALE`, not the study's trust scale) as ``answer`` and ``answer_label``; no robots."""
        label = SCALE[chosen_option] if chosen_option is not None and 0 <= chosen_option < len(SCALE) else None
        return {"answer": label if label is not None else chosen_option, "answer_option": chosen_option,
                "answer_label": label, "answer_position": chosen_option, "robot_a_is_model_a": None}  # fmt: skip

    def correct_expected(self, *, chosen_option: int | None, correct_option: int | None) -> bool | None:
        """Judged correct (position >= 2) equals the prediction being correct."""
        if chosen_option is None or correct_option is None:
            return None
        return judged_correct(chosen_option) == (correct_option == 1)

    def layout_target(self, item: Item) -> tuple[list[str], str, str] | None:
        """The image's two categories when the prediction is one of them (the target); else ``None``."""
        options = list(dict.fromkeys(item.image.categories or []))
        if len(options) != 2 or item.target_label not in options:
            return None
        return options, item.target_label, options[1 - options.index(item.target_label)]

    # ------------------------------------------------------------------ the simulated observer
    # Answers are scale positions, sent as ``{"option": position}`` (the page offers no options).

    def observer_guess(self, *, options: list[str], rng: np.random.Generator) -> dict[str, int]:
        """One of the four scale positions with equal probability (50% right on either kind of item)."""
        return {"option": int(rng.integers(len(SCALE)))}

    def observer_first(self, *, options: list[str]) -> dict[str, int]:
        """The scale's first answer, "Definitely incorrect"."""
        return {"option": 0}

    def observer_read(self, *, stimuli: list[bytes], options: list[str], class_label: str,
                      fraction: Callable[[bytes, str], float], rng: np.random.Generator,
                      noise: float, weak: float, strong: float) -> dict[str, int]:  # fmt: skip
        """``d = fraction(map, predicted category) + N(0, noise) - 0.5``: the share of the map's salience
        on an object of the predicted category (0 when the picture has none: a wrong prediction's map
        cannot sit on it) over one half. "Definitely correct" if ``d > strong``, "Probably correct" if
        ``d > 0``, "Probably incorrect" if ``d > -strong``, else "Definitely incorrect"."""
        d = fraction(stimuli[0], class_label) + rng.normal(0, noise) - 0.5
        return {"option": 3 if d > strong else 2 if d > 0 else 1 if d > -strong else 0}

    def observer_choice(self, *, option: int | None, score: int | None) -> int:
        """The scale position."""
        assert option is not None, "agreement: an observer answers with a scale position"
        return int(option)

    def observer_synthetic(self, *, correct_option: int | None, quality: float | None,
                           rng: np.random.Generator) -> dict[str, int | bool | None]:  # fmt: skip
        """Right with probability ``quality`` (careless: 0.5), one ``rng.random()`` draw; then the
        sure or the unsure position on that side, one ``rng.integers(2)`` draw."""
        assert correct_option is not None, "agreement: a synthetic answer needs the right option"
        right = bool(rng.random() < (0.5 if quality is None else quality))
        says_correct = (correct_option == 1) == right
        sure = int(rng.integers(2))
        chosen = (2 + sure) if says_correct else (1 - sure)
        return {"chosen_option": chosen, "correct": right, "score_model_a": None}


DESIGN = register(Agreement())
