""""Do you accept the AI's answer?" (AI-assisted decision; Nguyen et al., NeurIPS 2021).

One classifier; one image, the model's top-1 prediction and its confidence ("The AI says: <category>
(87% confident)": the stored softmax probability of that class, ``Prediction.top_scores``) and the
item's stimulus: whatever the item's method renders (a map; ``image_only`` in a "confidence only"
arm, ``nearest_examples`` in an examples arm; the design does not look at the method). The
worker accepts or rejects the prediction. Between-subject arms (``Study.arms``, one method each)
give Nguyen's conditions; the results are per method, i.e. per arm.

Planning is the agreement design's (:class:`studies.designs.agreement.Agreement`, subclassed): the
image's top-1 class is the item's target, ``Item.options = ["incorrect", "correct"]`` and
``correct_option`` 1 when the prediction is right; main items balanced, as many wrong as right
predictions (the seeded cut of ``Agreement.main_items``), so the AI alone is right on 50% of them
and "always accept" scores 50%. Nguyen et al. used natural images on which the model is mostly
right; the balance is kept so that team accuracy on right and on wrong predictions weigh the same
and chance is 50% (the split columns give each side on its own).

The answer: two buttons in a fixed order, Accept then Reject (``choice`` 0 = accept, 1 = reject).
The order is not drawn: accept-then-reject is part of the protocol, the same for every arm, so
the arms differ only in their stimulus. Stored like a choice: ``option_order`` is always
:data:`ORDER` = ``[1, 0]`` (Accept shows option 1, "correct"; Reject option 0, "incorrect"),
``chosen_option = ORDER[choice]``, ``correct = chosen_option == correct_option``: the human+AI
team's decision is right (accepted a right prediction or rejected a wrong one).

Results (:func:`decision_analysis`): per method, the team accuracy on all items and separately on
right and on wrong predictions (the agreement design's split, :func:`~studies.designs.agreement.agreement_analysis`),
each with its two-way cluster-bootstrap interval; the AI-alone accuracy on the same judgments (the
share of judgments whose prediction is right: 50% on the balanced set) with its interval; and the
difference team - AI alone, the mean of ``correct - prediction right`` per judgment, with the
percentile interval of the same two-way cluster bootstrap (workers and items, the same seed and
so the same draws as the team accuracy).

Simulated observers: a ``heatmap_reader`` accepts when the picture looks right, i.e. most of its
salience sits on an object of the predicted category (``fraction + N(0, noise) > 0.5``; a wrong
prediction names an object the picture lacks, share 0), else it rejects; it reads any arm's
picture as a map (a model of map arms only). A ``random`` observer accepts half the time (team
accuracy 50% on the balanced set, on right and on wrong predictions alike); a straight-liner
always accepts (the first button): 100% on right, 0% on wrong predictions, 50% overall.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from studies.designs import agreement
from studies.designs.agreement import Agreement, agreement_analysis, prediction_was_correct
from studies.designs.base import Design
from studies.designs.registry import register

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    import numpy as np

    from studies.analysis import DiscriminationAnalysis, ExclusionRule, Judgments, StudyAnalysis
    from studies.models import Item, Study

#: the buttons, in page order (fixed: part of the protocol); ``choice`` indexes them
ANSWERS = ("Accept", "Reject")
#: ``option_order`` of every trial: Accept shows ``Item.options[1]`` ("correct"), Reject ``[0]`` ("incorrect")
ORDER = (1, 0)
#: the line under the picture (``{label}``: the predicted category; ``{confidence}``: its softmax probability in %)
SAYS = "The AI says: {label} ({confidence}% confident)"
#: the same when the stored prediction does not list the class (no confidence to show)
SAYS_PLAIN = "The AI says: {label}"
#: the fields the results add to the agreement row: the AI alone and the team minus the AI alone
EXTRA_FIELDS = ("ai_accuracy", "ai_boot_low", "ai_boot_high", "team_minus_ai", "team_minus_ai_low", "team_minus_ai_high")

_DecisionRow: type | None = None


def _decision_row_class() -> type:
    """The agreement row plus :data:`EXTRA_FIELDS` (made once, lazily)."""
    global _DecisionRow
    if _DecisionRow is None:
        from dataclasses import make_dataclass

        cls = make_dataclass("DecisionRow", [(name, object) for name in EXTRA_FIELDS],
                             bases=(agreement.AgreementRow,), frozen=True)  # fmt: skip
        cls.__module__ = __name__
        cls.__qualname__ = "DecisionRow"
        _DecisionRow = cls
    return _DecisionRow


def __getattr__(name: str) -> Any:  # the row class, by name (pickling a cached result finds it here)
    if name == "DecisionRow":
        return _decision_row_class()
    raise AttributeError(name)


def confidence_text(top_classes: Sequence[int], top_scores: Sequence[float], cls: int) -> str | None:
    """Class ``cls``'s stored softmax probability in whole percent (``"87"``), or ``None`` when the
    stored top-k does not list it."""
    classes = [int(c) for c in top_classes]
    if cls not in classes or classes.index(cls) >= len(top_scores):
        return None
    return f"{round(100 * float(top_scores[classes.index(cls)]))}"


def decision_analysis(j: Judgments, *, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95,
                      exclude_workers: Any = None, include_simulated: bool = True,
                      **kwargs: Any) -> DiscriminationAnalysis:  # fmt: skip
    """:func:`~studies.designs.agreement.agreement_analysis` (team accuracy, all / on right / on wrong
    predictions), each method's row extended with

    - ``ai_accuracy``: the AI alone, ``mean(r)`` over the method's analysed judgments, ``r`` = 1 when
      the judgment's prediction is right (:func:`~studies.designs.agreement.prediction_was_correct`);
    - ``team_minus_ai`` = ``mean(correct - r)`` = team accuracy - ``ai_accuracy`` on the same judgments;
    - their percentile intervals (``ai_boot_*``, ``team_minus_ai_low/high``) from
      ``two_way_cluster_bootstrap_means`` with the table's seed: the same worker and item draws as
      the team accuracy's interval (both columns are bootstrapped in one call, as groups ``g`` and
      ``m + g``, so they share each replicate).

    The analysed judgments are the table's: no catch trial, no excluded worker, simulated ones
    only with ``include_simulated``, and a known answer."""
    from dataclasses import asdict, replace

    import numpy as np

    from studies.analysis.stats import percentile_interval, two_way_cluster_bootstrap_means

    base = {"n_boot": n_boot, "seed": seed, "confidence": confidence, "exclude_workers": exclude_workers,
            "include_simulated": include_simulated, **kwargs}  # fmt: skip
    whole = agreement_analysis(j, **base)
    keep = ~j.is_catch & (j.answer >= 0)
    if not include_simulated:
        keep &= ~j.is_simulated
    if exclude_workers is not None:
        keep &= ~np.isin(j.worker, np.asarray(exclude_workers, dtype=np.intp))
    m = len(j.method_names)
    method, worker, item = j.method[keep], j.worker[keep], j.item[keep]
    ai = prediction_was_correct(j)[keep].astype(np.int64)
    gain = j.correct[keep].astype(np.int64) - ai
    n = np.bincount(method, minlength=m)
    with np.errstate(divide="ignore", invalid="ignore"):
        ai_mean = np.where(n > 0, np.bincount(method, weights=ai, minlength=m) / np.maximum(n, 1), np.nan)
        gain_mean = np.where(n > 0, np.bincount(method, weights=gain, minlength=m) / np.maximum(n, 1), np.nan)
    reps = two_way_cluster_bootstrap_means(
        np.concatenate([ai, gain]), np.concatenate([method, method + m]), np.concatenate([worker, worker]),
        np.concatenate([item, item]), n_groups=2 * m, n_boot=n_boot, seed=seed,
    )  # fmt: skip
    low, high = percentile_interval(reps, confidence, axis=1)
    row_class = _decision_row_class()
    rows = [row_class(**asdict(row), ai_accuracy=float(ai_mean[g]), ai_boot_low=float(low[g]),
                      ai_boot_high=float(high[g]), team_minus_ai=float(gain_mean[g]),
                      team_minus_ai_low=float(low[m + g]), team_minus_ai_high=float(high[m + g]))
            for g, row in enumerate(whole.rows)]  # fmt: skip
    return replace(whole, rows=tuple(rows))


class AiAssistedDecision(Agreement):
    name = "ai_assisted_decision"
    label = "Do you accept the AI's answer? (AI-assisted decision)"
    default_question = "Do you accept the AI's answer?"
    models_missing = "an AI-assisted decision study explains one model's predictions: choose the model"

    # ------------------------------------------------------------------ planning
    # The agreement design's (inherited): per image the model's top-1 class, right answer 1 when it is
    # right, balanced right and wrong; catch/practice: a boxed category of the image as an obvious
    # right prediction (to accept).

    def no_items_message(self, study: Study) -> str:
        return (f"an AI-assisted decision study needs images of {study.image_set.name!r} that the model predicts "
                f"right and images it predicts wrong (the items are balanced); the model's predictions are all "
                f"right, all wrong or missing")  # fmt: skip

    # ------------------------------------------------------------------ the worker
    # The picture, "The AI says: <category> (<p>% confident)" under it, and Accept / Reject (keys 1, 2).

    def draw_choices(self, *, rng: Any, item: Item) -> tuple[list[int], bool | None]:
        """Nothing drawn: the order is :data:`ORDER` (Accept, Reject) on every trial, part of the protocol."""
        return list(ORDER), None

    def stored_order_problem(self, order: Any, n_options: int) -> str | None:
        """The stored order is :data:`ORDER` on every trial (:meth:`draw_choices`)."""
        return None if order == list(ORDER) else f"stores option_order {order!r}, not the fixed {list(ORDER)}"

    def trial_content(self, *, item: Item, option_order: list[int], wording: Any) -> dict[str, Any]:
        """Accept / Reject (:data:`ANSWERS`, whatever ``option_order``) and, under the picture, "The AI
        says: <category> (<p>% confident)", ``p`` the stored softmax probability of the item's class
        (the ``Prediction`` of the study's model and weights for the item's image, one query; without
        it, or when its top-k lacks the class, as on some catch items, the line has no confidence)."""
        from django.db.models import F

        from studies.models import Prediction

        stored = (Prediction.objects.filter(image_id=item.image_id, model__studies=item.study_id,
                                            weights_sha256=F("model__weights_sha256"))
                  .values_list("top_classes", "top_scores").first()) if item.study_id and item.image_id else None  # fmt: skip
        percent = confidence_text(*stored, item.target_class) if stored else None
        line = (SAYS.format(label=item.target_label, confidence=percent) if percent is not None
                else SAYS_PLAIN.format(label=item.target_label))  # fmt: skip
        return {"options": list(ANSWERS), "scale": [], "predicted": line, "comment_prompt": ""}

    def answer_range(self, option_order: list[int]) -> tuple[int, str]:
        """0 = accept, 1 = reject."""
        return len(ANSWERS), "displayed option (0 = accept, 1 = reject)"

    def answer_score(self, *, item: Item, option_order: list[int], model_a_shown_left: bool | None,
                     choice: int) -> tuple[int | None, bool | None, int | None]:  # fmt: skip
        """``chosen_option = ORDER[choice]`` (accept: 1 "correct", reject: 0 "incorrect"); ``correct`` =
        (accepted and the prediction is right) or (rejected and it is wrong), i.e. ``chosen_option ==
        item.correct_option``; ``None`` without a right answer."""
        chosen = ORDER[choice]
        return chosen, None if item.correct_option is None else chosen == item.correct_option, None

    correct_expected = Design.correct_expected  # accepted (1) / rejected (0) equals the prediction right (1) / wrong (0)

    def practice_feedback(self, *, item: Item, option_order: list[int],
                          model_a_shown_left: bool | None) -> tuple[int | None, Any, str]:  # fmt: skip
        """Accept (0) a right prediction, Reject (1) a wrong one, with the reason in words."""
        if item.correct_option not in (0, 1):
            return None, None, ""
        if item.correct_option == 1:
            return 0, None, f"Accept: the AI's answer “{item.target_label}” is right"
        return 1, None, f"Reject: the AI's answer “{item.target_label}” is wrong"

    def example_answer(self, *, item: Item, wording: Any, place: str, gradient: bool) -> tuple[str, str]:
        """A right prediction whose map sits on the predicted object (catch and practice items are)."""
        if item.correct_option != 1:
            return "", ""
        where = (f"only {place} stands out from the plain grey" if gradient
                 else f"the warm colours (yellow to red) sit on {place}")
        why = (f"The AI says “{item.target_label}”, and {where}: it looked at the {item.target_label}. "
               f"Its answer is right: “{ANSWERS[0]}”.")
        return ANSWERS[0], why

    def answer_schema(self) -> dict[str, Any]:
        """0 = accept, 1 = reject."""
        return {"type": "integer", "minimum": 0, "maximum": len(ANSWERS) - 1}

    def trial_schema(self) -> dict[str, Any]:
        string = {"type": "string"}
        return {
            "answer": "`ai_assisted_decision`: `choice` = 0 to accept the AI's answer, 1 to reject it "
                      "(`options` is always ['Accept', 'Reject'])",
            "properties": {
                "options": {"type": "array", "items": string,
                            "description": "ai_assisted_decision: ['Accept', 'Reject'], a fixed order"},
                "predicted": {**string, "description": "ai_assisted_decision: the AI's top-1 prediction and its "
                                                       "confidence ('The AI says: cat (87% confident)')"},
            },
        }  # fmt: skip

    # ------------------------------------------------------------------ results
    # Team accuracy (all, on right and on wrong predictions), the AI alone and team - AI alone per
    # method (= per arm when each arm has one method): :func:`decision_analysis`.

    analysis_name = "ai_assisted_decision"
    score_caption = "team accuracy (all predictions)"
    results_template = "studies/results/designs/ai_assisted_decision.html"
    validity_not_applicable = {
        "robot_a_side": "one picture per trial",
        "blind_observer": "AI-assisted decision: the answer is accept or reject, balanced 50/50 over right and wrong "
                          "predictions; no option names a position on the picture, and 'always the first button' "
                          "(always accept) scores 50% by construction",
    }  # fmt: skip

    judgment_answers = Design.judgment_answers  # answer = chosen_option: 1 accepted, 0 rejected (agreement's reading)
    observer_guess = Design.observer_guess  # Accept or Reject, each with probability 1/2
    observer_choice = Design.observer_choice
    observer_synthetic = Design.observer_synthetic  # right with probability quality; stores the option index

    def analyse(self, judgments: Judgments, rules: Sequence[ExclusionRule], *, n_options: int = 2,
                **kwargs: Any) -> StudyAnalysis:  # fmt: skip
        """:func:`decision_analysis` on every worker and without the excluded ones."""
        from studies import analysis

        return analysis.analyse_both(judgments, rules, table=decision_analysis, **kwargs)

    def results_row(self, row: Any) -> dict[str, Any]:
        """The agreement row's cells (team accuracy: all, ``on_correct``, ``on_incorrect``), plus ``ai``
        (the AI alone) and ``gain`` (team - AI alone, in percentage points), each with its interval."""
        from studies.analysis.display import UNKNOWN, number_text, percent_text

        cells = super().results_row(row)
        cells["ai"] = {"score": percent_text(row.ai_accuracy),
                       "boot": f"[{number_text(row.ai_boot_low)}, {number_text(row.ai_boot_high)}]"}  # fmt: skip
        points = lambda x: UNKNOWN if x is None or not math.isfinite(x) else f"{100 * x:+.1f}"  # noqa: E731
        cells["gain"] = {"score": points(row.team_minus_ai),
                         "boot": f"[{points(row.team_minus_ai_low)}, {points(row.team_minus_ai_high)}]"}  # fmt: skip
        return cells

    def export_answer(self, *, options: list[str], order: list[int], chosen_option: int | None,
                      score_model_a: int | None, model_a_shown_left: bool | None,
                      scale: Sequence[str]) -> dict[str, Any]:  # fmt: skip
        """``answer`` and ``answer_label`` "Accept" / "Reject", ``answer_option`` the option index
        (1 accepted, 0 rejected), ``answer_position`` the button (0 Accept, 1 Reject); no robots."""
        position = ORDER.index(chosen_option) if chosen_option in ORDER else None
        label = ANSWERS[position] if position is not None else None
        return {"answer": label if label is not None else chosen_option, "answer_option": chosen_option,
                "answer_label": label, "answer_position": position, "robot_a_is_model_a": None}  # fmt: skip

    # ------------------------------------------------------------------ the simulated observer

    def observer_first(self, *, options: list[str]) -> dict[str, int]:
        """The first button, Accept."""
        return {"option": 0}

    def observer_read(self, *, stimuli: list[bytes], options: list[str], class_label: str,
                      fraction: Callable[[bytes, str], float], rng: np.random.Generator,
                      noise: float, weak: float, strong: float) -> dict[str, int]:  # fmt: skip
        """Accept (0) when ``fraction(picture, predicted category) + N(0, noise) > 0.5`` (most of the
        salience on an object of the predicted category: the map looks right), else Reject (1)."""
        return {"option": 0 if fraction(stimuli[0], class_label) + rng.normal(0, noise) > 0.5 else 1}


DESIGN = register(AiAssistedDecision())
