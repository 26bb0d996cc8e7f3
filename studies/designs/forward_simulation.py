""""Which of the two will the model answer?" (forward simulation; Colin et al., NeurIPS 2022,
"What I cannot predict, I do not understand").

The utility of an explanation method is how much it helps people predict the model's decisions on
new images. Between-subject arms (``Study.arms``), one method each:

- **Learning phase** = the practice trials (``Item.Role.PRACTICE``, graded with feedback before the
  main trials): an image, the arm's map of the model's decision (the map of its top-1 class; the
  control arm's method shows no explanation: ``image_only``), and "Which of the two will the model
  answer?" with two options, the model's top-1 category and another one; the participant guesses,
  then the feedback shows the model's answer. A participant sees only its arm's learning items
  (:attr:`ForwardSimulation.arm_roles`, applied by ``studies.services.participation.practice_draw``).
- **Test phase** = the main trials: the same question on new images, the picture only (no
  explanation, no model output): every main item's stimulus is the control method's
  (:meth:`ForwardSimulation.item_maps`). Right = the model's top-1 category, **not** the truth.

The platform's planner makes one main item per (question, study method); here each arm keeps its
own copy of the test items (same images, same options, same right answer, the same picture-only
stimulus file; the item's ``method`` names the arm), and an arm's methods filter the main items as
for every design. So each arm gets ``judgments_per_item`` judgments of every test image, and the
per-method analysis is the per-arm one.

**The control arm** is the arm of the study's first method (``Study.methods[0]``): ``image_only``
(the picture alone) once that method exists; until then any method stands in (the tests use one),
and the test phase shows that method's map (say so in a report). The utility of an explanation arm
is its test accuracy divided by the control's (:func:`utility_ratio`).

**Settings the design needs** (:meth:`ForwardSimulation.config_errors` refuses others): at least
two arms, one method each, the first method's arm being the control; ``practice_trials >= 1`` (the
learning phase); ``practice_pass_fraction = 0`` (a learning trial is a guess to learn from: it must
never screen a participant out); ``practice_attempts >= number of arms`` (the practice pool holds
``practice_trials * practice_attempts + 1`` items over all arms, so each arm gets at least a full
learning phase; with a pass fraction of 0 only the first attempt is ever used); ``catch_trials = 0``
(a catch item would show an explanation in the test phase).

Planning (scenarios: a biased model, failure cases): each image's top-1 class from the stored
``Prediction`` rows of the study's model (``agreement``'s rule, :meth:`Agreement.predicted_category`).
Options: ``[the model's category, another one]``: the image's other category when the model is
right, the image's (true) category when it is wrong, else the model's second class; the right
option is 0 (shown in a drawn order). Main items are balanced like ``agreement``'s (as many wrong
as right decisions, by ``Agreement.main_items``, seed ``"{seed}:agreement"``), so a participant
who predicts "the model is right" scores 50% on failures; a model right (or wrong) everywhere
gives no items. Learning items: the planner's practice candidates (an image set aside, a boxed
category, a method) whose options are that image's decision (:meth:`obvious_answer`) and whose map
is of the model's top-1 class; the planner keeps those alternating right and wrong decisions
(:meth:`obvious_side`). On the synthetic world, the biased model (``synthetic-biased``, reads the
corner marks) on the ``synthetic-cued`` set with swapped marks gives failures a map can reveal.

Known limits: the instructions' worked example is the practice pool's first item, whatever the
participant's arm (``studies.web.pages``); the results page shows the per-arm accuracy table, the
utility ratios are in the analysis rows and the summary CSV (``utility``, ``utility_low``,
``utility_high``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from studies.designs.base import Design
from studies.designs.registry import register

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    import numpy as np

    from studies.analysis import DiscriminationAnalysis, ExclusionRule, Judgments, StudyAnalysis
    from studies.designs.options import StudyOptions
    from studies.models import ClassifierModel, Image, Item, Study

#: the practice feedback's right answer (``{label}`` = the model's top-1 category)
MODEL_ANSWERS = "the model answers “{label}”"


@dataclass(frozen=True)
class Decision:
    """The model's decision on one image: its top-1 category and class, the other option, right or not."""

    category: str
    cls: int
    other: str
    right: bool


def model_decisions(model: ClassifierModel, images: Sequence[Image],
                    class_map: dict[str, int] | None) -> dict[int, Decision]:  # fmt: skip
    """Image id -> the model's :class:`Decision`, from its stored ``Prediction`` rows (current
    weights). The other option: the image's first category other than the model's when the model
    is right, the image's first category when it is wrong; else (one category, right) the model's
    second class. An image without a prediction or without a second option is left out."""
    from studies.designs.agreement import Agreement
    from studies.lib.scenes import categories_of
    from studies.models import Prediction

    rows = Prediction.objects.filter(model=model, image__in=images, weights_sha256=model.weights_sha256 or "")
    top = {row.image_id: [int(c) for c in row.top_classes] for row in rows if row.top_classes}
    out: dict[int, Decision] = {}
    for image in images:
        classes = top.get(image.pk)
        if not classes:
            continue
        category = Agreement.predicted_category(model, image, classes[0], class_map)
        others = [c for c in categories_of(image) if c != category]
        if not others and len(classes) > 1:
            others = [Agreement.predicted_category(model, image, classes[1], class_map)]
        others = [c for c in others if c != category]
        if others:
            out[image.pk] = Decision(category, classes[0], others[0], category in categories_of(image))
    return out


# The model's decisions of the study being planned, per image id, written by ``main_targets`` (the
# planner calls it first) for ``obvious_answer``, which is not given the study. One per thread.
_planning = threading.local()


def _planned_decisions() -> dict[int, Decision]:
    return getattr(_planning, "decisions", {})


class ForwardSimulation(Design):
    name = "forward_simulation"
    label = "What will the model answer? (forward simulation, Colin et al. 2022)"
    default_question = "Which of the two will the model answer?"
    sides = ("main",)
    models_from = "model"
    models_missing = "a forward-simulation study predicts one model's decisions: choose the model"
    arm_roles = ("main", "practice")

    def config_errors(self, study: Study) -> dict[str, str]:
        """The settings of the module docstring: arms (one method each, the first method's arm the
        control: ``arms_errors`` has every method in an arm), a learning phase that never screens out, a pool for every arm, no catch trials."""
        errors = super().config_errors(study)
        arms = study.arms if isinstance(study.arms, list) else []
        if len(arms) < 2:
            errors["arms"] = ("forward simulation compares arms: give at least two, e.g. "
                              '[{"name": "control", "methods": ["image_only"]}, {"name": "gradcam", "methods": ["gradcam"]}]')  # fmt: skip
        elif any(not isinstance(arm, dict) or len(arm.get("methods") or []) != 1 for arm in arms):
            errors["arms"] = "forward simulation: each arm has exactly one method (what its learning phase shows)"
        if study.practice_trials < 1:
            errors["practice_trials"] = "forward simulation: the practice trials are the learning phase; give at least 1"
        if study.practice_pass_fraction != 0:
            errors["practice_pass_fraction"] = ("forward simulation: the learning phase is a guess to learn from and "
                                                "must not screen anyone out; set 0")  # fmt: skip
        if arms and study.practice_attempts < len(arms):
            errors["practice_attempts"] = (f"forward simulation: the practice pool is shared by the arms; set at least "
                                           f"the number of arms ({len(arms)}) so each arm gets a full learning phase")  # fmt: skip
        if study.catch_trials:
            errors["catch_trials"] = "forward simulation: a catch trial would show an explanation in the test phase; set 0"
        return errors

    # ------------------------------------------------------------------ planning

    def main_targets(self, study: Study, images: Sequence[Image], models: Sequence[ClassifierModel],
                     options: StudyOptions) -> dict[int, list[str]]:  # fmt: skip
        """Image id -> ``[the model's top-1 category]``; ``{}`` when the model is right everywhere or
        wrong everywhere (no failure cases to balance). Remembers the decisions for :meth:`obvious_answer`."""
        decisions = model_decisions(models[0], images, options.class_map)
        _planning.decisions = decisions
        if {d.right for d in decisions.values()} != {True, False}:
            return {}
        return {pk: [d.category] for pk, d in decisions.items()}

    def main_items(self, study: Study, images: Sequence[Image],
                   targets: dict[int, list[str]]) -> list[tuple[Image, str, list[str], int | None]]:  # fmt: skip
        """``(image, model's category, options, right)``, balanced right and wrong decisions by
        ``Agreement.main_items``; the right answer is always the model's category. Where the model is
        right the options are ``[model's category, other]`` (right = 0), where it is wrong
        ``[true category, model's category]`` (right = 1): the stored order (the page shuffles it)
        records whether the model was right, which the results split on
        (``Judgments.item_right_option``). Without a stored decision (a test's items) the other
        option is the image's other category."""
        from studies.designs.registry import design_for
        from studies.lib.scenes import categories_of

        decisions = model_decisions(study.model, images, self.options(study).class_map) if study.model_id else {}
        questions = []
        for image, category, _, model_right in design_for("agreement").main_items(study, images, targets):
            decision = decisions.get(image.pk)
            if decision is not None and decision.category == category:
                other = decision.other
            else:
                other = next((c for c in categories_of(image) if c != category), "")
            if other:
                questions.append((image, category, [category, other], 0) if model_right
                                 else (image, category, [other, category], 1))  # fmt: skip
        return questions

    def no_items_message(self, study: Study) -> str:
        return (f"a forward-simulation study needs images of {study.image_set.name!r} on which the model is right "
                f"and images on which it is wrong (the test items are balanced); its predictions are all right, "
                f"all wrong or missing")  # fmt: skip

    def obvious_usable(self, image: Image) -> bool:
        """A boxed category (the planner's rule) and a decision of the model on the image."""
        return super().obvious_usable(image) and image.pk in _planned_decisions()

    def obvious_methods(self, study: Study) -> list[str]:
        """Every arm's method, the control's ``image_only`` included: the practice items are the
        learning phase, one pool per arm (:attr:`arm_roles`), so an arm whose method shows no map
        still needs its learning items (the picture alone, the model's answer as feedback). Without
        arms: the study's methods."""
        arms = study.arms if isinstance(study.arms, list) else []
        named = [m for arm in arms if isinstance(arm, dict) for m in (arm.get("methods") or []) if isinstance(m, str)]
        return list(dict.fromkeys(named or study.methods or []))

    def obvious_answer(self, image: Image, category: str, bit: int) -> tuple[list[str], int]:
        """A learning item asks the image's decision: ``[model's category, other]``, right 0."""
        decision = _planned_decisions().get(image.pk)
        if decision is None:
            from studies.lib.scenes import categories_of

            options = [category, *(c for c in categories_of(image) if c != category)][:2]
            return options, 0
        return [decision.category, decision.other], 0

    def item_maps(self, study: Study, item: Item, models: Sequence[ClassifierModel], *, method: str, image: Image,
                  options: StudyOptions) -> list[tuple[str, ClassifierModel, str, int]]:  # fmt: skip
        """Test (main) items: the control method's stimulus (``Study.methods[0]``, the picture only),
        whatever the arm. Learning items: the item's method's map of the model's top-1 class."""
        from studies.models import Item as ItemModel
        from studies.models import Prediction

        model = models[0]
        if item.role == ItemModel.Role.MAIN:
            return [("a", model, (study.methods or [method])[0], item.target_class)]
        row = Prediction.objects.filter(model=model, image_id=item.image_id,
                                        weights_sha256=model.weights_sha256 or "").first()  # fmt: skip
        cls = int(row.top_classes[0]) if row is not None and row.top_classes else item.target_class
        return [("a", model, method, cls)]

    def obvious_side(self, item: Item) -> str:
        """What the kept learning items alternate: the model right or wrong on the image."""
        from studies.lib.scenes import categories_of

        return "right" if (item.options or [""])[0] in categories_of(item.image) else "wrong"

    # ------------------------------------------------------------------ the worker
    # A choice between two categories in a drawn order (``Design``'s defaults); right = the model's.

    def practice_feedback(self, *, item: Item, option_order: list[int],
                          model_a_shown_left: bool | None) -> tuple[int | None, Any, str]:  # fmt: skip
        """The model's decision, shown after the guess: its displayed index and "the model answers “X”"."""
        if item.correct_option is None or item.correct_option not in option_order:
            return None, None, ""
        return (option_order.index(item.correct_option), None,
                MODEL_ANSWERS.format(label=item.options[item.correct_option]))  # fmt: skip

    def answer_schema(self) -> dict[str, Any]:
        """An index into the two displayed options: 0 or 1."""
        return {"type": "integer", "minimum": 0, "maximum": 1}

    def trial_schema(self) -> dict[str, Any]:
        schema = super().trial_schema()
        schema["answer"] = ("`forward_simulation`: `choice` = 0-based index into `options` (the category the worker "
                            "predicts the model answers)")  # fmt: skip
        return schema

    # ------------------------------------------------------------------ results
    # Test-phase accuracy per method (= per arm), chance 50%, with ``discrimination_analysis``'s
    # intervals; each row adds the utility ratio to the control arm (:func:`forward_simulation_analysis`).

    analysis_name = "forward_simulation"
    score_caption = "test-phase accuracy (predicting the model)"
    validity_not_applicable = {
        "robot_a_side": "one picture per trial",
        "blind_observer": "forward simulation: the test trials show the picture only by design",
    }
    # The right option is the model's answer: what must not sit on one side is that answer's object
    # (a "pick the left object" strategy would beat chance), as for agreement; each category's own
    # left/right count (discrimination's rule) says nothing about the answer here.
    position_balance = "target"
    target_name = "model's answer"
    target_description = "the category the model answers (the right option)"

    def analysis_options(self, *, n_options: int) -> dict[str, Any]:
        return {}

    def analyse(self, judgments: Judgments, rules: Sequence[ExclusionRule], *, n_options: int = 2,
                **kwargs: Any) -> StudyAnalysis:  # fmt: skip
        """:func:`forward_simulation_analysis` on every worker and without the excluded ones."""
        from studies import analysis

        return analysis.analyse_both(judgments, rules, table=forward_simulation_analysis, **kwargs)


# ---------------------------------------------------------------------------------------------- the utility


@dataclass(frozen=True)
class Utility:
    """An arm's utility: its accuracy over the control's, and the percentile bootstrap interval."""

    ratio: float
    low: float
    high: float


def utility_ratio(correct: np.ndarray, arm: np.ndarray, worker: np.ndarray, item: np.ndarray, *, n_arms: int,
                  control: int = 0, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> list[Utility]:  # fmt: skip
    """Per arm ``a``: ``U_a = mean(correct | a) / mean(correct | control)`` (Colin et al.'s utility,
    ratio of the judgments' means) and its percentile interval over ``n_boot`` replicates of the
    two-way cluster bootstrap (``studies.analysis.stats.two_way_cluster_bootstrap_means``): workers
    drawn with replacement within their arm (``worker_strata = arm``: each replicate keeps the arms'
    sizes), items drawn with replacement, the same draws for every arm; replicate ratio
    ``mean*_a / mean*_control`` (a replicate whose control mean is 0 has no ratio and is left out,
    as ``percentile_interval`` leaves out ``nan``). The control's own entry is ``U = 1`` with a degenerate interval.
    A worker must belong to one arm. (Written here: ``studies.analysis`` had no ratio function yet.)"""
    import numpy as np

    from studies.analysis.stats import percentile_interval, two_way_cluster_bootstrap_means

    correct = np.asarray(correct, dtype=np.float64)
    arm = np.asarray(arm, dtype=np.intp)
    n = np.bincount(arm, minlength=n_arms)
    k = np.bincount(arm, weights=correct, minlength=n_arms)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(n > 0, k / np.maximum(n, 1), np.nan)
        ratio = mean / mean[control]
        if n_boot > 0:
            reps = two_way_cluster_bootstrap_means(correct, arm, worker, item, n_groups=n_arms, n_boot=n_boot,
                                                   seed=seed, worker_strata=arm)  # fmt: skip
            base = np.where(reps[control] > 0, reps[control], np.nan)[None, :]  # a 0 control: no ratio
            low, high = percentile_interval(reps / base, confidence, axis=1)
        else:
            low = high = np.full(n_arms, np.nan)
    return [Utility(float(ratio[a]), float(low[a]), float(high[a])) for a in range(n_arms)]


_UTILITY_FIELDS = ("utility", "utility_low", "utility_high")
_RowClass: type | None = None


def _row_class() -> type:
    """``DiscriminationRow`` plus ``utility``, ``utility_low``, ``utility_high`` (made once, lazily)."""
    global _RowClass
    if _RowClass is None:
        from dataclasses import make_dataclass

        from studies.analysis import DiscriminationRow

        split = [f"{stat}_{suffix}" for suffix in ("on_correct", "on_incorrect")
                 for stat in ("n_judgments", "n_correct", "n_items", "accuracy", "wilson_low", "wilson_high",
                              "boot_low", "boot_high", "binomial_p")]  # fmt: skip
        cls = make_dataclass("ForwardSimulationRow", [(f, object) for f in (*split, *_UTILITY_FIELDS)],
                             bases=(DiscriminationRow,), frozen=True)  # fmt: skip
        cls.__module__ = __name__
        cls.__qualname__ = "ForwardSimulationRow"
        _RowClass = cls
    return _RowClass


def __getattr__(name: str) -> Any:  # the row class, by name (pickling a cached result finds it here)
    if name == "ForwardSimulationRow":
        return _row_class()
    raise AttributeError(name)


def forward_simulation_analysis(j: Judgments, *, exclude_workers: Any = None, include_simulated: bool = True,
                                n_boot: int = 2000, seed: int = 0, confidence: float = 0.95,
                                **kwargs: Any) -> DiscriminationAnalysis:  # fmt: skip
    """``discrimination_analysis`` of the test-phase judgments per method (= per arm: each arm has its
    own copy of the test items, named by its method), chance 50%, each row extended with the utility
    ratio to the control (method 0, ``Study.methods[0]``) by :func:`utility_ratio`, on the same judgments
    (catch, excluded and, unless ``include_simulated``, simulated ones left out) and the same seed."""
    from dataclasses import asdict, replace

    import numpy as np

    from studies.analysis import discrimination_analysis

    whole = discrimination_analysis(j, n_options=2, exclude_workers=exclude_workers,
                                    include_simulated=include_simulated, n_boot=n_boot, seed=seed,
                                    confidence=confidence, **kwargs)  # fmt: skip
    keep = ~j.is_catch
    if not include_simulated:
        keep &= ~j.is_simulated
    if exclude_workers is not None and np.asarray(exclude_workers).size:
        keep &= ~np.isin(j.worker, np.asarray(exclude_workers, dtype=np.intp))
    assert j.correct is not None
    utilities = utility_ratio(j.correct[keep], j.method[keep], j.worker[keep], j.item[keep],
                              n_arms=len(j.method_names), n_boot=n_boot, seed=seed, confidence=confidence)  # fmt: skip
    # accuracy separately where the model was right and where it was wrong (the stored option order, see
    # ``main_items``: the right answer is the first option where the model was right, the second where wrong)
    stats = ("n_judgments", "n_correct", "n_items", "accuracy", "wilson_low", "wilson_high", "boot_low", "boot_high",
             "binomial_p")  # fmt: skip
    split: list[dict[str, Any]] = [{} for _ in whole.rows]
    if j.item_right_option is not None:
        for suffix, mask in (("on_correct", j.item_right_option == 0), ("on_incorrect", j.item_right_option == 1)):
            part = discrimination_analysis(j.subset(mask), n_options=2, exclude_workers=exclude_workers,
                                           include_simulated=include_simulated, n_boot=n_boot, seed=seed,
                                           confidence=confidence, **kwargs)  # fmt: skip
            for g, sub in enumerate(part.rows):
                split[g].update({f"{stat}_{suffix}": getattr(sub, stat) for stat in stats})
    cls = _row_class()
    empty = {f"{stat}_{suffix}": None for suffix in ("on_correct", "on_incorrect") for stat in stats}
    rows = [cls(**asdict(row), **{**empty, **extra}, utility=u.ratio, utility_low=u.low, utility_high=u.high)
            for row, u, extra in zip(whole.rows, utilities, split, strict=True)]  # fmt: skip
    return replace(whole, rows=tuple(rows))


DESIGN = register(ForwardSimulation())
