"""The worker's HTML pages: thin views over ``studies.services`` and ``studies.selectors``.

URLs carry only the study slug (entry) or the participant's opaque token; every page may be
framed by MTurk (``frameable``); every POST is checked by ``worker_csrf`` (signed form token,
no cookies needed) and follows POST-redirect-GET.
"""

from __future__ import annotations

import mimetypes
from typing import Any

from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from studies.designs.registry import design_for
from studies.lib.choices import practice_choices
from studies.models import Item, Participant, Study
from studies.selectors.participation import (
    assignment_for_image,
    example_view,
    participant_by_token,
    participant_next_step,
    practice_attempt,
    practice_attempt_limit,
    practice_exhausted,
    practice_views,
    stage_allows,
    stimulus_for_side,
    study_wording,
    trial_view,
)
from studies.services.allocation import trial_lease
from studies.services.participation import (
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
    practice_items,
    practice_round_size,
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
from studies.web.http import form_token_make, frameable, worker_csrf
from studies.web.ratelimit import Counter, client_address, rate_limited, study_entry_counter

RESUME_COOKIE_SALT = "xaistudy.link-resume"


def _resume_cookie(study: Study) -> str:
    return f"xaistudy_{study.slug[:16]}"


def _participant_or_404(token: str) -> Participant:
    participant = participant_by_token(token)
    if participant is None:
        raise Http404("unknown participant")
    return participant


def _home(participant: Participant) -> HttpResponseRedirect:
    return HttpResponseRedirect(reverse("studies:worker-home", args=[participant.token]))


def _refused(request: HttpRequest, study: Study | None, message: str, status: int) -> HttpResponse:
    return render(request, "studies/refused.html", {"study": study, "message": message}, status=status)


def _context(participant: Participant, **extra: Any) -> dict[str, Any]:
    return {
        "participant": participant,
        "study": participant.study,
        "form_token": form_token_make(participant.token),
        "wording": study_wording(participant.study),
        "design_template": design_for(participant.study).template,
        **extra,
    }


def _submit_key(request: HttpRequest, kwargs: dict[str, Any]) -> str:
    """Answers are counted per participant (the token in the URL), wherever they come from."""
    return f"participant|{kwargs.get('token', '')}"


def _entry_key(request: HttpRequest, kwargs: dict[str, Any]) -> Counter:
    """Entries are counted per (study, client address); unknown slugs in a scope of their own."""
    return study_entry_counter(request, kwargs.get("slug", ""))


@frameable
@require_GET
@rate_limited("entry", key=_entry_key)
def entry(request: HttpRequest, slug: str) -> HttpResponse:
    """``/s/<slug>/``: the study link for MTurk, Prolific or plain use."""
    study = get_object_or_404(Study, slug=slug)
    try:
        identity = entry_parse(study=study, params=request.GET)
        if isinstance(identity, MTurkPreview):
            shown = practice_example_shown(study=study)
            example = example_view(study=study, item=practice_example(study=study) if shown else None)
            return render(
                request,
                "studies/preview.html",
                {"study": study, "example": example, "wording": study_wording(study),
                 "design_template": design_for(study).template},
            )
        token = request.get_signed_cookie(_resume_cookie(study), default=None, salt=RESUME_COOKIE_SALT)
        resume = participant_by_token(token) if token else None
        result = participant_enter(
            study=study, identity=identity, resume_participant=resume,
            client_key=client_address(request), invitation=request.GET.get("inv", ""),
        )  # fmt: skip
    except EntryInvalid as exc:
        return _refused(request, study, f"This link is incomplete or malformed ({exc.field} {exc.message}).", 400)
    except EntryRefused as exc:
        return _refused(request, study, exc.message, 403)
    target = "studies:worker-done" if result.completed else "studies:worker-home"
    response = HttpResponseRedirect(reverse(target, args=[result.participant.token]))
    # This browser's proof of being this participant (see services.participation). MTurk shows the
    # page in a cross-site frame, where only a SameSite=None (so Secure) cookie can be sent back.
    framed = result.participant.platform == "mturk" and request.is_secure()
    response.set_signed_cookie(
        _resume_cookie(study), result.participant.token, salt=RESUME_COOKIE_SALT,
        max_age=30 * 24 * 3600, httponly=True, samesite="None" if framed else "Lax",
        secure=request.is_secure(),
    )  # fmt: skip
    return response


@frameable
@require_GET
def home(request: HttpRequest, token: str) -> HttpResponse:
    """``/p/<token>/``: the page for the participant's current stage (:func:`participant_next_step`;
    a participant whose gate allows trials takes or resumes a lease first)."""
    participant = _participant_or_404(token)
    lease = None
    if stage_allows(participant, "trials"):
        lease = trial_lease(participant=participant, mark_shown=True, only_if_answering=True)
    state = participant_next_step(participant, lease=lease)
    if state.stage == "trial" and state.leases:
        view = trial_view(participant=participant, leases=state.leases, answered=state.answered, planned=state.planned)
        return render(request, "studies/trial.html", _context(participant, trial=view, state=state))
    if state.stage == "consent":
        return render(request, "studies/consent.html", _context(participant))
    if state.stage == "declined":
        return render(request, "studies/declined.html", _context(participant))
    if state.stage == "practice":
        pool = practice_items(study=participant.study, participant=participant)
        example = example_view(study=participant.study, item=practice_example(study=participant.study, pool=pool),
                               arm=participant.arm)
        n_practice = practice_round_size(study=participant.study, pool=pool)
        return render(request, "studies/instructions.html", _context(participant, example=example, n_practice=n_practice))
    if state.stage == "screened_out":
        return _screened_out(request, participant)
    if state.stage == "questionnaire":
        questions = questionnaire_questions(study=participant.study)
        return render(request, "studies/questionnaire.html", _context(participant, questions=questions))
    if state.stage == "finish":
        return render(request, "studies/finish.html", _context(participant, state=state))
    if state.stage == "full":
        return _refused(request, participant.study, EntryRefused.MESSAGES["full"], 200)
    return HttpResponseRedirect(reverse("studies:worker-done", args=[participant.token]))


def device_refused_message(exc: ViewportTooSmall) -> str:
    """What a worker below the study's minimum viewport reads (nothing has been recorded)."""
    need = " and ".join(f"{v} pixels {side}" for v, side in ((exc.min_width, "wide"), (exc.min_height, "high")) if v)
    yours = f" (yours is {exc.measured[0]} x {exc.measured[1]})" if exc.measured else ""
    return (f"Please switch to a larger screen. This study needs a window at least {need}{yours}. Open the same "
            "study link on a computer or a larger tablet, or enlarge this window. Nothing has been recorded.")  # fmt: skip


@frameable
@worker_csrf
@require_POST
def consent(request: HttpRequest, token: str) -> HttpResponse:
    participant = _participant_or_404(token)
    agree = request.POST.get("decision") == "agree"
    viewport = viewport_parse(request.POST.get("viewport_width"), request.POST.get("viewport_height"))
    # An outdated or repeated form changes nothing: the home page shows the current state.
    try:
        participant_consent(
            participant=participant, agree=agree, version=request.POST.get("consent_version", ""), viewport=viewport
        )
    except StepNotAllowed:
        pass
    except ViewportTooSmall as exc:  # nothing stored: the consent page again, with the device message
        return render(request, "studies/consent.html", _context(participant, device_refused=device_refused_message(exc)),
                      status=400)  # fmt: skip
    return _home(participant)


def _screened_out(request: HttpRequest, participant: Participant, result: Any = None) -> HttpResponse:
    """The polite end of a participant who failed every practice attempt (no trials, no code)."""
    return render(
        request, "studies/screened_out.html",
        _context(participant, message=screened_out_message(participant=participant), result=result),
    )  # fmt: skip


def _practice_round(participant: Participant) -> tuple[int, list[Any], list[Any]]:
    """The current attempt, its items and their views."""
    attempt = practice_attempt(participant)
    items = practice_draw(study=participant.study, participant_token=participant.token, attempt=attempt)
    return attempt, items, practice_views(participant=participant, items=items, attempt=attempt)


@frameable
@worker_csrf
@require_http_methods(["GET", "POST"])
def practice(request: HttpRequest, token: str) -> HttpResponse:
    """GET: the current practice attempt; POST: grade it and give feedback with the right answers.

    A failed attempt is followed by another draw while attempts are left
    (``study.practice_attempts``); after the last one the participant is screened out.
    """
    participant = _participant_or_404(token)
    if practice_exhausted(participant):
        return _screened_out(request, participant)
    if not stage_allows(participant, "practice"):
        return _home(participant)
    attempt, items, views = _practice_round(participant)
    context = {"trials": views, "attempt": attempt, "attempts": practice_attempt_limit(participant.study)}
    if request.method == "GET":
        return render(request, "studies/practice.html", _context(participant, **context))
    answers = {item.public_id: request.POST.get(f"choice_{item.public_id}") for item in items}
    answers = {key: value for key, value in answers.items() if value not in (None, "")}
    posted = _int_or_none(request.POST.get("attempt"))
    if posted is not None and posted != attempt:  # a stale or repeated form (its attempt was graded already)
        return HttpResponseRedirect(reverse("studies:worker-practice", args=[participant.token]))
    try:
        result = practice_grade(participant=participant, answers=answers, attempt=attempt)
    except AnswerInvalid:
        return render(
            request, "studies/practice.html",
            _context(participant, **context, error="Please answer every practice question."), status=400,
        )  # fmt: skip
    except ScreenedOut:
        return _screened_out(request, participant)
    except StepNotAllowed:
        return _home(participant)
    if result.screened_out:
        return _screened_out(request, participant, result)
    if not items:
        return _home(participant)
    feedback = {fb.item_public_id: fb for fb in result.feedback}
    rows = [(view, feedback[view.token], _int_or_none(answers.get(view.token))) for view in views]
    fresh_next = False  # whether the next attempt shows none of these items (the pool is large enough)
    if result.attempts_left:
        following = practice_draw(study=participant.study, participant_token=participant.token, attempt=attempt + 1)
        fresh_next = not {i.pk for i in following} & {i.pk for i in items}
    return render(request, "studies/practice_feedback.html",
                  _context(participant, result=result, rows=rows, fresh_next=fresh_next))  # fmt: skip


def _int_or_none(raw: str | None) -> int | None | str:
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        return raw  # the service rejects it with a named field


@frameable
@worker_csrf
@require_POST
@rate_limited("submit", key=_submit_key)
def answer(request: HttpRequest, token: str) -> HttpResponse:
    """Store one trial's answer (once), then show the next trial (POST-redirect-GET)."""
    participant = _participant_or_404(token)
    try:
        events = json_parse(request.POST.get("focus_events") or "[]")
    except JsonInvalid:  # malformed or nested too deeply: the service names the field
        events = "invalid"
    try:
        response_record(
            participant=participant,
            assignment_token=request.POST.get("assignment", ""),
            choice=_int_or_none(request.POST.get("choice")),  # type: ignore[arg-type]
            client_response_ms=_int_or_none(request.POST.get("client_response_ms")),
            focus_events=events,
            comment=request.POST.get("comment", ""),
        )
    except AssignmentNotFound as exc:
        raise Http404("unknown trial") from exc
    except ParticipantNotAnswering:
        pass
    except AnswerInvalid as exc:
        return _refused(request, participant.study, f"That answer could not be stored ({exc.field}: {exc.message}). "
                        "Please go back and choose one of the answers.", 400)  # fmt: skip
    return _home(participant)


@frameable
@worker_csrf
@require_POST
def questionnaire(request: HttpRequest, token: str) -> HttpResponse:
    participant = _participant_or_404(token)
    try:
        questionnaire_submit(participant=participant, answers=request.POST)
    except AnswerInvalid as exc:
        questions = questionnaire_questions(study=participant.study)
        return render(
            request, "studies/questionnaire.html",
            _context(participant, questions=questions, error=f"{exc.field}: {exc.message}", values=request.POST),
            status=400,
        )  # fmt: skip
    except StepNotAllowed:
        pass
    return _home(participant)


@frameable
@worker_csrf
@require_POST
def complete(request: HttpRequest, token: str) -> HttpResponse:
    """Commit the completion; Prolific workers go straight back to Prolific with the code."""
    participant = _participant_or_404(token)
    try:
        completion = participant_complete(participant=participant)
    except StepNotAllowed:
        return _home(participant)
    if completion.prolific_redirect_url:
        return HttpResponseRedirect(completion.prolific_redirect_url)
    return HttpResponseRedirect(reverse("studies:worker-done", args=[participant.token]))


@frameable
@require_GET
def done(request: HttpRequest, token: str) -> HttpResponse:
    """The completion code (only once the completion is committed) and the way back."""
    participant = _participant_or_404(token)
    if participant.status != Participant.Status.COMPLETED:
        return _home(participant)
    return render(request, "studies/done.html", _context(participant, completion=completion_for(participant)))


#: Image URLs name one side of one trial, whose stimulus never changes: cache them for a year.
STIMULUS_CACHE_CONTROL = "private, max-age=31536000, immutable"


def _file_response(request: HttpRequest, stimulus: Any) -> HttpResponse:
    """The stimulus file, with a strong ``ETag`` (its SHA-256) and a long private cache lifetime.

    A request whose ``If-None-Match`` names that ETag gets ``304 Not Modified`` without the file
    being opened. Content-addressed files never change under their hash (RFC 9110 §8.8.3, §13.1.2).
    """
    if stimulus is None or not stimulus.file:
        raise Http404("no image")
    etag = f'"{stimulus.sha256}"' if stimulus.sha256 else ""
    if etag and etag in (part.strip() for part in request.headers.get("If-None-Match", "").split(",")):
        response = HttpResponse(status=304)
    else:
        try:
            handle = stimulus.file.open("rb")
        except FileNotFoundError as exc:
            raise Http404("image file missing") from exc
        content_type = mimetypes.guess_type(stimulus.file.name)[0] or "image/png"
        response = FileResponse(handle, content_type=content_type)
    if etag:
        response["ETag"] = etag
    response["Cache-Control"] = STIMULUS_CACHE_CONTROL
    return response


@require_GET
def stimulus(request: HttpRequest, token: str, assignment_token: str, side: str) -> HttpResponse:
    """One image of one of the participant's trials (no file name reveals the answer). One query."""
    assignment = assignment_for_image(participant_token=token, assignment_token=assignment_token)
    if assignment is None:
        raise Http404("unknown trial")
    item = assignment.item
    return _file_response(
        request, stimulus_for_side(study=item.study, item=item, side=side, model_a_shown_left=assignment.model_a_shown_left,
                                   option_order=assignment.option_order),
    )  # fmt: skip


@require_GET
def practice_stimulus(request: HttpRequest, token: str, public_id: str, side: str) -> HttpResponse:
    """One image of a practice trial of attempt ``?attempt=k`` (default: the current one).

    Only attempts the participant has reached, and only items of that attempt's draw; the side
    is re-derived for (participant, attempt) like the practice page's.
    """
    participant = _participant_or_404(token)
    study = participant.study
    raw = request.GET.get("attempt")
    attempt = practice_attempt(participant) if raw is None else _int_or_none(raw)
    if not isinstance(attempt, int) or not 1 <= attempt <= min(practice_attempt(participant), practice_attempt_limit(study)):
        raise Http404("unknown practice attempt")
    item = next(
        (i for i in practice_draw(study=study, participant_token=participant.token, attempt=attempt) if i.public_id == public_id),
        None,
    )  # fmt: skip
    if item is None:
        raise Http404("unknown practice trial")
    choices = practice_choices(study=study, participant_token=participant.token, attempt=attempt, item=item)
    return _file_response(request, stimulus_for_side(study=study, item=item, side=side, model_a_shown_left=choices.model_a_shown_left,
                                                     option_order=choices.option_order))  # fmt: skip


@require_GET
def example_stimulus(request: HttpRequest, slug: str, public_id: str, side: str) -> HttpResponse:
    """Images of the preview/instructions example (practice items only, model A on the left)."""
    item = get_object_or_404(
        Item.objects.select_related("study", "stimulus_a", "stimulus_b", "stimulus_c", "stimulus_d"),
        study__slug=slug, role=Item.Role.PRACTICE, public_id=public_id,
    )  # fmt: skip
    return _file_response(request, stimulus_for_side(study=item.study, item=item, side=side, model_a_shown_left=True,
                                                     option_order=list(range(len(item.options or [])))))  # fmt: skip
