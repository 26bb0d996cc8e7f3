""""Which robot is more reasonable?" (Selvaraju et al., Grad-CAM, section 5.2: trust).

A pair of classifiers (A, B) that both predict the same, right category for an image; each one's
map of it, side by side as Robot A and Robot B (which model is shown left is a fair coin per
trial); the worker answers on a 5-point scale. Stored score: -2..+2 towards model A.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from studies.designs.base import Design
from studies.designs.registry import register

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    import numpy as np

    from studies.designs.options import StudyOptions
    from studies.models import ClassifierModel, Image, Item, Prediction, Stimulus, Study


class Trust(Design):
    name = "trust"
    label = "Which robot is more reasonable? (trust)"
    default_question = "Which robot is more reasonable?"
    sides = ("left", "right")
    models_from = "pair"
    models_missing = "a trust study compares two models: choose a model pair"

    # ------------------------------------------------------------------ planning
    # Main items: an image is used when both models of the pair predict its true class, as in the
    # paper (``Study.require_both_correct``). With ``m`` categories on an image, a model "predicts"
    # category ``c`` when ``c``'s class is among its top ``m`` classes (top-1 for single-category
    # images; top-2 for the two-object scenes). When more than one category qualifies, the target
    # is the one on the side (left/right) that has been the target less often so far (images in id
    # order; ties by the seed), so "the named object is always on the left" cannot stand in for
    # reading the maps. Without the requirement every category qualifies. One main item per
    # (image, method): ``stimulus_a`` is model A's map, ``stimulus_b`` model B's, of the same class.
    # Catch/practice (``correct_option`` 0 = robot A is the reasonable one, balanced): the
    # reasonable robot's map of the target, the other robot's map of the image's *other* boxed
    # category (on an image with one box: its map of the target kept inside the background corner
    # farthest from the object, stimulus method ``gated_bg:<method>``).

    def main_targets(self, study: Study, images: Sequence[Image], models: Sequence[ClassifierModel],
                     options: StudyOptions) -> dict[int, list[str]]:
        """The image's categories both models predict (every category without ``require_both_correct``)."""
        predictions = self._predictions(models, images)
        targets = {}
        for image in images:
            qualifying = self._qualifying(image, models, predictions, options.class_map, study.require_both_correct)
            if qualifying:
                targets[image.pk] = qualifying
        return targets

    @staticmethod
    def _predictions(models: Sequence[ClassifierModel], images: Sequence[Image]) -> dict[tuple[int, int], Prediction]:
        from studies.models import Prediction

        found: dict[tuple[int, int], Prediction] = {}
        for model in models:
            rows = Prediction.objects.filter(model=model, image__in=images, weights_sha256=model.weights_sha256 or "")
            for row in rows:
                found[(model.pk, row.image_id)] = row
        return found

    @staticmethod
    def _qualifying(image: Image, models: Sequence[ClassifierModel], predictions: dict[tuple[int, int], Prediction],
                    class_map: dict[str, int] | None, require_both_correct: bool) -> list[str]:
        """The image's categories the trust study may ask about (both models predict them, when required)."""
        from studies.lib.scenes import categories_of, class_index

        categories = categories_of(image)
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

    def main_items(self, study: Study, images: Sequence[Image],
                   targets: dict[int, list[str]]) -> list[tuple[Image, str, list[str], int | None]]:
        """One per image: the qualifying category on the side picked less so far (ties: seeded);
        no options, no right answer (a rating)."""
        import random
        from collections import Counter

        from studies.lib.scenes import image_sides

        rng = random.Random(f"{study.seed}:trust-target")
        counts: Counter[str] = Counter()
        out: list[tuple[Image, str, list[str], int | None]] = []
        for image in images:
            sides = image_sides(image)
            order = list(targets[image.pk])
            rng.shuffle(order)
            label = min(order, key=lambda c: counts[sides.get(c, "centre")] if sides.get(c) in ("left", "right") else 0)
            counts[sides.get(label, "centre")] += 1
            out.append((image, label, [], None))
        return out

    def no_items_message(self, study: Study) -> str:
        return (f"no image of {study.image_set.name!r} is predicted correctly by both models of "
                f"{study.model_pair.name!r}; untick require_both_correct or use other images")

    def obvious_answer(self, image: Image, category: str, bit: int) -> tuple[list[str], int]:
        """No options; the reasonable robot is A (0) or B (1), balanced by ``bit``."""
        return [], bit

    def item_maps(self, study: Study, item: Item, models: Sequence[ClassifierModel], *, method: str, image: Image,
                  options: StudyOptions) -> list[tuple[str, ClassifierModel, str, int]]:
        """Main: both models' maps of the target. Catch/practice: the reasonable robot's map of the
        target, the other's :meth:`_wrong_map`."""
        from studies.models import Item as ItemModel

        if item.role == ItemModel.Role.MAIN:
            return super().item_maps(study, item, models, method=method, image=image, options=options)
        right = (method, item.target_class)
        right_a = item.correct_option != 1
        a_method, a_target = right if right_a else self._wrong_map(models[0], method, item, image, options.class_map)
        b_method, b_target = self._wrong_map(models[1], method, item, image, options.class_map) if right_a else right
        return [("a", models[0], a_method, a_target), ("b", models[1], b_method, b_target)]

    @staticmethod
    def _wrong_map(model: ClassifierModel, method: str, item: Item, image: Image,
                   class_map: dict[str, int] | None) -> tuple[str, int]:
        """The unreasonable robot's map: its real map of the image's other boxed category; or, on an
        image with one box, its map of the target kept inside the background corner farthest from
        the object (``gated_bg:``)."""
        from studies.lib.scenes import GATED_BACKGROUND_PREFIX, box_for, categories_of, class_index

        others = [c for c in categories_of(image) if c != item.target_label and box_for(image, c)]
        if others:
            return method, class_index(model, others[0], class_map=class_map, image=image)
        return GATED_BACKGROUND_PREFIX + method, item.target_class

    def obvious_maps(self, item: Item, other: str | None) -> list[tuple[Stimulus, str, str | None]]:
        """The reasonable robot's map shows the target rather than ``other``; the other robot's map
        shows ``other`` rather than the target (when the image has another boxed category)."""
        right, wrong = (item.stimulus_a, item.stimulus_b) if item.correct_option == 0 else (item.stimulus_b, item.stimulus_a)
        maps = [(right, item.target_label, other)]
        if other is not None:
            maps.append((wrong, other, item.target_label))
        return maps

    def obvious_side(self, item: Item) -> str:
        """Which robot is the reasonable one."""
        return f"robot{item.correct_option}"

    # ------------------------------------------------------------------ the worker
    # Two pictures, Robot A on the left and Robot B on the right (which model is Robot A is the fair
    # coin of ``Design.draw_choices``); the answer is a position on the study's 5-point scale, with
    # the predicted class above it and an optional comment after it (Selvaraju et al. 2017, 5.2).

    hint_key = "trust_hint"

    def side_label(self, side: str, wording: Any) -> str:
        """``wording.robot_a`` over the left picture, ``wording.robot_b`` over the right one."""
        return {"left": wording.robot_a, "right": wording.robot_b}.get(side, "")

    def trial_content(self, *, item: Item, option_order: list[int], wording: Any) -> dict[str, Any]:
        """The scale (``wording.scale``), the class both robots predicted (``wording.predicted`` with
        ``{label}`` = the item's target label) and the comment prompt; no options."""
        return {"options": [], "scale": list(wording.scale), "predicted": wording.predicted.format(label=item.target_label),
                "comment_prompt": wording.comment}  # fmt: skip

    def answer_range(self, option_order: list[int]) -> tuple[int, str]:
        """A position on the scale: ``0..SCALE_POINTS-1`` (5 points)."""
        from studies.lib.wording import SCALE_POINTS

        return SCALE_POINTS, "scale position"

    def answer_score(self, *, item: Item, option_order: list[int], model_a_shown_left: bool | None,
                     choice: int) -> tuple[int | None, bool | None, int | None]:  # fmt: skip
        """Scale position ``choice`` (0 = "Robot A is clearly more reasonable") gives
        ``score_robot_a = 2 - choice``; ``score_model_a = score_robot_a`` when model A was shown as Robot
        A (left), else ``-score_robot_a``. With ``item.correct_option`` set (catch, practice): 0 means
        model A must be preferred (``correct = score_model_a > 0``), 1 model B (``score_model_a < 0``);
        otherwise ``correct`` is ``None``. No option is chosen."""
        score_robot_a = 2 - choice
        score = score_robot_a if model_a_shown_left is not False else -score_robot_a
        correct = None
        if item.correct_option == 0:
            correct = score > 0
        elif item.correct_option == 1:
            correct = score < 0
        return None, correct, score

    def practice_feedback(self, *, item: Item, option_order: list[int],
                          model_a_shown_left: bool | None) -> tuple[int | None, str | None, str]:  # fmt: skip
        """The robot as displayed that was right: ``"A"`` (left) when the reasonable model (A for
        ``correct_option`` 0, B for 1) was shown left, else ``"B"``; the page and the API name it with
        the study's wording (no words here)."""
        if item.correct_option is None:
            return None, None, ""
        a_left = model_a_shown_left is not False
        return None, ("A" if (item.correct_option == 0) == a_left else "B"), ""

    def example_answer(self, *, item: Item, wording: Any, place: str, gradient: bool) -> tuple[str, str]:
        """(Robot A shown on the left.) The robot whose map sits on the object both named, and what the
        other's map shows instead (the image's other boxed category, or the empty background); the
        answer is the scale's first label (A) or last (B). None without a right robot."""
        if item.correct_option not in (0, 1):
            return "", ""
        image, label = item.image, item.target_label
        good, bad = (wording.robot_a, wording.robot_b) if item.correct_option == 0 else (wording.robot_b, wording.robot_a)
        answer = wording.scale[0] if item.correct_option == 0 else wording.scale[-1]
        others = [c for c in dict.fromkeys(image.categories or []) if c != label
                  and any(b.get("category") == c for b in image.boxes or [])]  # fmt: skip
        elsewhere = f"the {others[0]}" if others else "the empty background"
        if gradient:
            shows = f"{good}'s picture stands out from the grey on {place}; {bad}'s stands out on {elsewhere} instead."
        else:
            shows = f"{good}'s colours are warm (yellow to red) on {place}; {bad}'s are warm on {elsewhere} instead."
        why = f"Both robots said “{label}”. {shows} {good} looked at the right thing, so the answer is “{answer}”."
        return answer, why

    def answer_schema(self) -> dict[str, Any]:
        """A position on the 5-point scale: 0..4."""
        return {"type": "integer", "minimum": 0, "maximum": 4}

    def trial_schema(self) -> dict[str, Any]:
        string = {"type": "string"}
        return {
            "answer": "`trust`: `choice` = 0-based position on `scale` (0 = 'Robot A is clearly more reasonable')",
            "properties": {
                "scale": {"type": "array", "items": string, "description": "trust: the 5-point scale, A clearly to B clearly"},
                "predicted": {**string, "description": "trust: the class both robots predicted, in words"},
                "comment_prompt": {**string, "description": "trust: the optional comment's label"},
            },
        }  # fmt: skip

    # ------------------------------------------------------------------ results
    # Scored by the mean answer on -2..+2 signed towards the pair's model B (``studies.analysis``'s
    # trust table: bootstrap interval, Wilcoxon against 0, the five answers' counts and shares).

    analysis_name = "trust"
    analysis_table = "trust_analysis"
    score_field = "mean"
    score_digits = 2
    score_caption = "mean score towards model B = {model_b}"
    human_score_header = "Human score (towards model B)"
    results_template = "studies/results/designs/trust.html"
    result_plots = {
        "scores": ("trust_figure", "Mean score per method (towards model B = {model_b})",
                   "mean score per method ({label})"),
        "answers": ("answers_figure", "Answers per method (model A = {model_a}, model B = {model_b})",
                    "answers per method ({label})"),
    }  # fmt: skip
    audits_correct = False  # no right answer on main trials
    validity_not_applicable = {"blind_observer": "trust: no right answer"}
    position_balance = "target"
    target_name = "predicted class"
    target_description = "the class both robots predicted (the one the worker is told)"

    def judgments_usable(self, *, correct_known: np.ndarray, score_known: np.ndarray,
                         is_catch: np.ndarray) -> np.ndarray:  # fmt: skip
        """Main trials: the score is known; catch trials (they have a right robot): ``correct`` is known."""
        import numpy as np

        return np.where(is_catch, correct_known, score_known)

    def judgment_answers(self, *, chosen_option: np.ndarray, position: np.ndarray, score_model_a: np.ndarray,
                         score_known: np.ndarray, model_a_shown_left: np.ndarray) -> dict[str, np.ndarray]:  # fmt: skip
        """``score_towards_a`` = the stored score (0 where unknown); ``answer = score + 2`` (0..4, -1
        unknown, the same for every rating of an item); ``option_position`` = the scale position
        clicked, ``score towards Robot A + 2`` (Robot A = model A when it was shown left)."""
        import numpy as np

        score_a = np.where(score_known, score_model_a, 0)
        towards_robot_a = np.where(model_a_shown_left, score_a, -score_a)
        return {
            "score_towards_a": score_a.astype(np.int8),
            "answer": np.where(score_known, score_a + 2, -1),
            "option_position": np.where(score_known, towards_robot_a + 2, -1),
        }

    def analysis_options(self, *, n_options: int) -> dict[str, Any]:
        """None: a rating has no chance level."""
        return {}

    def results_row(self, row: Any) -> dict[str, Any]:
        """Mean (2 decimals) and sd, the bootstrap interval, the Wilcoxon p against 0, Krippendorff's
        alpha (ordinal), and per answer (-2..+2) its count and share."""
        from studies.analysis.display import number_text, p_text, percent_text

        counts = [row.count_minus2, row.count_minus1, row.count_0, row.count_plus1, row.count_plus2]
        shares = [row.share_minus2, row.share_minus1, row.share_0, row.share_plus1, row.share_plus2]
        return {
            "method": row.method, "n": row.n_judgments, "workers": row.n_workers, "items": row.n_items,
            "score": number_text(row.mean, 2), "detail": f"sd {number_text(row.sd, 2)}",
            "boot": f"[{number_text(row.boot_low, 2)}, {number_text(row.boot_high, 2)}]",
            "p": p_text(row.wilcoxon_p), "alpha": number_text(row.alpha_ordinal),
            "answers": [{"count": c, "share": percent_text(s, 0)} for c, s in zip(counts, shares, strict=True)],
        }  # fmt: skip

    @staticmethod
    def scale_position(*, score_model_a: int | None, model_a_shown_left: bool | None) -> int | None:
        """The answer as the worker clicked it: the 0-based scale position (0 = the scale's first
        label, "Robot A is clearly more reasonable"): ``2 - score towards Robot A``, where Robot A is
        model A unless ``model_a_shown_left`` is False (the inverse of the stored score)."""
        if score_model_a is None:
            return None
        score_robot_a = score_model_a if model_a_shown_left is not False else -score_model_a
        return 2 - score_robot_a

    def export_answer(self, *, options: list[str], order: list[int], chosen_option: int | None,
                      score_model_a: int | None, model_a_shown_left: bool | None,
                      scale: Sequence[str]) -> dict[str, Any]:  # fmt: skip
        """The scale position clicked (:meth:`scale_position`) as ``answer_option`` and
        ``answer_position``, its wording as ``answer_label``; ``answer`` = the score towards model A;
        ``robot_a_is_model_a`` = the side stored (True when unknown). The scale has no per-item options."""
        position = self.scale_position(score_model_a=score_model_a, model_a_shown_left=model_a_shown_left)
        return {
            "answer": score_model_a, "answer_option": position, "answer_position": position,
            "answer_label": scale[position] if position is not None else None,
            "robot_a_is_model_a": model_a_shown_left if model_a_shown_left is not None else True,
        }  # fmt: skip

    def layout_target(self, item: Item) -> tuple[list[str], str, str] | None:
        """The image's two categories; the target is the class both robots predicted (``target_label``)."""
        options = list(dict.fromkeys(item.image.categories or []))
        if len(options) != 2 or item.target_label not in options:
            return None
        return options, item.target_label, options[1 - options.index(item.target_label)]

    # ------------------------------------------------------------------ the simulated observer
    #: the scale's points, towards Robot A, in the order a guess draws them
    observer_scores = (-2, -1, 0, 1, 2)

    def observer_guess(self, *, options: list[str], rng: np.random.Generator) -> dict[str, int]:
        """A guess: one of the five points of the scale with equal probability."""
        return {"score": int(rng.choice(self.observer_scores))}

    def observer_first(self, *, options: list[str]) -> dict[str, int]:
        """The scale's first answer on the page: ``+2``, Robot A clearly more reasonable."""
        return {"score": 2}

    def observer_read(self, *, stimuli: list[bytes], options: list[str], class_label: str,
                      fraction: Callable[[bytes, str], float], rng: np.random.Generator,
                      noise: float, weak: float, strong: float) -> dict[str, int]:  # fmt: skip
        """A heatmap reader compares the two robots' maps (``stimuli``: Robot A, Robot B) on the
        category the page names: ``d = f_A - f_B + N(0, noise)`` with ``f`` the map's salience share
        on that object; it answers ``+2`` if ``d > strong``, ``+1`` if ``d > weak``, ``-2`` if
        ``d < -strong``, ``-1`` if ``d < -weak``, else ``0``."""
        f_a, f_b = (fraction(png, class_label) for png in stimuli[:2])
        d = f_a - f_b + rng.normal(0, noise)
        score = 2 if d > strong else 1 if d > weak else -2 if d < -strong else -1 if d < -weak else 0
        return {"score": score}

    def observer_choice(self, *, option: int | None, score: int | None) -> int:
        """The page lists the scale from ``+2`` (Robot A) down to ``-2``: choice ``2 - score``."""
        assert score is not None, "trust: an observer answers with a score"
        return 2 - int(score)

    def observer_synthetic(self, *, correct_option: int | None, quality: float | None,
                           rng: np.random.Generator) -> dict[str, int | bool | None]:  # fmt: skip
        """``quality`` is the mean score towards model B (careless: 0); the score towards B is
        ``clip(rint(quality + N(0, 1)), -2, 2)``, stored towards A (negated); nothing is right or wrong."""
        import numpy as np

        score_b = int(np.clip(np.rint((0.0 if quality is None else quality) + rng.normal(0, 1.0)), -2, 2))
        return {"chosen_option": None, "correct": None, "score_model_a": -score_b}


DESIGN = register(Trust())
