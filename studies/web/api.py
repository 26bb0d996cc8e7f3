"""The worker flow as a JSON API (``/api/v1/...``), over the same services as the HTML pages.

Authentication: ``POST /api/v1/studies/{slug}/enter`` returns a ``participant_token``; every
other call sends it in the ``X-Participant-Token`` header. No cookie is read or set, so the API
is exempt from Django's cookie-based CSRF check (there is no ambient credential to forge).
Errors are ``{"error": <code>, "detail": <text>}`` with 400 (invalid input, naming the field),
403 (missing/unknown token or refused entry), 404 (unknown study or trial), 405, 409 (step
out of order) and 429 (rate limited). The schema is :data:`studies.web.openapi.SCHEMA`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.request import RawPostDataException
from django.views.decorators.csrf import csrf_exempt

from studies.designs.registry import design_for
from studies.lib.consent import consent_text_effective
from studies.models import Participant, Study
from studies.selectors.participation import (
    ParticipantState,
    example_view,
    participant_by_token,
    participant_next_step,
    practice_attempt,
    practice_attempt_limit,
    practice_exhausted,
    practice_views,
    stage_allows,
    study_wording,
    trial_view,
)
from studies.services.allocation import trial_lease
from studies.services.participation import (
    MAX_VIEWPORT_PX,
    EntryInvalid,
    EntryRefused,
    MTurkPreview,
    ScreenedOut,
    StepNotAllowed,
    ViewportTooSmall,
    completion_for,
    entry_parse,
    participant_complete,
    participant_consent,
    participant_enter,
    practice_draw,
    practice_example,
    practice_example_shown,
    practice_grade,
    questionnaire_questions,
    questionnaire_submit,
    screened_out_message,
    viewport_parse,
)
from studies.services.responses import (
    AnswerInvalid,
    AssignmentNotFound,
    ParticipantNotAnswering,
    response_record,
)
from studies.web.guards import JsonInvalid, json_parse
from studies.web.openapi import schema
from studies.web.ratelimit import Counter, client_address, rate_limited, study_entry_counter

TOKEN_HEADER = "X-Participant-Token"
ENTRY_PARAMS = ("assignmentId", "hitId", "workerId", "turkSubmitTo", "PROLIFIC_PID", "STUDY_ID", "SESSION_ID", "inv")


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str):
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


def _error(status: int, error: str, detail: str) -> JsonResponse:
    return JsonResponse({"error": error, "detail": detail}, status=status)


def _body(request: HttpRequest) -> dict[str, Any]:
    """The JSON object in the body, whatever the Content-Type says ({} when empty).

    Malformed, undecodable or too deeply nested JSON (:func:`studies.web.guards.json_parse`)
    is a 400 ``invalid_json``; so is a multipart form, which the NUL guard has already parsed.
    """
    try:
        raw = request.body
    except RawPostDataException as exc:
        raise ApiError(400, "invalid_json", "the body must be a JSON object, not a form") from exc
    if not raw:
        return {}
    try:
        data = json_parse(raw)
    except JsonInvalid as exc:
        raise ApiError(400, "invalid_json", f"the body must be a JSON object ({exc})") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    return data


def _participant(request: HttpRequest) -> Participant:
    token = request.headers.get(TOKEN_HEADER, "")
    participant = participant_by_token(token)
    if participant is None:
        raise ApiError(403, "forbidden", f"a valid {TOKEN_HEADER} header is required")
    return participant


def _endpoint(methods: dict[str, Callable[[HttpRequest], JsonResponse]]) -> Callable[..., HttpResponse]:
    """One URL, a handler per method; JSON errors for everything that goes wrong."""

    @csrf_exempt
    def view(request: HttpRequest, **kwargs: Any) -> HttpResponse:
        handler = methods.get(request.method or "")
        if handler is None:
            response = _error(405, "method_not_allowed", f"use {', '.join(sorted(methods))}")
            response["Allow"] = ", ".join(sorted(methods))
            return response
        try:
            return handler(request, **kwargs)
        except ApiError as exc:
            return _error(exc.status, exc.error, exc.detail)
        except AnswerInvalid as exc:
            return _error(400, "invalid", f"{exc.field}: {exc.message}")
        except ScreenedOut as exc:
            return _error(409, "screened_out", str(exc))
        except StepNotAllowed as exc:
            return _error(409, "step_not_allowed", str(exc))

    return view


def _state_json(participant: Participant, state: ParticipantState | None = None) -> dict[str, Any]:
    state = state or participant_next_step(participant)
    data: dict[str, Any] = {"stage": state.stage, "answered": state.answered, "planned": state.planned}
    if state.stage == "completed":
        data["completion"] = _completion_json(participant)
    elif state.stage == "screened_out":
        data["message"] = screened_out_message(participant=participant)
    return data


def _completion_json(participant: Participant) -> dict[str, str]:
    completion = completion_for(participant)
    return {
        "code": completion.code,
        "platform": completion.platform,
        "mturk_submit_url": completion.mturk_submit_url,
        "mturk_assignment_id": completion.mturk_assignment_id,
        "prolific_redirect_url": completion.prolific_redirect_url,
    }


def _study_json(study: Study) -> dict[str, Any]:
    wording = study_wording(study)
    # Only what the worker may see: the public title and description, never the internal name.
    return {
        "title": study.public_title,
        "description": study.public_description,
        "kind": design_for(study).name,
        "question": wording.question,
        "hint": wording.hint,
        "consent_text": consent_text_effective(study.consent_text),
        "consent_version": study.consent_version,
        "instructions": study.instructions,
        "practice_pass_fraction": study.practice_pass_fraction,
        "min_viewport": {"width": study.min_viewport_width, "height": study.min_viewport_height},
        "questionnaire": [
            {"name": q.name, "label": q.label, "type": q.type, "choices": list(q.choices), "required": q.required}
            for q in questionnaire_questions(study=study)
        ],
    }


def _trial_json(view: Any) -> dict[str, Any]:
    return view.as_dict()


# --- entry -----------------------------------------------------------------------------


def _entry_key(request: HttpRequest, kwargs: dict[str, Any]) -> Counter:
    """Entries are counted per (study, client address), shared with the HTML entry; unknown slugs
    in a scope of their own, so they never spend a real study's budget."""
    return study_entry_counter(request, kwargs.get("slug", ""))


@rate_limited("entry", key=_entry_key, json=True)
def _enter(request: HttpRequest, slug: str) -> JsonResponse:
    study = Study.objects.filter(slug=slug).first()
    if study is None:
        raise ApiError(404, "not_found", "unknown study")
    body = _body(request)
    params: dict[str, str] = {}
    for name in ENTRY_PARAMS:
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ApiError(400, "invalid_entry", f"{name}: must be a string")
        params[name] = value
    try:
        identity = entry_parse(study=study, params=params)
        if isinstance(identity, MTurkPreview):
            shown = practice_example_shown(study=study)
            example = example_view(study=study, item=practice_example(study=study) if shown else None)
            return JsonResponse(
                {
                    "preview": True,
                    "participant_token": None,
                    "state": None,
                    "study": _study_json(study),
                    "example": _absolute_view(request, example),
                }
            )
        result = participant_enter(
            study=study, identity=identity, client_key=client_address(request), invitation=params.get("inv", "")
        )
    except EntryInvalid as exc:
        raise ApiError(400, "invalid_entry", f"{exc.field}: {exc.message}") from exc
    except EntryRefused as exc:
        raise ApiError(403, exc.code, exc.message) from exc
    participant = result.participant
    return JsonResponse(
        {
            "preview": False,
            "participant_token": participant.token,
            "state": _state_json(participant),
            "study": _study_json(study),
            "example": None,
        },
        status=201 if result.created else 200,
    )


def _absolute_view(request: HttpRequest, view: Any) -> dict[str, Any] | None:
    if view is None:
        return None
    data = view.as_dict()
    for image in data["images"]:
        image["url"] = request.build_absolute_uri(image["url"])
    return data


# --- participant -------------------------------------------------------------------------


def _get_participant(request: HttpRequest) -> JsonResponse:
    participant = _participant(request)
    return JsonResponse({"state": _state_json(participant), "study": _study_json(participant.study)})


def _post_consent(request: HttpRequest) -> JsonResponse:
    participant = _participant(request)
    body = _body(request)
    agree, version = body.get("agree"), body.get("consent_version")
    if not isinstance(agree, bool):
        raise ApiError(400, "invalid", "agree: must be true or false")
    if not isinstance(version, str):
        raise ApiError(400, "invalid", "consent_version: must be a string")
    raw = body.get("viewport")
    viewport = None
    if raw is not None:
        viewport = viewport_parse(raw.get("width"), raw.get("height")) if isinstance(raw, dict) else None
        if viewport is None:
            raise ApiError(400, "invalid", f"viewport: must be {{\"width\": int, \"height\": int}}, 1..{MAX_VIEWPORT_PX} each")
    try:
        participant_consent(participant=participant, agree=agree, version=version, viewport=viewport)
    except ViewportTooSmall as exc:
        raise ApiError(400, "viewport_too_small", f"viewport: {exc} (nothing was recorded)") from exc
    return JsonResponse({"state": _state_json(participant)})


def _get_practice(request: HttpRequest) -> JsonResponse:
    participant = _participant(request)
    if practice_exhausted(participant):
        raise ScreenedOut(screened_out_message(participant=participant))
    if not stage_allows(participant, "practice"):
        raise StepNotAllowed(f"practice is not open (status {participant.status})")
    attempt = practice_attempt(participant)
    items = practice_draw(study=participant.study, participant_token=participant.token, attempt=attempt)
    views = practice_views(participant=participant, items=items, attempt=attempt, absolute=request.build_absolute_uri)
    return JsonResponse(
        {
            "trials": [_trial_json(v) for v in views],
            "pass_fraction": participant.study.practice_pass_fraction,
            "attempt": attempt,
            "attempts": practice_attempt_limit(participant.study),
        }
    )


def _post_practice(request: HttpRequest) -> JsonResponse:
    participant = _participant(request)
    body = _body(request)
    answers = body.get("answers", {})
    if not isinstance(answers, dict):
        raise ApiError(400, "invalid", "answers: must be an object mapping practice trial tokens to choices")
    attempt = body.get("attempt")
    if attempt is not None and (isinstance(attempt, bool) or not isinstance(attempt, int)):
        raise ApiError(400, "invalid", "attempt: must be an integer (the attempt GET practice returned)")
    result = practice_grade(participant=participant, answers=answers, attempt=attempt)
    wording = study_wording(participant.study)
    robots = {"A": wording.robot_a, "B": wording.robot_b}
    return JsonResponse(
        {
            "passed": result.passed,
            "n_correct": result.n_correct,
            "n_items": result.n_items,
            "required": result.required,
            "attempt": result.attempt,
            "attempts": result.attempts,
            "attempts_left": result.attempts_left,
            "screened_out": result.screened_out,
            "feedback": [
                {
                    "token": fb.item_public_id,
                    "correct": fb.correct,
                    "correct_choice": fb.correct_choice,
                    "correct_robot": fb.correct_robot,
                    "right_answer": robots[fb.correct_robot] if fb.correct_robot else fb.right_answer,
                }
                for fb in result.feedback
            ],
            "state": _state_json(participant),
        }
    )


def _get_trial(request: HttpRequest) -> JsonResponse:
    participant = _participant(request)
    lease = None
    if stage_allows(participant, "trials"):
        lease = trial_lease(participant=participant, mark_shown=True, only_if_answering=True)
    step = participant_next_step(participant, lease=lease)
    if step.stage == "trial" and step.leases:
        view = trial_view(
            participant=participant, leases=step.leases, answered=step.answered, planned=step.planned,
            absolute=request.build_absolute_uri,
        )  # fmt: skip
        return JsonResponse({"trial": _trial_json(view), "state": _state_json(participant, step)})
    return JsonResponse({"trial": None, "state": _state_json(participant, step)})


def _submit_key(request: HttpRequest, kwargs: dict[str, Any]) -> str:
    """Answers are counted per participant token (the same counter as the HTML answer form)."""
    return f"participant|{request.headers.get(TOKEN_HEADER, '')}"


@rate_limited("submit", key=_submit_key, json=True)
def _post_trial(request: HttpRequest) -> JsonResponse:
    participant = _participant(request)
    body = _body(request)
    token = body.get("assignment")
    if not isinstance(token, str) or not token:
        raise ApiError(400, "invalid", "assignment: must be the trial token")
    try:
        outcome = response_record(
            participant=participant,
            assignment_token=token,
            choice=body.get("choice"),  # type: ignore[arg-type]
            client_response_ms=body.get("client_response_ms"),
            focus_events=body.get("focus_events"),
            comment=body.get("comment", ""),
        )
    except AssignmentNotFound as exc:
        raise ApiError(404, "not_found", "unknown trial") from exc
    except ParticipantNotAnswering as exc:
        raise StepNotAllowed(f"not answering trials (status {exc})") from exc
    return JsonResponse({"outcome": outcome.status, "state": _state_json(participant)})


def _post_questionnaire(request: HttpRequest) -> JsonResponse:
    participant = _participant(request)
    answers = _body(request).get("answers", {})
    if not isinstance(answers, dict):
        raise ApiError(400, "invalid", "answers: must be an object")
    questionnaire_submit(participant=participant, answers=answers)
    return JsonResponse({"state": _state_json(participant)})


def _post_complete(request: HttpRequest) -> JsonResponse:
    participant = _participant(request)
    participant_complete(participant=participant)
    return JsonResponse({"completion": _completion_json(participant), "state": _state_json(participant)})


def _get_openapi(request: HttpRequest) -> JsonResponse:
    return JsonResponse(schema())


openapi = _endpoint({"GET": _get_openapi})
enter = _endpoint({"POST": _enter})
participant = _endpoint({"GET": _get_participant})
consent = _endpoint({"POST": _post_consent})
practice = _endpoint({"GET": _get_practice, "POST": _post_practice})
trial = _endpoint({"GET": _get_trial, "POST": _post_trial})
questionnaire = _endpoint({"POST": _post_questionnaire})
complete = _endpoint({"POST": _post_complete})
