"""A participant's way through a study: entry, consent, practice, questionnaire, completion.

Entry (issue #5; research note ``django_quality.md`` §4.2, ``mission_anchors.md`` §8):

- MTurk ExternalQuestion adds ``assignmentId``, ``hitId``, ``workerId``, ``turkSubmitTo``; in
  preview ``assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE`` and nothing is allocated or stored.
- Prolific adds ``PROLIFIC_PID``, ``STUDY_ID``, ``SESSION_ID``.
- A plain link carries nothing: the server makes an anonymous id.

The platform id is only a lookup key. It is validated (letters and digits, so it can never
start a spreadsheet formula), bound once to the participant's opaque ``token`` by
``UniqueConstraint(study, platform, platform_worker_id)``, and later URLs carry only the
token. ``worker_hash = sha256(salt + ":" + platform + ":" + worker_id)`` with a per-study salt
``salted_hmac("xaistudy.worker-hash", study.slug)`` derived from ``SECRET_KEY``, for exports.
A returning worker resumes; one who completed (from another session), declined, or is on the
study's exclusion list is refused with a reason.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode, urlsplit

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.crypto import salted_hmac

from studies.models import ExcludedWorker, Item, Participant, Study
from studies.services.allocation import assignment_choices, main_slot_available, slot_counts
from studies.services.responses import AnswerInvalid, answer_score

MTURK_PREVIEW_ASSIGNMENT = "ASSIGNMENT_ID_NOT_AVAILABLE"
#: Hosts MTurk gives as ``turkSubmitTo`` (production and sandbox).
MTURK_SUBMIT_HOSTS = frozenset({"www.mturk.com", "workersandbox.mturk.com", "mturk.com"})
#: Platform ids: letters and digits only (MTurk ids are upper-case alphanumerics, Prolific ids
#: 24 hex digits), at most 255 characters (AWS Assignment data structure).
PLATFORM_ID_RE = re.compile(r"^[A-Za-z0-9]{1,255}$")
#: Study statuses in which new participants may enter.
OPEN_STATUSES = frozenset({Study.Status.LIVE})

Platform = Literal["mturk", "prolific", "link"]


class EntryInvalid(ValueError):
    """A malformed entry link; ``field`` names the parameter."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class EntryRefused(Exception):
    """The worker may not (or no longer) take part; ``code`` is machine-readable."""

    MESSAGES = {
        "closed": "This study is not open at the moment.",
        "completed": "You have already completed this study. Thank you! You cannot take part a second time.",
        "declined": "You declined to take part in this study, so it cannot be started again.",
        "excluded": "You cannot take part in this study because you took part in a related study. Thank you for your interest.",
        "full": "All places in this study have been taken. Please return the task; thank you for your interest.",
        "wrong_platform": "This link belongs to a study recruited on another platform.",
    }

    def __init__(self, code: str):
        super().__init__(self.MESSAGES[code])
        self.code = code
        self.message = self.MESSAGES[code]


class StepNotAllowed(RuntimeError):
    """A step was requested out of order (e.g. completing with trials left)."""


@dataclass(frozen=True)
class PlatformIdentity:
    """Validated platform parameters of one entry."""

    platform: Platform
    worker_id: str = ""
    mturk_assignment_id: str = ""
    mturk_hit_id: str = ""
    mturk_submit_to: str = ""
    prolific_study_id: str = ""
    prolific_session_id: str = ""


@dataclass(frozen=True)
class MTurkPreview:
    """An MTurk preview (the HIT is not accepted yet): show an example, store nothing."""

    hit_id: str = ""


@dataclass(frozen=True)
class EntryResult:
    participant: Participant
    created: bool
    #: The participant has completed and came back in the same session: show the code again.
    completed: bool = False


@dataclass(frozen=True)
class PracticeFeedback:
    item_public_id: str
    correct: bool | None
    #: The displayed index of the right option (discrimination), else ``None``.
    correct_choice: int | None


@dataclass(frozen=True)
class PracticeResult:
    passed: bool
    n_correct: int
    n_items: int
    required: int
    feedback: list[PracticeFeedback] = field(default_factory=list)


@dataclass(frozen=True)
class Completion:
    """What the completion page shows and where the worker goes next."""

    code: str
    platform: str
    mturk_submit_url: str = ""
    mturk_assignment_id: str = ""
    prolific_redirect_url: str = ""


def worker_hash(*, study: Study, platform: str, worker_id: str) -> str:
    """Salted SHA-256 of a platform id: ``sha256(salted_hmac("xaistudy.worker-hash", slug) + ":" + platform + ":" + id)``."""
    salt = salted_hmac("xaistudy.worker-hash", study.slug).hexdigest()
    return hashlib.sha256(f"{salt}:{platform}:{worker_id}".encode()).hexdigest()


def _platform_id(params: Mapping[str, str], name: str, *, required: bool = True) -> str:
    value = (params.get(name) or "").strip()
    if not value:
        if required:
            raise EntryInvalid(name, "is missing")
        return ""
    if not PLATFORM_ID_RE.match(value):
        raise EntryInvalid(name, "must be 1 to 255 letters and digits")
    return value


def mturk_submit_origin(raw: str) -> str:
    """Validate ``turkSubmitTo``: an https URL on an mturk.com host; returns ``https://<host>``."""
    parts = urlsplit(raw.strip())
    host = (parts.hostname or "").lower()
    if parts.scheme != "https" or host not in MTURK_SUBMIT_HOSTS or parts.port not in (None, 443):
        raise EntryInvalid("turkSubmitTo", "must be https://www.mturk.com or https://workersandbox.mturk.com")
    if parts.username or parts.password or parts.query or parts.fragment or parts.path not in ("", "/"):
        raise EntryInvalid("turkSubmitTo", "must be a bare MTurk origin")
    return f"https://{host}"


def entry_parse(*, study: Study, params: Mapping[str, str]) -> PlatformIdentity | MTurkPreview:
    """Read the platform from the entry parameters and validate them.

    MTurk parameters win over Prolific ones; neither means a plain link, which is accepted only
    for studies recruited by link. Raises ``EntryInvalid`` (bad parameter) or
    ``EntryRefused("wrong_platform")``.
    """
    if any(params.get(name) for name in ("assignmentId", "workerId", "hitId", "turkSubmitTo")):
        assignment_id = (params.get("assignmentId") or "").strip()
        if study.platform != Study.Platform.MTURK:
            raise EntryRefused("wrong_platform")
        if assignment_id == MTURK_PREVIEW_ASSIGNMENT:
            return MTurkPreview(hit_id=_platform_id(params, "hitId", required=False))
        return PlatformIdentity(
            platform="mturk",
            worker_id=_platform_id(params, "workerId"),
            mturk_assignment_id=_platform_id(params, "assignmentId"),
            mturk_hit_id=_platform_id(params, "hitId"),
            mturk_submit_to=mturk_submit_origin(params.get("turkSubmitTo") or ""),
        )
    if any(params.get(name) for name in ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID")):
        if study.platform != Study.Platform.PROLIFIC:
            raise EntryRefused("wrong_platform")
        return PlatformIdentity(
            platform="prolific",
            worker_id=_platform_id(params, "PROLIFIC_PID"),
            prolific_study_id=_platform_id(params, "STUDY_ID"),
            prolific_session_id=_platform_id(params, "SESSION_ID"),
        )
    if study.platform != Study.Platform.LINK:
        raise EntryRefused("wrong_platform")
    return PlatformIdentity(platform="link")


def _same_session(participant: Participant, identity: PlatformIdentity) -> bool:
    if identity.platform == "mturk":
        return participant.mturk_assignment_id == identity.mturk_assignment_id
    if identity.platform == "prolific":
        return participant.prolific_session_id == identity.prolific_session_id
    return True  # a link participant found by their own resume cookie


def _refuse_if_done(participant: Participant, identity: PlatformIdentity) -> EntryResult | None:
    if participant.status == Participant.Status.COMPLETED:
        if _same_session(participant, identity):
            return EntryResult(participant=participant, created=False, completed=True)
        raise EntryRefused("completed")
    if participant.status == Participant.Status.DECLINED:
        raise EntryRefused("declined")
    return None


def participant_enter(
    *, study: Study, identity: PlatformIdentity, resume_participant: Participant | None = None
) -> EntryResult:
    """Bind a platform identity to a participant (create once, then resume), or refuse.

    ``resume_participant`` is the link participant remembered by this browser (signed cookie).
    A returning MTurk/Prolific worker's latest assignment/session ids are kept, so the MTurk
    submit form carries the assignment they are working on now.
    """
    if study.status not in OPEN_STATUSES:
        raise EntryRefused("closed")
    if identity.platform == "link" and resume_participant is not None and resume_participant.study_id == study.pk:
        done = _refuse_if_done(resume_participant, identity)
        return done or EntryResult(participant=resume_participant, created=False)
    if identity.worker_id and ExcludedWorker.objects.filter(study=study, platform_worker_id=identity.worker_id).exists():
        raise EntryRefused("excluded")
    worker_id = identity.worker_id or f"anon{secrets.token_hex(12)}"
    existing = Participant.objects.filter(study=study, platform=identity.platform, platform_worker_id=worker_id).first()
    if existing is None:
        if not _study_has_free_slot(study):
            raise EntryRefused("full")
        try:
            with transaction.atomic():
                participant = Participant.objects.create(
                    study=study,
                    platform=identity.platform,
                    platform_worker_id=worker_id,
                    worker_hash=worker_hash(study=study, platform=identity.platform, worker_id=worker_id),
                    mturk_assignment_id=identity.mturk_assignment_id,
                    mturk_hit_id=identity.mturk_hit_id,
                    mturk_submit_to=identity.mturk_submit_to,
                    prolific_study_id=identity.prolific_study_id,
                    prolific_session_id=identity.prolific_session_id,
                )
            return EntryResult(participant=participant, created=True)
        except IntegrityError:  # the same worker entered twice at once: the other request won
            existing = Participant.objects.get(study=study, platform=identity.platform, platform_worker_id=worker_id)
    done = _refuse_if_done(existing, identity)
    if done:
        return done
    updates = {
        name: getattr(identity, name)
        for name in ("mturk_assignment_id", "mturk_hit_id", "mturk_submit_to", "prolific_study_id", "prolific_session_id")
        if getattr(identity, name) and getattr(identity, name) != getattr(existing, name)
    }
    if updates:
        for name, value in updates.items():
            setattr(existing, name, value)
        existing.save(update_fields=list(updates))
    return EntryResult(participant=existing, created=False)


def _study_has_free_slot(study: Study) -> bool:
    return (
        Item.objects.filter(study=study, role=Item.Role.MAIN)
        .annotate(in_use=F("n_answered") + F("n_leased"))
        .filter(in_use__lt=study.judgments_per_item)
        .exists()
    )


def participant_consent(*, participant: Participant, agree: bool, version: str) -> Participant:
    """Record consent (``started -> consented``) or its refusal (``started -> declined``).

    ``version`` must be the study's current ``consent_version`` (the text the worker read).
    Declining stores nothing but the status. Repeating the same decision is a no-op.
    """
    study = participant.study
    if version != study.consent_version:
        raise StepNotAllowed(f"consent version {version!r} is not the current one ({study.consent_version!r})")
    target = Participant.Status.CONSENTED if agree else Participant.Status.DECLINED
    changed = Participant.objects.filter(pk=participant.pk, status=Participant.Status.STARTED).update(
        status=target, consent_version=version if agree else ""
    )
    participant.refresh_from_db(fields=["status", "consent_version"])
    if not changed and participant.status != target and not (agree and participant.status == Participant.Status.IN_PROGRESS):
        raise StepNotAllowed(f"consent cannot be changed once {participant.status}")
    return participant


def practice_items(*, study: Study) -> list[Item]:
    """The study's practice items, in seeded order, at most ``study.practice_trials``."""
    if study.practice_trials <= 0:
        return []
    query = Item.objects.filter(study=study, role=Item.Role.PRACTICE).select_related("stimulus_a", "stimulus_b")
    return list(query.order_by("tie_rank", "id")[: study.practice_trials])


def practice_grade(*, participant: Participant, answers: Mapping[str, Any]) -> PracticeResult:
    """Grade one practice round; passing sets ``practice_passed`` and moves to the main trials.

    ``answers`` maps each practice item's ``public_id`` to the displayed choice. The round
    passes when ``n_correct >= ceil(practice_pass_fraction * n_items)`` (items with no right
    answer count as correct). A failed round is simply repeated; nothing is stored.
    """
    study = participant.study
    if participant.status not in (Participant.Status.CONSENTED, Participant.Status.IN_PROGRESS):
        raise StepNotAllowed(f"practice needs consent first (status {participant.status})")
    items = practice_items(study=study)
    feedback: list[PracticeFeedback] = []
    n_correct = 0
    for item in items:
        if item.public_id not in answers:
            raise AnswerInvalid(f"answers.{item.public_id}", "is missing")
        choices = assignment_choices(
            study=study, participant_token=participant.token, slot=f"practice-{item.public_id}", item=item
        )
        scored = answer_score(
            study=study,
            item=item,
            option_order=choices.option_order,
            model_a_shown_left=choices.model_a_shown_left,
            choice=_as_int(answers[item.public_id], f"answers.{item.public_id}"),
        )
        correct_choice = None
        if study.kind == Study.Kind.CLASS_DISCRIMINATION and item.correct_option is not None:
            correct_choice = choices.option_order.index(item.correct_option)
        n_correct += scored.correct is not False
        feedback.append(PracticeFeedback(item.public_id, scored.correct, correct_choice))
    required = -(-round(study.practice_pass_fraction * len(items) * 1000) // 1000)  # ceil, float-safe
    passed = n_correct >= required
    if passed:
        Participant.objects.filter(pk=participant.pk, status=Participant.Status.CONSENTED).update(
            status=Participant.Status.IN_PROGRESS, practice_passed=True
        )
        participant.refresh_from_db(fields=["status", "practice_passed"])
    return PracticeResult(passed=passed, n_correct=n_correct, n_items=len(items), required=required, feedback=feedback)


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise AnswerInvalid(name, "must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise AnswerInvalid(name, "must be an integer")


@dataclass(frozen=True)
class Question:
    name: str
    label: str
    type: Literal["text", "choice", "number"]
    choices: tuple[str, ...] = ()
    required: bool = False


def questionnaire_questions(*, study: Study) -> list[Question]:
    """Normalize ``study.questionnaire``: a list of strings (free text) or of dicts
    ``{"name", "label", "type": text|choice|number, "choices": [...], "required": bool}``."""
    questions = []
    for index, raw in enumerate(study.questionnaire or []):
        if isinstance(raw, str):
            questions.append(Question(name=f"q{index + 1}", label=raw, type="text"))
        elif isinstance(raw, dict):
            kind = raw.get("type", "choice" if raw.get("choices") else "text")
            if kind not in ("text", "choice", "number"):
                kind = "text"
            questions.append(
                Question(
                    name=str(raw.get("name") or f"q{index + 1}"),
                    label=str(raw.get("label") or raw.get("name") or f"Question {index + 1}"),
                    type=kind,
                    choices=tuple(str(c) for c in raw.get("choices") or ()),
                    required=bool(raw.get("required", False)),
                )
            )
    return questions


def questionnaire_pending(*, participant: Participant) -> bool:
    """Whether the study asks closing questions this participant has not submitted yet."""
    return bool(participant.study.questionnaire) and "submitted_at" not in (participant.questionnaire or {})


def questionnaire_submit(*, participant: Participant, answers: Mapping[str, Any], now: datetime | None = None) -> Participant:
    """Validate and store the closing questionnaire (once; a resubmit is ignored)."""
    if participant.status != Participant.Status.IN_PROGRESS:
        raise StepNotAllowed(f"questionnaire not open (status {participant.status})")
    if not questionnaire_pending(participant=participant):
        return participant
    clean: dict[str, str | float] = {}
    for question in questionnaire_questions(study=participant.study):
        value = answers.get(question.name)
        if isinstance(value, (dict, list, tuple, bool)):
            raise AnswerInvalid(question.name, "must be text or a number")
        value = "" if value is None else str(value).strip()
        if not value:
            if question.required:
                raise AnswerInvalid(question.name, "is required")
            continue
        if len(value) > 500:
            raise AnswerInvalid(question.name, "at most 500 characters")
        if question.type == "choice" and value not in question.choices:
            raise AnswerInvalid(question.name, f"must be one of {list(question.choices)}")
        if question.type == "number":
            try:
                clean[question.name] = float(value)
            except ValueError as exc:
                raise AnswerInvalid(question.name, "must be a number") from exc
            continue
        clean[question.name] = value
    participant.questionnaire = {"answers": clean, "submitted_at": (now or timezone.now()).isoformat()}
    participant.save(update_fields=["questionnaire"])
    return participant


def participant_trials_done(*, participant: Participant) -> bool:
    """No open lease, and either every planned trial is answered or no free item remains."""
    counts = slot_counts(participant=participant)
    if counts.open:
        return False
    return counts.answered >= counts.planned or not main_slot_available(participant=participant)


def completion_for(participant: Participant) -> Completion:
    """The completion code and the platform's way back (MTurk form or Prolific URL)."""
    study = participant.study
    mturk_url = f"{participant.mturk_submit_to}/mturk/externalSubmit" if participant.mturk_submit_to else ""
    prolific = ""
    if participant.platform == "prolific" and study.prolific_completion_url:
        url = study.prolific_completion_url
        if "cc" in parse_qs(urlsplit(url).query):
            prolific = url  # the researcher pasted the full URL with its code
        else:
            prolific = f"{url}{'&' if '?' in url else '?'}{urlencode({'cc': study.completion_code})}"
    return Completion(
        code=study.completion_code,
        platform=participant.platform,
        mturk_submit_url=mturk_url if participant.platform == "mturk" else "",
        mturk_assignment_id=participant.mturk_assignment_id if participant.platform == "mturk" else "",
        prolific_redirect_url=prolific,
    )


def participant_complete(*, participant: Participant, now: datetime | None = None) -> Completion:
    """Finish the study once every response is committed; return the completion.

    Runs in one transaction holding the participant's row lock, so no submit can interleave.
    The caller shows the code only after this returns (the transaction has committed).
    Idempotent: completing twice returns the same completion.
    """
    with transaction.atomic():
        locked = Participant.objects.select_for_update().select_related("study").get(pk=participant.pk)
        if locked.status != Participant.Status.COMPLETED:
            if locked.status != Participant.Status.IN_PROGRESS or not locked.practice_passed:
                raise StepNotAllowed(f"cannot complete from status {locked.status}")
            if not participant_trials_done(participant=locked):
                raise StepNotAllowed("trials remain")
            if slot_counts(participant=locked).answered == 0:
                raise StepNotAllowed("no trial was answered")
            if questionnaire_pending(participant=locked):
                raise StepNotAllowed("the questionnaire is not submitted")
            locked.status = Participant.Status.COMPLETED
            locked.completed_at = now or timezone.now()
            locked.save(update_fields=["status", "completed_at"])
    participant.status = locked.status
    participant.completed_at = locked.completed_at
    return completion_for(locked)
