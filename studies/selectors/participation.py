"""Reads for the worker flow: where a participant stands and what a trial shows.

Shared by the HTML pages (``studies/web/pages.py``) and the JSON API (``studies/web/api.py``),
so both present the same trial, wording and progress.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal
from urllib.parse import quote

from django.urls import get_script_prefix, reverse
from django.utils.http import RFC3986_SUBDELIMS

from studies.models import Assignment, Item, Participant, Stimulus, Study
from studies.selectors import rows
from studies.services.allocation import assignment_choices, main_slot_available, slot_counts
from studies.services.participation import questionnaire_pending
from studies.wording import PLACEHOLDERS, SCALE_POINTS, TEXT_KEYS, template_error

Stage = Literal["consent", "declined", "practice", "trial", "questionnaire", "finish", "full", "completed"]

DEFAULT_QUESTIONS = {
    Study.Kind.CLASS_DISCRIMINATION: "What do you see? Which of the two categories does the highlighted evidence show?",
    Study.Kind.TRUST: "Which robot is more reasonable?",
}
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
    """The study's wording with each missing or unusable key filled from the kind's default.

    Never raises on a stored value the admin form would refuse (``studies.wording``): a
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
    hint = merged["trust_hint"] if study.kind == Study.Kind.TRUST else merged["discrimination_hint"]
    question = study.question.strip() if isinstance(study.question, str) else ""
    return Wording(
        question=question or DEFAULT_QUESTIONS[study.kind],
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
    .first()`` without compiling it each time (see :mod:`studies.selectors.rows`).
    """
    if not token or len(token) > 64:
        return None
    return rows.fetch_with_related(Participant, "study", token=token)


@dataclass(frozen=True)
class ParticipantState:
    stage: Stage
    answered: int
    planned: int


def participant_state(participant: Participant) -> ParticipantState:
    """The participant's stage: at most three queries, independent of study size."""
    status = participant.status
    if status == Participant.Status.COMPLETED:
        stage: Stage = "completed"
    elif status == Participant.Status.DECLINED:
        stage = "declined"
    elif status == Participant.Status.STARTED:
        stage = "consent"
    elif not participant.practice_passed:
        stage = "practice"
    else:
        stage = "finish"
    if stage in ("consent", "declined", "practice"):
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
    side: Literal["main", "left", "right"]
    label: str
    url: str


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
        }


def _images(
    *, study: Study, wording: Wording, item: Item, model_a_shown_left: bool | None, url_for: Any
) -> list[TrialImage]:
    if study.kind == Study.Kind.TRUST:
        return [
            TrialImage(side="left", label=wording.robot_a, url=url_for("left")),
            TrialImage(side="right", label=wording.robot_b, url=url_for("right")),
        ]
    return [TrialImage(side="main", label="", url=url_for("main"))]


#: The stimulus columns an image response needs (the rest of the row, e.g. its settings, is not read).
STIMULUS_FIELDS = ("file", "sha256")


def assignment_for_image(*, participant_token: str, assignment_token: str) -> Assignment | None:
    """The participant's assignment with this token, for its images (one query), or ``None``.

    Loads only ``model_a_shown_left``, the item's two stimuli and their :data:`STIMULUS_FIELDS`
    (the rest deferred), like ``Assignment.objects.select_related("item__stimulus_a",
    "item__stimulus_b").only(...).filter(participant__token=..., token=...).first()``.
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
    for name in ("stimulus_a", "stimulus_b"):
        stimulus = rows.instance(Stimulus, row, start, STIMULUS_FIELDS) if row[start] is not None else None
        Item._meta.get_field(name).set_cached_value(item, stimulus)
        start += rows.width(Stimulus, STIMULUS_FIELDS)
    Assignment._meta.get_field("item").set_cached_value(assignment, item)
    return assignment


_IMAGE_ASSIGNMENT = ("item", "model_a_shown_left")
_IMAGE_ITEM = ("stimulus_a", "stimulus_b")


@cache
def _image_sql(vendor: str) -> str:
    q, id_ = rows.q, rows.q("id")
    return (
        f"SELECT {rows.columns(Assignment, 'a', _IMAGE_ASSIGNMENT)}, {rows.columns(Item, 'i', _IMAGE_ITEM)}, "
        f"{rows.columns(Stimulus, 'sa', STIMULUS_FIELDS)}, {rows.columns(Stimulus, 'sb', STIMULUS_FIELDS)} "
        f"FROM {rows.table(Assignment)} a "
        f"INNER JOIN {rows.table(Participant)} p ON p.{id_} = a.{q('participant_id')} "
        f"INNER JOIN {rows.table(Item)} i ON i.{id_} = a.{q('item_id')} "
        f"LEFT OUTER JOIN {rows.table(Stimulus)} sa ON sa.{id_} = i.{q('stimulus_a_id')} "
        f"LEFT OUTER JOIN {rows.table(Stimulus)} sb ON sb.{id_} = i.{q('stimulus_b_id')} "
        f"WHERE p.{q('token')} = %s AND a.{q('token')} = %s"
    )


def stimulus_for_side(*, item: Item, side: str, model_a_shown_left: bool | None):  # type: ignore[no-untyped-def]
    """The ``Stimulus`` shown on ``side`` (main/left/right) of a trial, or ``None``."""
    if side == "main":
        return item.stimulus_a
    if side not in ("left", "right"):
        return None
    a_left = model_a_shown_left is not False
    return item.stimulus_a if (side == "left") == a_left else item.stimulus_b


def _view(
    *, study: Study, item: Item, token: str, option_order: list[int], model_a_shown_left: bool | None,
    number: int, total: int, url_for: Any, preload: list[str], expires_at: str = "",
) -> TrialView:  # fmt: skip
    wording = study_wording(study)
    options = [str(item.options[i]) for i in option_order] if study.kind != Study.Kind.TRUST else []
    return TrialView(
        token=token,
        kind=study.kind,
        question=wording.question,
        hint=wording.hint,
        number=number,
        total=total,
        images=_images(study=study, wording=wording, item=item, model_a_shown_left=model_a_shown_left, url_for=url_for),
        options=options,
        scale=wording.scale if study.kind == Study.Kind.TRUST else [],
        predicted=wording.predicted.format(label=item.target_label) if study.kind == Study.Kind.TRUST else "",
        comment_prompt=wording.comment if study.kind == Study.Kind.TRUST else "",
        preload=preload,
        expires_at=expires_at,
    )


def _sides(study: Study) -> list[str]:
    return ["left", "right"] if study.kind == Study.Kind.TRUST else ["main"]


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
    )


def practice_views(*, participant: Participant, items: list[Item], absolute: Any = str) -> list[TrialView]:
    """Practice trials as views (token = the item's public id); choices derived, not stored."""
    study = participant.study
    views = []
    for number, item in enumerate(items, start=1):
        choices = assignment_choices(
            study=study, participant_token=participant.token, slot=f"practice-{item.public_id}", item=item
        )

        def url_for(side: str, item: Item = item) -> str:
            return absolute(reverse("studies:worker-practice-stimulus", args=[participant.token, item.public_id, side]))

        views.append(
            _view(
                study=study, item=item, token=item.public_id, option_order=choices.option_order,
                model_a_shown_left=choices.model_a_shown_left, number=number, total=len(items),
                url_for=url_for, preload=[],
            )
        )  # fmt: skip
    return views


def example_view(*, study: Study, item: Item | None) -> TrialView | None:
    """An example trial for the MTurk preview and the instructions (a practice item, fixed order)."""
    if item is None:
        return None

    def url_for(side: str) -> str:
        return reverse("studies:worker-example-stimulus", args=[study.slug, item.public_id, side])

    return _view(
        study=study, item=item, token="example", option_order=list(range(len(item.options or []))),
        model_a_shown_left=True, number=1, total=1, url_for=url_for, preload=[],
    )  # fmt: skip


def platform_setup(*, study: Study, base_url: str) -> dict[str, str]:
    """What to paste into each platform for this study.

    MTurk: an ExternalQuestion XML whose URL MTurk extends with ``assignmentId``, ``hitId``,
    ``workerId`` and ``turkSubmitTo``. Prolific: the study URL with the ``{{%PROLIFIC_PID%}}``
    placeholders, and the completion URL ``https://app.prolific.com/submissions/complete?cc=<code>``.
    """
    entry = base_url.rstrip("/") + reverse("studies:worker-entry", args=[study.slug])
    xml = (
        '<ExternalQuestion xmlns="http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/'
        '2006-07-14/ExternalQuestion.xsd">\n'
        f"  <ExternalURL>{entry}</ExternalURL>\n"
        "  <FrameHeight>0</FrameHeight>\n"
        "</ExternalQuestion>"
    )
    prolific = f"{entry}?PROLIFIC_PID={{{{%PROLIFIC_PID%}}}}&STUDY_ID={{{{%STUDY_ID%}}}}&SESSION_ID={{{{%SESSION_ID%}}}}"
    return {
        "link": entry,
        "mturk_external_question": xml,
        "prolific_study_url": prolific,
        "prolific_completion_url": study.prolific_completion_url
        or f"https://app.prolific.com/submissions/complete?cc={study.completion_code}",
        "completion_code": study.completion_code,
    }
