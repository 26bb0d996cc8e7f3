"""What a study design declares: the contract every design module fills in.

A design is one kind of human study. Its module (``studies/designs/<name>.py``) subclasses
:class:`Design`, fills in what differs from the defaults below, and registers one instance with
:func:`studies.designs.registry.register`. Its trial template is ``studies/designs/<name>.html``
(``Design.template``). Everything outside ``studies/designs/`` asks the study's design
(``design_for(study)``) instead of comparing ``study.kind``.

The contract is grouped by the process that reads it:

- identity and configuration (the admin, ``services.study_checks``);
- planning: which items the pipeline makes and what counts as right (``studies.pipeline``);
- the worker: what one trial shows, the answer's schema, validation and scoring
  (``studies.selectors.participation``, ``studies.services.responses``, ``studies.web``);
- results: the analysis table, plots and export columns (``studies.services.results``,
  ``studies.services.exports``, ``studies.web.results``);
- the simulated observer (``studies.fixtures.simulation``).

Design modules import no torch and no ``explainers`` engine (the web process reads them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    import numpy as np

    from studies.analysis import ExclusionRule, Judgments, StudyAnalysis  # results
    from studies.designs.options import StudyOptions
    from studies.models import ClassifierModel, Image, Item, Stimulus, Study

#: a trial image's place on the page: one picture (``main``), a pair (``left``, ``right``) or panels in
#: page order (``p1``..``p4``; which stimulus a panel shows is :meth:`Design.side_slot`'s)
Side = Literal["main", "left", "right", "p1", "p2", "p3", "p4"]


class Design:
    """Defaults shared by the designs; a design module overrides what differs."""

    # ------------------------------------------------------------------ identity and configuration
    #: stored in ``Study.kind``; an identifier
    name: ClassVar[str] = ""
    #: the admin's label for the kind
    label: ClassVar[str] = ""
    #: the question a worker reads when the study sets none
    default_question: ClassVar[str] = ""
    #: the image slots of one trial, in page order (``main``, or ``left`` and ``right``)
    sides: ClassVar[tuple[Side, ...]] = ("main",)
    #: ``"model"``: one classifier (``Study.model``); ``"pair"``: two (``Study.model_pair``, A then B)
    models_from: ClassVar[Literal["model", "pair"]] = "model"
    #: what the study checks say when the model (or pair) is missing
    models_missing: ClassVar[str] = "choose a model"
    #: the item roles (``Item.Role`` values) a between-subject arm's methods filter (``Study.arms``):
    #: ``selectors.allocation.participant_methods`` offers a participant with an arm only items of
    #: these roles whose method is its arm's; other roles are everyone's. Default: the main items.
    arm_roles: ClassVar[tuple[str, ...]] = ("main",)

    @property
    def template(self) -> str:
        """The design's trial template (the part of a trial page inside the form)."""
        return f"studies/designs/{self.name}.html"

    def study_models(self, study: Study) -> list[ClassifierModel]:
        """The models whose maps the study shows: the model, or the pair's A then B."""
        if self.models_from == "pair":
            pair = study.model_pair
            return [pair.model_a, pair.model_b]
        return [study.model]

    def config_errors(self, study: Study) -> dict[str, str]:
        """Field -> message for what this design needs of a study before it can be prepared."""
        if self.models_from == "pair" and study.model_pair_id is None:
            return {"model_pair": self.models_missing}
        if self.models_from == "model" and study.model_id is None:
            return {"model": self.models_missing}
        return {}

    # ------------------------------------------------------------------ planning (studies.pipeline)
    # The pipeline asks the design which items a study has and which maps fill their stimulus
    # slots; it computes, renders and stores the maps itself. ``models`` are the study's models
    # (:meth:`study_models`), ``options`` its parsed ``explainer_options`` (:meth:`options`).

    #: the class that reads ``Study.explainer_options``: ``None`` = :class:`studies.designs.options.StudyOptions`,
    #: or a subclass of it that adds the design's own keys
    options_class: ClassVar[type[StudyOptions] | None] = None

    def options(self, study: Study) -> StudyOptions:
        """The study's ``explainer_options``, parsed by :attr:`options_class`. Raises
        :class:`~studies.designs.options.OptionsError` (a ``ValueError``) naming a bad key."""
        from studies.designs.options import StudyOptions

        return (self.options_class or StudyOptions).parse(study.explainer_options)

    def options_errors(self, study: Study) -> list[str]:
        """What is wrong with the study's ``explainer_options`` (:meth:`options`'s message), or ``[]``."""
        try:
            self.options(study)
        except ValueError as exc:
            return [str(exc)]
        return []

    @property
    def stimulus_slots(self) -> tuple[str, ...]:
        """The stimulus fields an item fills (``"a"``: ``Item.stimulus_a``, ``"b"``: ``Item.stimulus_b``):
        one per model of :meth:`study_models`, in order (slot k shows a map of model k)."""
        return ("a", "b") if self.models_from == "pair" else ("a",)

    @property
    def model_labels(self) -> tuple[str, ...]:
        """Per model of :meth:`study_models`, the suffix of its automatic-evaluation metrics
        (``<metric>:A``, ``<metric>:B``); ``""`` (no suffix) when the design shows one model."""
        return ("A", "B") if self.models_from == "pair" else ("",)

    def main_targets(self, study: Study, images: Sequence[Image], models: Sequence[ClassifierModel],
                     options: StudyOptions) -> dict[int, list[str]]:
        """Image id -> the categories a main item on that image may target; an image left out makes
        no main item. Default: every image with a category, with its distinct categories."""
        from studies.lib.scenes import categories_of

        return {image.pk: categories_of(image) for image in images if categories_of(image)}

    def main_items(self, study: Study, images: Sequence[Image],
                   targets: dict[int, list[str]]) -> list[tuple[Image, str, list[str], int | None]]:
        """The main items' questions in order, ``(image, target category, options, correct_option)``;
        the planner makes one item of each per method of the study (the target's class is the
        category's class for the first model). ``images``: those main items use, in id order;
        ``targets``: :meth:`main_targets`. Default: one per (image, target); the options are the
        image's targets, the right one the target."""
        return [(image, category, list(targets[image.pk]), index)
                for image in images for index, category in enumerate(targets[image.pk])]

    def main_notes(self, study: Study, images: Sequence[Image], models: Sequence[ClassifierModel],
                   options: StudyOptions) -> list[str]:  # fmt: skip
        """What the planner should say about the main items it could not make (the plan summary's
        ``notes``), e.g. how many images were skipped and why. Default: nothing."""
        return []

    def no_items_message(self, study: Study) -> str:
        """Why the study has no main item (a failed preparation's message): what to change."""
        return f"no image of {study.image_set.name!r} can make a main item of a {self.label or self.name} study"

    def obvious_usable(self, image: Image) -> bool:
        """Whether catch and practice candidates may be planned on ``image``. Default: it has a
        category with a box (the maps of an obvious item are read inside the object's box)."""
        from studies.lib.scenes import boxed_categories

        return bool(boxed_categories(image))

    def obvious_methods(self, study: Study) -> list[str]:
        """The methods catch and practice candidates are planned with (``plan._obvious_plan``) and
        cycled over when kept (``plan.obvious_select``). Default: the study's map methods, in order
        (a catch or practice item shows a map kept inside a box; the picture alone or example
        images, ``studies.lib.rendering.NON_MAP_METHODS``, give none)."""
        from studies.lib.rendering import rendering_of

        return [m for m in dict.fromkeys(study.methods or []) if rendering_of(m) in ("overlay", "gradient")]

    def obvious_answer(self, image: Image, category: str, bit: int) -> tuple[list[str], int]:
        """``(options, correct_option)`` of a catch/practice candidate whose target is ``category``.
        ``bit`` (0 or 1) is balanced over a role's candidates in a seeded order, for a design whose
        right answer is one of two sides. Default: the image's categories; the right one is ``category``."""
        from studies.lib.scenes import categories_of

        options = categories_of(image)
        return options, options.index(category)

    def item_maps(self, study: Study, item: Item, models: Sequence[ClassifierModel], *, method: str, image: Image,
                  options: StudyOptions) -> list[tuple[str, ClassifierModel, str, int]]:
        """What fills each of an item's stimulus slots: ``(slot, model, stimulus method, class)``.
        ``method``: the item's engine method (a catch/practice item's too), ``image``: the item's
        image. Default: slot k (:attr:`stimulus_slots`) shows model k's map of ``method`` for the
        item's target class."""
        return [(slot, model, method, item.target_class) for slot, model in zip(self.stimulus_slots, models, strict=True)]

    def obvious_maps(self, item: Item, other: str | None) -> list[tuple[Stimulus, str, str | None]]:
        """How a catch/practice item's maps give its answer: per map, ``(stimulus, the category it must
        show, the category it must not)``; the planner's ``obvious_share`` is the smallest share of
        salience on the first over both. ``other``: the image's other boxed category, or None.
        Default: ``stimulus_a`` shows the target rather than ``other``."""
        return [(item.stimulus_a, item.target_label, other)]

    def obvious_side(self, item: Item) -> str:
        """What the kept catch/practice items alternate (``plan.obvious_select`` keeps the side kept
        less first). Default: where the target is on the picture (``left``/``right``/``centre``)."""
        from studies.lib.scenes import image_sides

        return image_sides(item.image).get(item.target_label, "centre")

    # ------------------------------------------------------------------ the worker (selectors, services, web)
    # What one trial shows and how its answer is read: ``selectors.participation`` builds the trial
    # (page and API alike) from these, ``lib.choices`` draws its random choices, ``services.responses``
    # validates and scores the answer, ``services.participation`` grades practice, ``web.openapi``
    # documents the payloads, and the design's template (:attr:`template`) draws its parts. ``wording``
    # below is the study's wording (``selectors.participation.Wording``: ``question``, ``robot_a``,
    # ``robot_b``, ``predicted``, ``scale``, ``comment``, ``hint``). The defaults are those of a choice
    # among the item's options, shown in a drawn order, one of them right.
    #
    # The worker pages include the design's template (``design_template`` in their context) once per
    # part, ``{% include design_template with part="<part>" %}``; the template draws the part named:
    # ``instructions`` (how to answer, on the instructions page), ``trial`` (the answer controls inside
    # the trial form: submit buttons named ``choice``, valued 0..n-1; ``trial`` is the trial view),
    # ``practice_keys`` (the answer keys, inline), ``practice`` (one practice trial's radios named
    # ``choice_<t.token>``; ``t`` is the trial view), ``feedback_correct`` (inline after "Correct.") and
    # ``feedback_wrong`` (after "Not quite.") of a graded practice item (``fb``: its feedback).

    #: the wording key (``studies.lib.wording.TEXT_KEYS``) whose text is the hint above every trial
    #: and on the instructions ("" for none)
    hint_key: ClassVar[str] = ""

    def draw_choices(self, *, rng: Any, item: Item) -> tuple[list[int], bool | None]:
        """``(option_order, model_a_shown_left)`` of one trial, drawn from ``rng`` (a ``random.Random``
        keyed per participant and slot, ``lib.slots.slot_rng``), in this order: the option order,
        ``rng.shuffle`` of ``range(len(item.options))``; then, for a design that shows a pair of models
        (:attr:`models_from` ``"pair"``), whether model A is shown as Robot A on the left, a fair coin
        ``rng.random() < 0.5``; ``None`` otherwise. The order of the draws is part of the rule: changing
        it changes every draw of a seed."""
        order = list(range(len(item.options or [])))
        rng.shuffle(order)
        side = rng.random() < 0.5 if self.models_from == "pair" else None
        return order, side

    def stored_order_problem(self, order: Any, n_options: int) -> str | None:
        """What is wrong with an assignment's stored ``option_order`` (the audit), or ``None``: by
        :meth:`draw_choices`'s rule it is a permutation of ``range(n_options)``."""
        if not isinstance(order, list) or sorted(order) != list(range(n_options)):
            return f"stores option_order {order!r}, not a permutation of {n_options} options"
        return None

    def side_label(self, side: Side, wording: Any) -> str:
        """The caption over the image on ``side`` (a trial's images are :attr:`sides`). Default: none."""
        return ""

    def side_labels(self, *, item: Item, option_order: list[int], wording: Any) -> list[str]:
        """The captions over a trial's images, one per :attr:`sides` in page order. Default:
        :meth:`side_label` of each side (the item and the drawn order do not change them)."""
        return [self.side_label(side, wording) for side in self.sides]

    def side_slot(self, side: str, *, option_order: list[int], model_a_shown_left: bool | None) -> str | None:
        """Which stimulus slot (:attr:`stimulus_slots`: ``"a"`` = ``Item.stimulus_a``, ...) the image on
        displayed ``side`` shows, from the trial's stored choices; ``None`` for a side the design does not
        show. Default: ``main`` shows ``a``; ``left`` shows ``a`` when model A is shown left (or no side
        is stored), else ``b``, and ``right`` the other one."""
        if side == "main":
            return "a"
        if side not in ("left", "right"):
            return None
        a_left = model_a_shown_left is not False
        return "a" if (side == "left") == a_left else "b"

    def trial_content(self, *, item: Item, option_order: list[int], wording: Any) -> dict[str, Any]:
        """What a trial offers to answer, as the trial payload's ``options`` (the item's options in
        the displayed order), ``scale`` (the labels of a rating scale), ``predicted`` (a line under the
        images) and ``comment_prompt`` (an optional comment's label; empty: no comment). Default: the
        options, ``[item.options[i] for i in option_order]``, and nothing else."""
        return {"options": [str(item.options[i]) for i in option_order], "scale": [], "predicted": "",
                "comment_prompt": ""}  # fmt: skip

    def answer_range(self, option_order: list[int]) -> tuple[int, str]:
        """``(n, what)``: an answer's ``choice`` is an integer ``0..n-1`` indexing ``what`` (named in the
        400 message). Default: ``(len(option_order), "displayed option")``."""
        return len(option_order), "displayed option"

    def answer_score(self, *, item: Item, option_order: list[int], model_a_shown_left: bool | None,
                     choice: int) -> tuple[int | None, bool | None, int | None]:  # fmt: skip
        """``(chosen_option, correct, score_model_a)`` stored for a displayed ``choice`` (already in
        :meth:`answer_range`). Default (Selvaraju et al. 2017, 5.1): ``chosen_option = option_order[choice]``,
        ``correct = chosen_option == item.correct_option`` (``None`` when the item has no right answer), no score."""
        chosen = option_order[choice]
        correct = None if item.correct_option is None else chosen == item.correct_option
        return chosen, correct, None

    def practice_feedback(self, *, item: Item, option_order: list[int],
                          model_a_shown_left: bool | None) -> tuple[int | None, Literal["A", "B"] | None, str]:  # fmt: skip
        """What the practice feedback names as the right answer of a graded practice item:
        ``(correct_choice, correct_robot, right_answer)``, i.e. the displayed index of the right option,
        the displayed robot (``"A"`` left, ``"B"`` right) that was right, and the right answer in words.
        Default: the displayed index of ``item.correct_option`` and its label; no robot; nothing
        when the item has no right answer (or it was not shown)."""
        if item.correct_option is None or item.correct_option not in option_order:
            return None, None, ""
        return option_order.index(item.correct_option), None, str(item.options[item.correct_option])

    def example_answer(self, *, item: Item, wording: Any, place: str, gradient: bool) -> tuple[str, str]:
        """The worked example's right answer and why, in the words of the study's own rendering (the
        instructions and the MTurk preview show the example with its option order as stored and model
        A on the left). ``place``: "the <target>" with where its box is ("the cat (at the top left of
        the picture)"); ``gradient``: the example's map is drawn as a gradient image (else a colour
        overlay). Default: none (``("", "")``)."""
        return "", ""

    def answer_schema(self) -> dict[str, Any]:
        """The JSON schema (OpenAPI 3.0) of an answer's ``choice`` for this design; ``web.openapi``
        merges the designs' (the smallest minimum, the largest maximum). Default: an integer >= 0."""
        return {"type": "integer", "minimum": 0}

    def trial_schema(self) -> dict[str, Any]:
        """What this design puts in the trial payload, for the OpenAPI schema: ``answer`` (how to
        answer, one sentence) and ``properties`` (the payload fields it fills, with their schema and
        description); ``web.openapi`` takes the union over the designs (every field is always present,
        empty where a design does not use it)."""
        return {
            "answer": f"`{self.name}`: `choice` = 0-based index into `options`",
            "properties": {"options": {"type": "array", "items": {"type": "string"},
                                       "description": "the answers, in the order shown"}},
        }  # fmt: skip

    # ------------------------------------------------------------------ results (analysis, exports, results pages)
    # ``selectors.judgments`` loads a study's answers through the design, ``services.results`` runs its
    # analysis, ``web.results`` shows its table and plots, ``services.exports`` writes its answers,
    # ``services.audit`` and ``services.validity`` check what applies to it. The defaults are those of a
    # choice among the item's options with one right option (scored by accuracy); a design whose answer
    # is something else (a rating, ...) overrides them.

    #: the analysis's name: ``StudyResults.kind`` and the ``kind`` column of the summary and pairwise CSVs
    analysis_name: ClassVar[str] = "accuracy"
    #: the table function of :mod:`studies.analysis` that :meth:`analyse` runs, by name
    analysis_table: ClassVar[str] = "discrimination_analysis"
    #: the field of an analysis row that is the method's human score (shown beside the automatic metrics)
    score_field: ClassVar[str] = "accuracy"
    #: decimals of a score difference in the pairwise table
    score_digits: ClassVar[int] = 3
    #: what the score is, in the pairwise table's note (``{model_a}`` and ``{model_b}`` filled in)
    score_caption: ClassVar[str] = "accuracy"
    #: the header of the human score beside the automatic metrics
    human_score_header: ClassVar[str] = "Human score"
    #: the results page's part for the design: the models line and the per-method table (rows from
    #: :meth:`results_row`)
    results_template: ClassVar[str] = "studies/results/designs/accuracy.html"
    #: the results page's plots besides the timeline, in page order: name -> (figure function of
    #: ``studies.web.plots``, caption, title); ``{model_a}``, ``{model_b}`` and, in a title, ``{label}``
    #: (``with exclusions`` / ``all workers``) are filled in
    result_plots: ClassVar[dict[str, tuple[str, str, str]]] = {
        "scores": ("accuracy_figure", "Accuracy per method", "accuracy per method ({label})"),
        "answers": ("answers_figure", "Answers per method: correct or wrong", "answers per method ({label})"),
    }
    #: whether ``services.audit`` re-derives each response's ``correct`` flag (:meth:`correct_expected`)
    audits_correct: ClassVar[bool] = True
    #: ``services.validity`` checks that do not apply to the design, with the reason its report shows
    validity_not_applicable: ClassVar[dict[str, str]] = {"robot_a_side": "one picture per trial"}
    #: ``services.validity``'s position check: ``"categories"``: each category's box lies left of the
    #: other's in about half of its images (the side would give the answer away); ``"target"``: the
    #: category a trial is about is the left object in about half of the main items (or a binomial test
    #: cannot tell the share from 50%)
    position_balance: ClassVar[Literal["categories", "target"]] = "categories"
    #: the category a trial is about, as the position check names it (short, and in a sentence)
    target_name: ClassVar[str] = "target"
    target_description: ClassVar[str] = "the category the worker is asked about"

    def judgments_usable(self, *, correct_known: np.ndarray, score_known: np.ndarray,
                         is_catch: np.ndarray) -> np.ndarray:  # fmt: skip
        """Which loaded responses hold a usable answer (``selectors.judgments``; the others are counted
        as dropped). Boolean arrays per response. Default: those whose ``correct`` flag is known."""
        return correct_known

    def judgment_answers(self, *, chosen_option: np.ndarray, position: np.ndarray, score_model_a: np.ndarray,
                         score_known: np.ndarray, model_a_shown_left: np.ndarray) -> dict[str, np.ndarray]:  # fmt: skip
        """The answer columns of :class:`studies.analysis.Judgments` for the usable responses
        (``selectors.judgments``). ``chosen_option``: the option index (-1 unknown); ``position``: the
        screen position of the chosen option (-1 unknown); ``score_model_a``: the stored score towards
        model A, valid where ``score_known``; ``model_a_shown_left``: booleans.

        Default: ``answer = chosen_option`` (-1 unknown), ``option_position = position`` (the
        straight-lining rule reads the position clicked)."""
        import numpy as np

        return {"answer": np.where(chosen_option >= 0, chosen_option, -1), "option_position": position}

    def analysis_options(self, *, n_options: int) -> dict[str, Any]:
        """Arguments of :attr:`analysis_table` beyond the bootstrap's. ``n_options``: the most options
        of a main item. Default: ``n_options = max(2, n_options)`` (chance = ``1 / n_options``)."""
        return {"n_options": max(2, n_options)}

    def analyse(self, judgments: Judgments, rules: Sequence[ExclusionRule], *, n_options: int = 2,
                **kwargs: Any) -> StudyAnalysis:  # fmt: skip
        """The design's table on every worker and without the workers ``rules`` exclude:
        ``studies.analysis.analyse_both(judgments, rules, table=<analysis_table>, **analysis_options, **kwargs)``
        (``kwargs``: ``n_boot``, ``seed``, ...)."""
        from studies import analysis

        table = getattr(analysis, self.analysis_table)
        return analysis.analyse_both(judgments, rules, table=table, **self.analysis_options(n_options=n_options),
                                     **kwargs)  # fmt: skip

    def human_score(self, row: Any) -> Any:
        """A method's human score in an analysis row: its :attr:`score_field`."""
        return getattr(row, self.score_field)

    def results_row(self, row: Any) -> dict[str, Any]:
        """The cells of one method's row in the design's results table (:attr:`results_template`), as
        text (``–`` unknown); the page adds ``label`` (the method's name as shown). Default (an
        accuracy row): accuracy in percent, correct / n, the Wilson and cluster-bootstrap intervals,
        the binomial p against chance, Krippendorff's alpha (nominal) and the majority-vote accuracy."""
        from studies.analysis.display import number_text, p_text, percent_text

        return {
            "method": row.method, "n": row.n_judgments, "workers": row.n_workers, "items": row.n_items,
            "score": percent_text(row.accuracy), "detail": f"{row.n_correct}/{row.n_judgments}",
            "wilson": f"[{number_text(row.wilson_low)}, {number_text(row.wilson_high)}]",
            "boot": f"[{number_text(row.boot_low)}, {number_text(row.boot_high)}]",
            "p": p_text(row.binomial_p), "alpha": number_text(row.alpha_nominal),
            "majority": f"{number_text(row.majority_accuracy)} ({row.majority_n_items} items, {row.majority_ties} ties)",
        }  # fmt: skip

    def model_names(self, study: Study) -> tuple[str, str]:
        """``(model A, model B)`` as the results and the exports name them: the pair's names when the
        design shows a pair and the study has one; else ``(the model's name or "", "")``."""
        if self.models_from == "pair" and study.model_pair_id:
            pair = study.model_pair
            return pair.model_a.name, pair.model_b.name
        return (study.model.name if study.model_id else ""), ""

    def export_answer(self, *, options: list[str], order: list[int], chosen_option: int | None,
                      score_model_a: int | None, model_a_shown_left: bool | None,
                      scale: Sequence[str]) -> dict[str, Any]:  # fmt: skip
        """One response's answer as ``services.exports`` writes it: ``answer`` (the MTurk file's
        ``Answer.trial_NN_answer``), ``answer_option``, ``answer_label``, ``answer_position`` and
        ``robot_a_is_model_a`` (tidy CSV). ``order``: the option order shown; ``scale``: the study's
        rating scale wording. Default (a choice): the option index chosen, its text, its position in
        ``order``; the answer is the text (the index when the text is unknown); no robots."""
        label = options[chosen_option] if chosen_option is not None and 0 <= chosen_option < len(options) else None
        return {
            "answer": label if label is not None else chosen_option, "answer_option": chosen_option,
            "answer_label": label, "answer_position": order.index(chosen_option) if chosen_option in order else None,
            "robot_a_is_model_a": None,
        }  # fmt: skip

    def correct_expected(self, *, chosen_option: int | None, correct_option: int | None) -> bool | None:
        """The ``correct`` flag a response must hold (``services.audit``, when :attr:`audits_correct`):
        ``chosen_option == item.correct_option``; ``None`` when nothing was chosen."""
        return None if chosen_option is None else chosen_option == correct_option

    def stored_side_problem(self, model_a_shown_left: bool | None) -> str | None:
        """What is wrong with an assignment's stored Robot A side (``services.audit``), or ``None``: a
        trial of a pair (:attr:`models_from` ``"pair"``, drawn by :meth:`draw_choices`) stores which model
        is shown left; a one-model trial (one picture, or several of one model) none."""
        pair = self.models_from == "pair"
        if pair and model_a_shown_left is None:
            return f"({self.name}) stores no Robot A side"
        if not pair and model_a_shown_left is not None:
            return f"({self.name}) stores a Robot A side"
        return None

    def layout_target(self, item: Item) -> tuple[list[str], str, str] | None:
        """``(categories, target, other)`` of a main item's two-category image, for
        ``services.validity``'s position and blind-observer checks; ``None``: the item has no such pair.
        Default: the item's two options; the target is the right one."""
        options = list(item.options or [])
        if len(options) != 2 or item.correct_option not in (0, 1):
            return None
        return options, options[item.correct_option], options[1 - item.correct_option]

    # ------------------------------------------------------------------ the simulated observer (fixtures)
    # ``studies.fixtures.simulation.observers`` asks the trial's design how an observer's rule answers it.
    # What the page shows comes in as plain values: ``options`` (the displayed options, in page order),
    # ``stimuli`` (the served PNGs, in page order) and ``class_label`` (the category the page names).
    # An answer goes back as the observer ``Answer``'s fields: ``{"option": i}`` (an index into the
    # displayed options) or ``{"score": s}`` (a point of a rating scale).

    def observer_guess(self, *, options: list[str], rng: np.random.Generator) -> dict[str, int]:
        """A guess (the ``random`` and ``careless`` observers, a reader's lapse): each answer the page
        offers with equal probability. Default: a displayed option, ``rng.integers(len(options))``."""
        return {"option": int(rng.integers(len(options)))}

    def observer_first(self, *, options: list[str]) -> dict[str, int]:
        """A straight-liner's answer, the same on every trial: the first answer the page offers.
        Default: the first displayed option."""
        return {"option": 0}

    def observer_read(self, *, stimuli: list[bytes], options: list[str], class_label: str,
                      fraction: Callable[[bytes, str], float], rng: np.random.Generator,
                      noise: float, weak: float, strong: float) -> dict[str, int]:  # fmt: skip
        """What a ``heatmap_reader`` answers (when it does not lapse). ``fraction(png, category)`` is the
        share of the map's perceived salience inside that category's object (0 when the picture has
        none); ``noise`` the sd of the Gaussian perception noise; ``weak`` and ``strong`` the reader's
        thresholds on a difference of fractions (for answers on a scale).

        Default (a choice among categories): ``fraction(stimuli[0], option) + N(0, noise)`` for each
        displayed option, in page order; the largest is picked."""
        perceived = [fraction(stimuli[0], option) + rng.normal(0, noise) for option in options]
        return {"option": int(max(range(len(perceived)), key=perceived.__getitem__))}

    def observer_choice(self, *, option: int | None, score: int | None) -> int:
        """The ``choice`` the trial API takes for an observer's answer (the index of the displayed
        answer). Default: the option index."""
        assert option is not None, f"{self.name}: an observer answers with an option"
        return int(option)

    def observer_synthetic(self, *, correct_option: int | None, quality: float | None,
                           rng: np.random.Generator) -> dict[str, int | bool | None]:  # fmt: skip
        """A synthetic worker's answer to a main item (``studies.fixtures.synthetic_responses``, no
        page involved), as ``Response`` fields ``chosen_option``, ``correct``, ``score_model_a``.
        ``quality``: the method's quality for an attentive worker; ``None`` for a careless one.

        Default (two options, one right): right with probability ``quality`` (careless: 0.5), one
        ``rng.random()`` draw; a wrong answer is the other option."""
        right = bool(rng.random() < (0.5 if quality is None else quality))
        assert correct_option is not None, f"{self.name}: a synthetic answer needs the right option"
        chosen = correct_option if right else 1 - correct_option
        return {"chosen_option": chosen, "correct": right, "score_model_a": None}

    def __repr__(self) -> str:
        return f"<Design {self.name}>"
