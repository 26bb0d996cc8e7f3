"""Reads for the worker flow: where a participant stands, what they may do next, what a trial shows.

Shared by the HTML pages (``studies/web/pages.py``) and the JSON API (``studies/web/api.py``),
so both present the same trial, wording and progress, and by the services that write the flow
(``studies.services.participation``, ``allocation``, ``responses``), so the stage gates are written
once (:func:`stage_allows`). What differs between study designs (the question, the hint, what one
trial offers, the worked example's words) is asked of the study's design
(``studies.designs.design_for``). Nothing here writes, and no service is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal
from urllib.parse import quote

from django.templatetags.static import static
from django.urls import get_script_prefix, reverse
from django.utils.http import RFC3986_SUBDELIMS

from studies.designs.base import Side
from studies.designs.options import DEFAULT_OVERLAY_BASE
from studies.designs.registry import design_for
from studies.lib import rows
from studies.lib.arms import arm_methods
from studies.lib.choices import practice_choices
from studies.lib.rendering import colour_key_rows, rendering_of
from studies.lib.wording import PLACEHOLDERS, SCALE_POINTS, TEXT_KEYS, template_error
from studies.models import Assignment, Item, Participant, Stimulus, Study
from studies.selectors.allocation import main_slot_available, slot_counts

Stage = Literal[
    "consent", "declined", "practice", "screened_out", "trial", "questionnaire", "finish", "full", "completed"
]
#: The gates of the worker flow: which step a participant's row allows (:func:`stage_allows`).
Step = Literal["practice", "trials"]
DEFAULT_WORDING: dict[str, Any] = {
    "robot_a": "Robot A",
    "robot_b": "Robot B",
    "predicted": "Both robots predicted: {label}",
    "scale": [
        "Robot A is clearly more reasonable",
        "Robot A is slightly more reasonable",
        "Both are equally reasonable",
        "Robot B is slightly more reasonable",
        "Robot B is clearly more reasonable",
    ],
    "comment": "Optional: what made the difference?",
    "discrimination_hint": "The colours show where the computer looked to recognise one of the two categories.",
    "trust_hint": "Both robots recognised the same thing. The colours show where each robot looked. "
    "Which explanation makes more sense to you?",
}


@dataclass(frozen=True)
class Wording:
    question: str
    robot_a: str
    robot_b: str
    predicted: str
    scale: list[str]
    comment: str
    hint: str


def study_wording(study: Study) -> Wording:
    """The study's wording with each missing or unusable key filled from the default.

    The question is ``study.question``, else the design's ``default_question``; the hint is the
    wording text under the design's ``hint_key``.

    Never raises on a stored value the admin form would refuse (``studies.lib.wording``): a
    non-object wording, a non-text value, a malformed scale, or a ``predicted`` template with
    a placeholder other than ``{label}`` each fall back to the default text, so
    ``predicted.format(label=...)`` cannot fail on a worker page.
    """
    stored = study.wording if isinstance(study.wording, dict) else {}
    merged = {**DEFAULT_WORDING, **{k: v for k, v in stored.items()
                                    if k in DEFAULT_WORDING and v not in (None, "", [])}}  # fmt: skip
    for key in TEXT_KEYS:
        if not isinstance(merged[key], str):
            merged[key] = DEFAULT_WORDING[key]
    for key, allowed in PLACEHOLDERS.items():
        if template_error(merged[key], allowed) is not None:
            merged[key] = DEFAULT_WORDING[key]
    scale = merged["scale"]
    if not (isinstance(scale, list) and len(scale) == SCALE_POINTS and all(isinstance(s, str) for s in scale)):
        scale = DEFAULT_WORDING["scale"]
    design = design_for(study)
    hint = merged.get(design.hint_key, "") if design.hint_key else ""
    question = study.question.strip() if isinstance(study.question, str) else ""
    return Wording(
        question=question or design.default_question,
        robot_a=merged["robot_a"],
        robot_b=merged["robot_b"],
        predicted=merged["predicted"],
        scale=list(scale),
        comment=merged["comment"],
        hint=hint,
    )


def participant_by_token(token: str) -> Participant | None:
    """The participant with this opaque token (with its study), or ``None``.

    One statement, the same as ``Participant.objects.select_related("study").filter(token=token)
    .first()`` without compiling it each time (see :mod:`studies.lib.rows`).
    """
    if not token or len(token) > 64:
        return None
    return rows.fetch_with_related(Participant, "study", token=token)


def stage_allows_status(step: Step, *, status: str, practice_passed: bool) -> bool:
    """Whether a participant row with ``status`` and ``practice_passed`` may take ``step``.

    ``"practice"``: consented, practice not passed yet (the practice page, its grading).
    ``"trials"``: in progress with the practice passed (leasing and answering trials, completing).
    For a row read under its lock (``services.allocation.participant_lock``) as well as a loaded one.
    """
    if step == "practice":
        return status == Participant.Status.CONSENTED and not practice_passed
    if step == "trials":
        return status == Participant.Status.IN_PROGRESS and bool(practice_passed)
    raise ValueError(f"unknown step {step!r}")


def stage_allows(participant: Participant, step: Step) -> bool:
    """:func:`stage_allows_status` of a loaded participant (no query)."""
    return stage_allows_status(step, status=participant.status, practice_passed=participant.practice_passed)


def practice_attempt_limit(study: Study) -> int:
    """The attempts a participant has: ``study.practice_attempts``, at least 1 (whatever the row holds)."""
    return max(study.practice_attempts or 0, 1)


def practice_attempt(participant: Participant) -> int:
    """The participant's current (next ungraded) practice attempt, 1-based."""
    return participant.practice_attempts_used + 1


def practice_exhausted(participant: Participant) -> bool:
    """Screened out, or every allowed attempt used without passing."""
    if participant.status == Participant.Status.SCREENED_OUT:
        return True
    return not participant.practice_passed and participant.practice_attempts_used >= practice_attempt_limit(participant.study)


def questionnaire_pending(*, participant: Participant) -> bool:
    """Whether the study asks closing questions this participant has not submitted yet."""
    return bool(participant.study.questionnaire) and "submitted_at" not in (participant.questionnaire or {})


@dataclass(frozen=True)
class ParticipantState:
    stage: Stage
    answered: int
    planned: int


@dataclass(frozen=True)
class NextStep(ParticipantState):
    """The participant's next step: a :class:`ParticipantState`, and for the ``trial`` stage the open
    leases to show (current first; empty when the stage was read without leasing)."""

    leases: list[Assignment] = field(default_factory=list)


def participant_next_step(participant: Participant, *, lease: Any = None) -> NextStep:
    """What the participant does next, for the pages and the API alike.

    ``lease`` is what ``services.allocation.trial_lease`` returned (``leases``, ``answered``,
    ``planned``) for a participant whose gate allows trials (:func:`stage_allows` ``"trials"``; the
    caller leases first, since leasing is a write): with an open lease the step is that ``trial``,
    read from the lease (no further query). Otherwise (no lease taken, or none left) the step is
    :func:`participant_state`'s stage.
    """
    if lease is not None and lease.leases:
        return NextStep(stage="trial", answered=lease.answered, planned=lease.planned, leases=list(lease.leases))
    state = participant_state(participant)
    return NextStep(stage=state.stage, answered=state.answered, planned=state.planned)


def participant_state(participant: Participant) -> ParticipantState:
    """The participant's stage: at most three queries, independent of study size.

    ``completed``, ``declined``, ``consent`` (started) from the status; then ``screened_out``
    (:func:`practice_exhausted`), ``practice`` (not passed); then, from the slot counts: ``trial``
    (an open lease, or trials left and a free main slot), ``full`` (no free slot and nothing
    answered), ``questionnaire`` (pending), else ``finish``.
    """
    status = participant.status
    if status == Participant.Status.COMPLETED:
        stage: Stage = "completed"
    elif status == Participant.Status.DECLINED:
        stage = "declined"
    elif status == Participant.Status.STARTED:
        stage = "consent"
    elif practice_exhausted(participant):
        stage = "screened_out"  # failed every allowed practice attempt: the polite end, no trials
    elif not participant.practice_passed:
        stage = "practice"
    else:
        stage = "finish"
    if stage in ("consent", "declined", "practice", "screened_out"):
        return ParticipantState(stage=stage, answered=0, planned=0)
    counts = slot_counts(participant=participant)
    if stage == "finish":
        if counts.open or (counts.answered < counts.planned and main_slot_available(participant=participant)):
            stage = "trial"
        elif counts.answered == 0:
            stage = "full"
        elif questionnaire_pending(participant=participant):
            stage = "questionnaire"
    return ParticipantState(stage=stage, answered=counts.answered, planned=counts.planned)


@dataclass(frozen=True)
class TrialImage:
    side: Side
    label: str
    url: str


@dataclass(frozen=True)
class ColourKeyRow:
    """One row of a study's colour key: the legend of one rendering its stimuli use.

    ``image`` is the legend drawn by the renderer itself (``explainers.render.colour_key_png``, a
    static file), ``low``/``high`` label its two ends, ``description`` says it in a sentence.
    """

    kind: str
    image: str
    low: str
    high: str
    description: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "image": self.image, "low": self.low, "high": self.high,
                "description": self.description}


@cache
def _colour_key_rows(methods: tuple[str, ...], base: str, static_prefix: str) -> tuple[ColourKeyRow, ...]:
    rows_ = []
    for row in colour_key_rows(methods):
        description = row["description"]
        if row["kind"] == "overlay" and base == "gray":
            description += " The picture underneath is shown in grey, so every colour you see is the computer's."
        rows_.append(ColourKeyRow(kind=row["kind"], image=static(row["image"]), low=row["low"], high=row["high"],
                                  description=description))
    return tuple(rows_)


def study_colour_key(study: Study, arm: str = "") -> list[ColourKeyRow]:
    """The colour key a participant sees: one row per rendering the methods they can be shown use,
    the same on every one of their trials.

    Built from the study's methods (not the trial's), so the key itself says nothing about the
    trial's method or answer; a participant in a between-subject arm (``arm``) gets its arm's
    methods only, so an arm shown no map (``image_only``, ``nearest_examples``) gets no heatmap key.
    """
    try:  # a stored value the admin would refuse never breaks a worker page: the default look
        base = design_for(study).options(study).overlay_base
    except ValueError:
        base = DEFAULT_OVERLAY_BASE
    methods = tuple(str(m) for m in (study.methods or []))
    if arm and isinstance(study.arms, list):
        methods = tuple(str(m) for m in arm_methods(study.arms, arm) or methods)
    return list(_colour_key_rows(methods, base, static("")))


@dataclass(frozen=True)
class TrialView:
    """Everything one trial page (or API response) shows; no hint of the right answer."""

    token: str
    kind: str
    question: str
    hint: str
    number: int
    total: int
    images: list[TrialImage]
    options: list[str] = field(default_factory=list)
    scale: list[str] = field(default_factory=list)
    predicted: str = ""
    comment_prompt: str = ""
    preload: list[str] = field(default_factory=list)
    expires_at: str = ""
    key: list[ColourKeyRow] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """``dataclasses.asdict(self)``, written out (it deep-copies field by field, slowly)."""
        return {
            "token": self.token,
            "kind": self.kind,
            "question": self.question,
            "hint": self.hint,
            "number": self.number,
            "total": self.total,
            "images": [{"side": i.side, "label": i.label, "url": i.url} for i in self.images],
            "options": list(self.options),
            "scale": list(self.scale),
            "predicted": self.predicted,
            "comment_prompt": self.comment_prompt,
            "preload": list(self.preload),
            "expires_at": self.expires_at,
            "key": [row.as_dict() for row in self.key],
        }


@dataclass(frozen=True)
class ExampleView(TrialView):
    """The worked example: a trial view plus its answer and why (instructions, MTurk preview)."""

    answer: str = ""
    why: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "answer": self.answer, "why": self.why}


def _images(*, study: Study, item: Item, option_order: list[int], wording: Wording, url_for: Any) -> list[TrialImage]:
    """One image per side of the design (``Design.sides``, in page order), captioned by
    ``Design.side_labels``. The URL names the displayed side only (the same shape on every side):
    which stored stimulus it shows is resolved on the server (:func:`stimulus_for_side`)."""
    design = design_for(study)
    labels = design.side_labels(item=item, option_order=option_order, wording=wording)
    return [TrialImage(side=side, label=label, url=url_for(side)) for side, label in zip(design.sides, labels, strict=True)]


#: The stimulus columns an image response needs (the rest of the row, e.g. its settings, is not read).
STIMULUS_FIELDS = ("file", "sha256")


def assignment_for_image(*, participant_token: str, assignment_token: str) -> Assignment | None:
    """The participant's assignment with this token, for its images (one query), or ``None``.

    Loads only ``model_a_shown_left`` and ``option_order`` (the stored choices that say which
    stimulus a displayed side shows), the item's study's ``kind`` (its design), the item's four
    stimulus slots and their :data:`STIMULUS_FIELDS` (the rest deferred), like
    ``Assignment.objects.select_related("item__study", "item__stimulus_a", ..., "item__stimulus_d")
    .only(...).filter(participant__token=..., token=...).first()``.
    """
    if not participant_token or not assignment_token:
        return None
    row = rows.fetchone(_image_sql(rows.vendor()), [participant_token, assignment_token])
    if row is None:
        return None
    assignment = rows.instance(Assignment, row, 0, _IMAGE_ASSIGNMENT)
    start = rows.width(Assignment, _IMAGE_ASSIGNMENT)
    item = rows.instance(Item, row, start, _IMAGE_ITEM)
    start += rows.width(Item, _IMAGE_ITEM)
    for name in _IMAGE_ITEM[1:]:
        stimulus = rows.instance(Stimulus, row, start, STIMULUS_FIELDS) if row[start] is not None else None
        Item._meta.get_field(name).set_cached_value(item, stimulus)
        start += rows.width(Stimulus, STIMULUS_FIELDS)
    Item._meta.get_field("study").set_cached_value(item, rows.instance(Study, row, start, _IMAGE_STUDY))
    Assignment._meta.get_field("item").set_cached_value(assignment, item)
    return assignment


_IMAGE_ASSIGNMENT = ("item", "model_a_shown_left", "option_order")
_IMAGE_ITEM = ("study", "stimulus_a", "stimulus_b", "stimulus_c", "stimulus_d")
_IMAGE_STUDY = ("kind",)
#: the stimulus slots joined by :func:`_image_sql` (``Item.stimulus_<slot>``), in row order
_IMAGE_SLOTS = ("a", "b", "c", "d")


@cache
def _image_sql(vendor: str) -> str:
    q, id_ = rows.q, rows.q("id")
    stimuli = ", ".join(rows.columns(Stimulus, f"s{slot}", STIMULUS_FIELDS) for slot in _IMAGE_SLOTS)
    joins = " ".join(f"LEFT OUTER JOIN {rows.table(Stimulus)} s{slot} ON s{slot}.{id_} = i.{q(f'stimulus_{slot}_id')}"
                     for slot in _IMAGE_SLOTS)  # fmt: skip
    return (
        f"SELECT {rows.columns(Assignment, 'a', _IMAGE_ASSIGNMENT)}, {rows.columns(Item, 'i', _IMAGE_ITEM)}, "
        f"{stimuli}, {rows.columns(Study, 'st', _IMAGE_STUDY)} "
        f"FROM {rows.table(Assignment)} a "
        f"INNER JOIN {rows.table(Participant)} p ON p.{id_} = a.{q('participant_id')} "
        f"INNER JOIN {rows.table(Item)} i ON i.{id_} = a.{q('item_id')} "
        f"INNER JOIN {rows.table(Study)} st ON st.{id_} = i.{q('study_id')} "
        f"{joins} "
        f"WHERE p.{q('token')} = %s AND a.{q('token')} = %s"
    )


def stimulus_for_side(*, study: Study, item: Item, side: str, model_a_shown_left: bool | None,
                      option_order: list[int] | None = None):  # type: ignore[no-untyped-def]  # fmt: skip
    """The ``Stimulus`` shown on displayed ``side`` of a trial, or ``None``: the slot the study's design
    names for it from the trial's stored choices (``Design.side_slot``: ``main`` -> a; ``left``/``right``
    by ``model_a_shown_left``; a panel ``p<k>`` by ``option_order``), so a URL names a place on the page,
    never which stimulus is right."""
    design = design_for(study)
    slot = design.side_slot(side, option_order=list(option_order or []), model_a_shown_left=model_a_shown_left)
    if slot is None or slot not in design.stimulus_slots:
        return None
    return getattr(item, f"stimulus_{slot}")


def _view(
    *, study: Study, item: Item, token: str, option_order: list[int], model_a_shown_left: bool | None,
    number: int, total: int, url_for: Any, preload: list[str], expires_at: str = "", absolute: Any = str,
    view_class: type[TrialView] = TrialView, arm: str = "", **extra: Any,
) -> TrialView:  # fmt: skip
    """One trial as shown: the design says what it offers (``Design.trial_content``) and its images."""
    design = design_for(study)
    wording = study_wording(study)
    content = design.trial_content(item=item, option_order=option_order, wording=wording)
    key = study_colour_key(study, arm)
    if absolute is not str:
        key = [ColourKeyRow(r.kind, absolute(r.image), r.low, r.high, r.description) for r in key]
    return view_class(
        token=token,
        kind=design.name,
        question=wording.question,
        hint=wording.hint,
        number=number,
        total=total,
        images=_images(study=study, item=item, option_order=option_order, wording=wording, url_for=url_for),
        options=list(content["options"]),
        scale=list(content["scale"]),
        predicted=content["predicted"],
        comment_prompt=content["comment_prompt"],
        preload=preload,
        expires_at=expires_at,
        key=key,
        **extra,
    )


def _sides(study: Study) -> list[str]:
    return list(design_for(study).sides)


_MARKS = ("zQ7mark0Qz", "zQ7mark1Qz", "zQ7mark2Qz")
#: What ``reverse`` leaves unquoted in a path (``django.urls.resolvers``).
_PATH_SAFE = RFC3986_SUBDELIMS + "/~:@"


@cache
def _stimulus_template(script_prefix: str) -> tuple[str, ...]:
    """``reverse("studies:worker-stimulus")`` cut at its three arguments (per script prefix)."""
    path = reverse("studies:worker-stimulus", args=list(_MARKS))
    pieces = []
    for mark in _MARKS:
        head, path = path.split(mark, 1)
        pieces.append(head)
    return (*pieces, path)


def stimulus_path(participant_token: str, assignment_token: str, side: str) -> str:
    """``reverse("studies:worker-stimulus", args=[...])`` from a cached template.

    Each argument is quoted as ``reverse`` quotes it; an argument ``reverse`` would refuse
    (empty, or with a ``/`` that the ``str`` converter does not match) goes to ``reverse``
    itself, which raises ``NoReverseMatch`` as before.
    """
    args = (participant_token, assignment_token, side)
    if not all(args) or any("/" in arg for arg in args):
        return reverse("studies:worker-stimulus", args=list(args))
    a, b, c, d = _stimulus_template(get_script_prefix())
    return f"{a}{quote(args[0], safe=_PATH_SAFE)}{b}{quote(args[1], safe=_PATH_SAFE)}{c}{quote(args[2], safe=_PATH_SAFE)}{d}"


def trial_view(
    *, participant: Participant, leases: list[Assignment], answered: int, planned: int, absolute: Any = str
) -> TrialView:
    """The first open lease as a trial; the images of the next leases are listed for preloading.

    ``absolute`` turns a path into the URL to show (``request.build_absolute_uri`` for the API).
    """
    study = participant.study
    current = leases[0]

    def url_for_assignment(assignment: Assignment):  # type: ignore[no-untyped-def]
        return lambda side: absolute(stimulus_path(participant.token, assignment.token, side))

    preload = [url_for_assignment(nxt)(side) for nxt in leases[1:] for side in _sides(study)]
    return _view(
        study=study,
        item=current.item,
        token=current.token,
        option_order=list(current.option_order or []),
        model_a_shown_left=current.model_a_shown_left,
        number=answered + 1,
        total=planned,
        url_for=url_for_assignment(current),
        preload=preload,
        expires_at=current.expires_at.isoformat(),
        absolute=absolute,
        arm=participant.arm,
    )


def practice_views(*, participant: Participant, items: list[Item], attempt: int, absolute: Any = str) -> list[TrialView]:
    """One practice attempt's trials as views (token = the item's public id).

    The option order and Robot A side are re-derived per (participant, attempt) with the keyed
    generator (:func:`studies.lib.choices.practice_choices`), not stored; the image
    URLs name the attempt, so an item shown again in a later attempt gets its own side.
    """
    study = participant.study
    views = []
    for number, item in enumerate(items, start=1):
        choices = practice_choices(study=study, participant_token=participant.token, attempt=attempt, item=item)

        def url_for(side: str, item: Item = item) -> str:
            path = reverse("studies:worker-practice-stimulus", args=[participant.token, item.public_id, side])
            return absolute(f"{path}?attempt={attempt}")

        views.append(
            _view(
                study=study, item=item, token=item.public_id, option_order=choices.option_order,
                model_a_shown_left=choices.model_a_shown_left, number=number, total=len(items),
                url_for=url_for, preload=[], arm=participant.arm,
            )
        )  # fmt: skip
    return views


def example_view(*, study: Study, item: Item | None, arm: str = "") -> ExampleView | None:
    """The worked example for the MTurk preview and the instructions: a practice item (fixed
    option order, model A on the left), with its right answer and why (:func:`example_answer`);
    ``arm``: the participant's between-subject arm (its colour key).

    Practice items come from the study's own pipeline (one of its methods, its renderer, the
    map kept on one object), so the example teaches the encoding of the real trials.
    """
    if item is None:
        return None

    def url_for(side: str) -> str:
        return reverse("studies:worker-example-stimulus", args=[study.slug, item.public_id, side])

    answer, why = example_answer(study=study, item=item)
    view = _view(
        study=study, item=item, token="example", option_order=list(range(len(item.options or []))),
        model_a_shown_left=True, number=1, total=1, url_for=url_for, preload=[], view_class=ExampleView,
        answer=answer, why=why, arm=arm,
    )  # fmt: skip
    assert isinstance(view, ExampleView)
    return view


def _where(image: Any, category: str) -> str:
    """Where a category's box is in its picture, in words ("the left", "the top right", "the middle")."""
    box = next((b for b in image.boxes or [] if b.get("category") == category), None)
    if box is None or not image.width or not image.height:
        return ""
    cx = (box["x0"] + box["x1"]) / 2 / image.width
    cy = (box["y0"] + box["y1"]) / 2 / image.height
    vertical = "top" if cy < 0.4 else "bottom" if cy > 0.6 else ""
    horizontal = "left" if cx < 0.4 else "right" if cx > 0.6 else ""
    return " ".join(p for p in (vertical, horizontal) if p) or "middle"


def example_answer(*, study: Study, item: Item) -> tuple[str, str]:
    """The worked example's right answer and why, in the words of the study's own rendering.

    The design words it (``Design.example_answer``) from the item, the study's wording, where the
    target's box is (``place``: "the cat (at the top left of the picture)", or "the cat") and whether
    the item's map is drawn as a gradient image (else a colour overlay). Empty strings for an item
    with no right answer.
    """
    wording = study_wording(study)
    label = item.target_label
    where = _where(item.image, label)
    place = f"the {label} (at the {where} of the picture)" if where else f"the {label}"
    gradient = rendering_of(item.method) == "gradient"
    return design_for(study).example_answer(item=item, wording=wording, place=place, gradient=gradient)


def platform_setup(*, study: Study, base_url: str) -> dict[str, str]:
    """What to paste into the study's own platform, and nothing for the others.

    Always: ``platform`` (its label), ``title`` and ``description`` (what to type as the HIT's /
    Prolific study's title and description: the study's *public* title and description, never
    its internal name, which could tell workers the design) and ``link`` (the entry URL).
    MTurk adds ``mturk_external_question``: an ExternalQuestion XML whose URL MTurk extends
    with ``assignmentId``, ``hitId``, ``workerId`` and ``turkSubmitTo`` (each worker gets an own
    code; the HIT is submitted from the page). Prolific adds ``prolific_study_url`` (the link
    with the ``{{%PROLIFIC_PID%}}`` placeholders), ``prolific_completion_url`` (the study's own or
    ``https://app.prolific.com/submissions/complete?cc=<code>``) and ``completion_code``. A plain
    link study gets only the link (each participant is shown an own code at the end).
    """
    entry = base_url.rstrip("/") + reverse("studies:worker-entry", args=[study.slug])
    setup = {
        "platform": Study.Platform(study.platform).label,
        "title": study.public_title,
        "description": study.public_description,
        "link": entry,
    }
    if study.platform == Study.Platform.MTURK:
        setup["mturk_external_question"] = (
            '<ExternalQuestion xmlns="http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/'
            '2006-07-14/ExternalQuestion.xsd">\n'
            f"  <ExternalURL>{entry}</ExternalURL>\n"
            "  <FrameHeight>0</FrameHeight>\n"
            "</ExternalQuestion>"
        )
    elif study.platform == Study.Platform.PROLIFIC:
        setup["prolific_study_url"] = (
            f"{entry}?PROLIFIC_PID={{{{%PROLIFIC_PID%}}}}&STUDY_ID={{{{%STUDY_ID%}}}}&SESSION_ID={{{{%SESSION_ID%}}}}"
        )
        setup["prolific_completion_url"] = (
            study.prolific_completion_url or f"https://app.prolific.com/submissions/complete?cc={study.completion_code}"
        )
        setup["completion_code"] = study.completion_code
    return setup
