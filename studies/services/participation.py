"""A participant's way through a study: entry, consent, practice, questionnaire, completion.

Entry (issue #5; research note ``django_quality.md`` §4.2, ``mission_anchors.md`` §8):

- MTurk ExternalQuestion adds ``assignmentId``, ``hitId``, ``workerId``, ``turkSubmitTo``; in
  preview ``assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE`` and nothing is allocated or stored.
- Prolific adds ``PROLIFIC_PID``, ``STUDY_ID``, ``SESSION_ID``.
- A plain link carries nothing: the server makes an anonymous id.

Identity (issue #11, ``docs/security.md``). Worker ids are **public** (forum posts, shared
sheets, other requesters' data), so a worker id alone never resumes anybody. A participant is
bound to the platform *session* it entered with, ``session_key`` = the MTurk ``assignmentId``,
the Prolific ``SESSION_ID``, or a link participant's own anonymous id, unique per study
(``UniqueConstraint(study, platform, session_key)``). An entry resumes a participant only when

1. it carries the same session (same ``assignmentId`` / ``SESSION_ID``), or
2. it comes from the participant's own browser (a signed, http-only resume cookie holding the
   participant's secret token, set at entry), whatever its session: a worker who returned the
   HIT and accepted it again continues where they were, and the participant is re-bound to the
   new assignment (the payment row follows the assignment the worker holds now).

Otherwise the entry is a new participant bound to its own session. Nothing of an existing
participant (token, answers, code, payment row, consent) is read or changed by it, so somebody
who knows a worker's id gets nothing of theirs and cannot lock them out: a decline or a
half-done study under another session stays with that session. The rule for a worker who
returned a HIT and comes back in *another* browser: they start over as a new participant; the
old participant is left as it is (the server cannot tell them from someone using their id), its
leases expire as usual, and the audit lists worker ids held by more than one participant.

Refused at entry: a worker id (normalised: case, whitespace) that already **completed** this
study in another session ("completed"), or that an exclusion list or group excludes
(``services.exclusion``). ``worker_hash = sha256(salt + ":" + platform + ":" + worker_id)`` with a
per-study salt ``salted_hmac("xaistudy.worker-hash", study.slug)`` derived from ``SECRET_KEY``,
for exports.

Completion codes: each participant gets their own code, ``completion_code_derive`` (an HMAC of the
study and the participant's secret token under ``SECRET_KEY``), stored at completion and shown only
after the completion has committed. A code is checked against one participant
(:func:`completion_code_matches`); someone else's code does not verify. Prolific checks one code per
study on its own side, so the Prolific redirect carries the study's Prolific code and Prolific binds
the submission to the participant's own Prolific session.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode, urlsplit

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac

from studies.designs.registry import design_for
from studies.lib.choices import AssignmentChoices, practice_choices
from studies.lib.slots import slot_rng
from studies.models import Item, Participant, Study
from studies.selectors.allocation import main_slot_available, participant_methods, slot_counts
from studies.selectors.participation import (
    practice_attempt,
    practice_attempt_limit,
    practice_exhausted,
    questionnaire_pending,
    stage_allows,
)
from studies.services.allocation import study_leases_sweep
from studies.services.arms import arm_assign
from studies.services.exclusion import PLATFORM_ID_RE, exclusion_reason, platform_id_normalize
from studies.services.responses import AnswerInvalid, answer_score

MTURK_PREVIEW_ASSIGNMENT = "ASSIGNMENT_ID_NOT_AVAILABLE"
#: Hosts MTurk gives as ``turkSubmitTo`` (production and sandbox).
MTURK_SUBMIT_HOSTS = frozenset({"www.mturk.com", "workersandbox.mturk.com", "mturk.com"})
#: Alphabet of completion codes (no 0/O, 1/I/L: people copy them by hand).
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
#: Length of a participant's completion code: 10 symbols of 31, about 49.5 bits.
CODE_LENGTH = 10
#: Window of the per-client cap on unfinished participants (``study.entries_per_client``), seconds.
ENTRY_CAP_WINDOW_S = 24 * 3600
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
        "too_many": "Too many people have started this study from your network today. If you share a "
        "network with other participants, please contact the researcher.",
        "invitation": "This study can only be entered with a personal invitation link, and this link is "
        "missing one, is not valid, or has been used already.",
        "wrong_platform": "This link belongs to a study recruited on another platform.",
    }

    def __init__(self, code: str):
        super().__init__(self.MESSAGES[code])
        self.code = code
        self.message = self.MESSAGES[code]


class StepNotAllowed(RuntimeError):
    """A step was requested out of order (e.g. completing with trials left)."""


class ScreenedOut(StepNotAllowed):
    """The participant failed the practice ``study.practice_attempts`` times: no more attempts, no trials."""


class ViewportTooSmall(ValueError):
    """Consent to a study with a minimum viewport came without a measured size, or with one below it.

    ``measured`` is the ``(width, height)`` sent (``None`` when missing or malformed); nothing is stored.
    """

    def __init__(self, study: Study, measured: tuple[int, int] | None):
        need = " and ".join(f"{v} px {name}" for v, name in ((study.min_viewport_width, "wide"),
                                                         (study.min_viewport_height, "high")) if v)  # fmt: skip
        got = "was not measured" if measured is None else f"is {measured[0]} x {measured[1]} px"
        super().__init__(f"this study needs a window at least {need}; yours {got}")
        self.measured = measured
        self.min_width = study.min_viewport_width
        self.min_height = study.min_viewport_height


#: The largest viewport side accepted as a measurement (CSS pixels); anything else is malformed.
MAX_VIEWPORT_PX = 100_000


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
    #: The displayed index of the right option (a choice among options), else ``None``.
    correct_choice: int | None
    #: A right robot (a design with two robots): the robot as displayed, ``"A"`` (left) or ``"B"`` (right).
    correct_robot: Literal["A", "B"] | None = None
    #: The right answer in words: the option's label, else ``""`` (the page and the API name a
    #: robot with the study's wording). All three from ``Design.practice_feedback``.
    right_answer: str = ""


@dataclass(frozen=True)
class PracticeResult:
    passed: bool
    n_correct: int
    n_items: int
    required: int
    feedback: list[PracticeFeedback] = field(default_factory=list)
    #: The attempt just graded (1-based) and the study's limit.
    attempt: int = 1
    attempts: int = 1
    #: The participant failed the last allowed attempt: the study is over for them.
    screened_out: bool = False

    @property
    def attempts_left(self) -> int:
        return 0 if self.passed or self.screened_out else max(self.attempts - self.attempt, 0)


@dataclass(frozen=True)
class Completion:
    """What the completion page shows and where the worker goes next."""

    code: str
    platform: str
    mturk_submit_url: str = ""
    mturk_assignment_id: str = ""
    prolific_redirect_url: str = ""


def client_hash(*, study: Study, client_key: str) -> str:
    """``HMAC(SECRET_KEY, "xaistudy.entry-client", slug + ":" + address)``: the per-client cap's key.

    Per-study and keyed, so the stored value neither names an address nor links one across studies.
    """
    return salted_hmac("xaistudy.entry-client", f"{study.slug}:{client_key}").hexdigest()[:32]


def completion_code_derive(*, study: Study, participant_token: str) -> str:
    """A participant's own completion code: ``HMAC(SECRET_KEY, "xaistudy.completion-code", slug + ":" + token)``,
    its first 64 bits written as ``CODE_LENGTH`` symbols of ``CODE_ALPHABET``.

    Only the server (which holds ``SECRET_KEY``) can make or check one; the participant token it is
    made from is secret, so a code says nothing about anybody else's.
    """
    digest = salted_hmac("xaistudy.completion-code", f"{study.slug}:{participant_token}").digest()
    number = int.from_bytes(digest[:8], "big")
    symbols = []
    for _ in range(CODE_LENGTH):
        number, index = divmod(number, len(CODE_ALPHABET))
        symbols.append(CODE_ALPHABET[index])
    return "".join(symbols)


def completion_code_matches(*, participant: Participant, code: str) -> bool:
    """Whether ``code`` (as typed: case and spaces ignored) is this completed participant's own code."""
    if participant.status != Participant.Status.COMPLETED or not participant.completion_code:
        return False
    typed = re.sub(r"\s+", "", code or "").upper()
    expected = completion_code_derive(study=participant.study, participant_token=participant.token)
    return constant_time_compare(typed, participant.completion_code) and constant_time_compare(typed, expected)


@dataclass(frozen=True)
class CodeCheck:
    """One submitted code checked against the participant its platform row names."""

    line: int
    platform_id: str
    verdict: Literal["ok", "wrong_code", "not_completed", "unknown"]


def completion_codes_check(*, study: Study, rows: list[Mapping[str, str]]) -> list[CodeCheck]:
    """Check the codes workers submitted (MTurk's batch results CSV, or any CSV with an id and a code).

    Each row names its participant by ``AssignmentId`` (MTurk; the session it is bound to) or by
    ``WorkerId`` / ``participant_id`` / ``PROLIFIC_PID`` (a completed participant with that id), and its
    code by ``Answer.completion_code`` or ``completion_code`` / ``code``. ``ok`` only when the code is
    that participant's own (:func:`completion_code_matches`): a code copied from someone else fails.
    """
    checks = []
    for line, row in enumerate(rows, start=2):
        norm = {str(k).strip().lower(): (v or "").strip() for k, v in row.items() if k}
        code = next((norm[k] for k in ("answer.completion_code", "completion_code", "code") if norm.get(k)), "")
        assignment = norm.get("assignmentid", "")
        worker = next((norm[k] for k in ("workerid", "participant_id", "prolific_pid") if norm.get(k)), "")
        participant = None
        if assignment:
            participant = Participant.objects.filter(
                study=study, platform=study.platform,
                session_key=platform_id_normalize(platform=study.platform, worker_id=assignment),
            ).first()  # fmt: skip
        elif worker:
            found = Participant.objects.filter(
                study=study, platform=study.platform,
                platform_worker_id=platform_id_normalize(platform=study.platform, worker_id=worker),
            )  # fmt: skip
            participant = found.filter(status=Participant.Status.COMPLETED).first() or found.first()
        if participant is None:
            verdict = "unknown"
        elif participant.status != Participant.Status.COMPLETED:
            verdict = "not_completed"
        else:
            verdict = "ok" if completion_code_matches(participant=participant, code=code) else "wrong_code"
        checks.append(CodeCheck(line=line, platform_id=assignment or worker, verdict=verdict))
    return checks


def worker_hash(*, study: Study, platform: str, worker_id: str) -> str:
    """Salted SHA-256 of a platform id: ``sha256(salted_hmac("xaistudy.worker-hash", slug) + ":" + platform + ":" + id)``."""
    salt = salted_hmac("xaistudy.worker-hash", study.slug).hexdigest()
    return hashlib.sha256(f"{salt}:{platform}:{worker_id}".encode()).hexdigest()


def session_hash(*, study: Study, platform: str, session_key: str) -> str:
    """Salted SHA-256 of a participant's platform session, for exports that anyone with view rights reads:
    ``sha256(salted_hmac("xaistudy.worker-hash", slug) + ":session:" + platform + ":" + session_key)``."""
    salt = salted_hmac("xaistudy.worker-hash", study.slug).hexdigest()
    return hashlib.sha256(f"{salt}:session:{platform}:{session_key}".encode()).hexdigest()


def _platform_id(params: Mapping[str, str], name: str, *, platform: str, required: bool = True) -> str:
    value = (params.get(name) or "").strip()
    if not value:
        if required:
            raise EntryInvalid(name, "is missing")
        return ""
    if not PLATFORM_ID_RE.match(value):
        raise EntryInvalid(name, "must be 1 to 255 letters and digits")
    return platform_id_normalize(platform=platform, worker_id=value)


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
            return MTurkPreview(hit_id=_platform_id(params, "hitId", platform="mturk", required=False))
        return PlatformIdentity(
            platform="mturk",
            worker_id=_platform_id(params, "workerId", platform="mturk"),
            mturk_assignment_id=_platform_id(params, "assignmentId", platform="mturk"),
            mturk_hit_id=_platform_id(params, "hitId", platform="mturk"),
            mturk_submit_to=mturk_submit_origin(params.get("turkSubmitTo") or ""),
        )
    if any(params.get(name) for name in ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID")):
        if study.platform != Study.Platform.PROLIFIC:
            raise EntryRefused("wrong_platform")
        return PlatformIdentity(
            platform="prolific",
            worker_id=_platform_id(params, "PROLIFIC_PID", platform="prolific"),
            prolific_study_id=_platform_id(params, "STUDY_ID", platform="prolific"),
            prolific_session_id=_platform_id(params, "SESSION_ID", platform="prolific"),
        )
    if study.platform != Study.Platform.LINK:
        raise EntryRefused("wrong_platform")
    return PlatformIdentity(platform="link")


def session_key_of(identity: PlatformIdentity) -> str:
    """The session an entry belongs to: MTurk ``assignmentId``, Prolific ``SESSION_ID``, else ``""``."""
    if identity.platform == "mturk":
        return identity.mturk_assignment_id
    if identity.platform == "prolific":
        return identity.prolific_session_id
    return ""


_SESSION_FIELDS = ("mturk_assignment_id", "mturk_hit_id", "mturk_submit_to", "prolific_study_id", "prolific_session_id")


def _resume(participant: Participant, identity: PlatformIdentity, *, same_session: bool) -> EntryResult:
    """Resume ``participant`` (already proven to be this worker's), or refuse if it is over."""
    if participant.status == Participant.Status.COMPLETED:
        if same_session:
            return EntryResult(participant=participant, created=False, completed=True)
        raise EntryRefused("completed")
    if participant.status == Participant.Status.DECLINED:
        raise EntryRefused("declined")
    return EntryResult(participant=participant, created=False)


def _rebind(participant: Participant, identity: PlatformIdentity) -> bool:
    """Move a participant proven by its own browser to the session it arrives with now.

    Returns ``False`` (nothing changed) when another participant already holds that session.
    """
    key = session_key_of(identity)
    updates = {name: getattr(identity, name) for name in _SESSION_FIELDS if getattr(identity, name)}
    if key:
        updates["session_key"] = key
    updates = {name: value for name, value in updates.items() if getattr(participant, name) != value}
    if not updates:
        return True
    try:
        with transaction.atomic():
            Participant.objects.filter(pk=participant.pk).update(**updates)
    except IntegrityError:
        return False
    for name, value in updates.items():
        setattr(participant, name, value)
    return True


def participant_enter(
    *,
    study: Study,
    identity: PlatformIdentity,
    resume_participant: Participant | None = None,
    client_key: str = "",
    invitation: str = "",
) -> EntryResult:
    """Bind an entry to a participant: resume one proven to be this worker's, or create one, or refuse.

    ``resume_participant`` is the participant remembered by this browser (signed resume cookie),
    ``client_key`` the client's address (the per-client cap: at most ``study.entries_per_client``
    participants started from one address in 24 h who can still take a slot: started, consented or
    in progress), ``invitation`` the signed invitation of a study that
    requires one (:func:`studies.services.invitations.invitation_check`). See the module
    docstring for the rule; raises ``EntryRefused``.
    """
    if study.status not in OPEN_STATUSES:
        raise EntryRefused("closed")
    own = resume_participant
    if own is not None and own.study_id == study.pk and own.platform == identity.platform and (
        identity.platform == "link" or own.platform_worker_id == identity.worker_id
    ):
        same = identity.platform == "link" or own.session_key == session_key_of(identity)
        result = _resume(own, identity, same_session=same)
        if same or _rebind(own, identity):
            return result
    key = session_key_of(identity)
    if key:
        existing = Participant.objects.filter(study=study, platform=identity.platform, session_key=key).first()
        if existing is not None:
            if existing.platform_worker_id != identity.worker_id:
                raise EntryInvalid("workerId" if identity.platform == "mturk" else "PROLIFIC_PID",
                                   "does not match the worker this session belongs to")  # fmt: skip
            return _resume(existing, identity, same_session=True)
    return _participant_create(study=study, identity=identity, client_key=client_key, invitation=invitation)


def _participant_create(*, study: Study, identity: PlatformIdentity, client_key: str, invitation: str) -> EntryResult:
    """A new participant for a new session, after the exclusion, repeat, capacity and entry checks."""
    from studies.services.invitations import invitation_check

    nonce = ""
    if study.require_invitation:
        nonce = invitation_check(study=study, invitation=invitation) or ""
        if not nonce or Participant.objects.filter(study=study, invitation=nonce).exists():
            raise EntryRefused("invitation")
    if identity.worker_id:
        if exclusion_reason(study=study, platform=identity.platform, worker_id=identity.worker_id):
            raise EntryRefused("excluded")
        if Participant.objects.filter(
            study=study, platform=identity.platform, platform_worker_id=identity.worker_id,
            status=Participant.Status.COMPLETED,
        ).exists():  # fmt: skip
            raise EntryRefused("completed")
    if not _study_has_free_slot(study):
        study_leases_sweep(study=study)
        if not _study_has_free_slot(study):
            raise EntryRefused("full")
    client = client_hash(study=study, client_key=client_key) if client_key else ""
    if study.entries_per_client and client:
        unfinished = Participant.objects.filter(  # those who can still take a slot
            study=study, entry_client=client, started_at__gte=timezone.now() - timedelta(seconds=ENTRY_CAP_WINDOW_S),
            status__in=(Participant.Status.STARTED, Participant.Status.CONSENTED, Participant.Status.IN_PROGRESS),
        )
        if unfinished.count() >= study.entries_per_client:
            raise EntryRefused("too_many")
    worker_id = identity.worker_id or f"anon{secrets.token_hex(12)}"
    session_key = session_key_of(identity) or worker_id
    try:
        with transaction.atomic():
            participant = Participant(
                study=study,
                platform=identity.platform,
                platform_worker_id=worker_id,
                session_key=session_key,
                worker_hash=worker_hash(study=study, platform=identity.platform, worker_id=worker_id),
                invitation=nonce,
                entry_client=client,
                **{name: getattr(identity, name) for name in _SESSION_FIELDS},
            )
            if study.arms:  # between-subject arms: the study row stays locked until this insert commits
                participant.arm = arm_assign(study=study, participant_token=participant.token)
            participant.save(force_insert=True)
    except IntegrityError:  # the same session (or invitation) entered twice at once: the other request won
        existing = Participant.objects.filter(study=study, platform=identity.platform, session_key=session_key).first()
        if existing is None or existing.platform_worker_id != worker_id:
            raise EntryRefused("invitation" if nonce else "closed") from None
        return _resume(existing, identity, same_session=True)
    return EntryResult(participant=participant, created=True)


def _study_has_free_slot(study: Study) -> bool:
    return (
        Item.objects.filter(study=study, role=Item.Role.MAIN)
        .annotate(in_use=F("n_answered") + F("n_leased"))
        .filter(in_use__lt=study.judgments_per_item)
        .exists()
    )


def viewport_parse(width: Any, height: Any) -> tuple[int, int] | None:
    """A measured window size (form fields or JSON numbers): two integers ``1..MAX_VIEWPORT_PX``, else ``None``."""
    values = []
    for raw in (width, height):
        if isinstance(raw, bool):
            return None
        if isinstance(raw, str) and re.fullmatch(r"[0-9]{1,6}", raw.strip()):  # ASCII digits only ("²" is a digit)
            raw = int(raw.strip())
        if not isinstance(raw, int) or not 0 < raw <= MAX_VIEWPORT_PX:
            return None
        values.append(raw)
    return values[0], values[1]


def viewport_fits(*, study: Study, viewport: tuple[int, int] | None) -> bool:
    """Whether a measured ``(width, height)`` meets the study's minimum viewport (always, when it sets none)."""
    if not (study.min_viewport_width or study.min_viewport_height):
        return True
    if viewport is None:
        return False
    width, height = viewport
    return width >= study.min_viewport_width and height >= study.min_viewport_height


def participant_consent(
    *, participant: Participant, agree: bool, version: str, viewport: tuple[int, int] | None = None
) -> Participant:
    """Record consent (``started -> consented``) or its refusal (``started -> declined``).

    ``version`` must be the study's current ``consent_version`` (the text the worker read).
    Declining stores nothing but the status. Repeating the same decision is a no-op.

    Device gate: when the study sets ``min_viewport_width``/``min_viewport_height``, agreeing needs
    ``viewport`` = the window size the page (or API client) measured, at least that large;
    otherwise ``ViewportTooSmall`` is raised and nothing is stored, so the worker can come back on
    a larger screen in the same session. Declining needs no measurement.
    """
    study = participant.study
    if version != study.consent_version:
        raise StepNotAllowed(f"consent version {version!r} is not the current one ({study.consent_version!r})")
    if agree and participant.status == Participant.Status.STARTED and not viewport_fits(study=study, viewport=viewport):
        raise ViewportTooSmall(study, viewport)
    target = Participant.Status.CONSENTED if agree else Participant.Status.DECLINED
    changed = Participant.objects.filter(pk=participant.pk, status=Participant.Status.STARTED).update(
        status=target, consent_version=version if agree else ""
    )
    participant.refresh_from_db(fields=["status", "consent_version"])
    if not changed and participant.status != target and not (agree and participant.status == Participant.Status.IN_PROGRESS):
        raise StepNotAllowed(f"consent cannot be changed once {participant.status}")
    return participant


# --- practice ------------------------------------------------------------------------------
#
# Policy (issue #12; Prolific's rule for comprehension checks: two attempts, then the participant
# is asked to return the submission and is never rejected for it). The study has a *pool* of
# practice items (the planner makes ``practice_trials * practice_attempts`` of them where the
# images allow). Attempt k shows ``practice_trials`` items drawn from the pool by the keyed
# generator (``lib.slots.slot_rng``, label ``practice-draw{k}``): items not shown yet come first,
# then the worked example, then the items of the oldest earlier attempt, so a retry shows other
# items whenever the pool holds enough (and a retry cannot be answered from the previous
# attempt's feedback). A smaller pool reuses items, always with a fresh option order and Robot A
# side (label ``practice{k}-{public_id}``); on such a pool the feedback of attempt k does tell
# the answer to a reused item by its label, which the validity audit should report.
# The draw and the choices are not stored: they are re-derived by the server from
# (SECRET_KEY, study seed, participant token, attempt), so rotating SECRET_KEY in the middle of a
# study changes the items of a practice round a participant has open (grading re-derives the
# same way, so the round stays consistent). ``practice_attempts_used`` counts the graded rounds;
# after ``study.practice_attempts`` failed rounds the participant is ``screened_out``.


def practice_pool(*, study: Study) -> list[Item]:
    """Every practice item of the study in seeded order (``tie_rank``, id), with their stimuli."""
    query = Item.objects.filter(study=study, role=Item.Role.PRACTICE).select_related(
        "stimulus_a", "stimulus_b", "stimulus_c", "stimulus_d")
    return list(query.order_by("tie_rank", "id"))


def practice_items(*, study: Study, participant: Participant | None = None) -> list[Item]:
    """The practice pool (see :func:`practice_pool`); empty when the study has no practice.

    The first one is the worked example of the instructions and the MTurk preview
    (:func:`practice_example`). A participant's round is :func:`practice_draw`. With
    ``participant``, a design whose arms choose the practice items (``Design.arm_roles``: the
    forward simulation's learning phase) gives that participant's arm's items only, so its worked
    example is one of them (a no-explanation arm is never taught by a map).
    """
    if study.practice_trials <= 0:
        return []
    pool = practice_pool(study=study)
    methods = participant_methods(study=study, participant=participant, role=Item.Role.PRACTICE)
    return pool if methods is None else [item for item in pool if item.method in methods]


def practice_example_shown(*, study: Study) -> bool:
    """Whether the MTurk preview (before entry: no arm yet) may show a worked example: not when the
    study's arms choose the practice items, since one arm's example would teach every arm."""
    return not (study.arms and Item.Role.PRACTICE in design_for(study).arm_roles)


def practice_example(*, study: Study, pool: list[Item] | None = None) -> Item | None:
    """The item of the worked example (instructions, MTurk preview): the pool's first item."""
    pool = practice_items(study=study) if pool is None else pool
    return pool[0] if pool else None


def practice_round_size(*, study: Study, pool: list[Item]) -> int:
    """Items per attempt: ``study.practice_trials``, at most the pool."""
    return min(max(study.practice_trials, 0), len(pool))


def practice_draw(*, study: Study, participant_token: str, attempt: int, pool: list[Item] | None = None) -> list[Item]:
    """The items of practice attempt ``attempt`` (1-based) of one participant, in display order.

    Deterministic in (``SECRET_KEY``, study seed, token, attempt): attempts 1..k are replayed,
    each taking the ``practice_trials`` items shown least recently (never shown < the worked
    example < shown in an earlier attempt, oldest first), ties broken by the keyed generator.
    """
    pool = practice_items(study=study) if pool is None else pool
    if study.arms and Item.Role.PRACTICE in design_for(study).arm_roles:  # issue 16: the arm's practice items only
        arm_of = Participant.objects.filter(study=study, token=participant_token).first()
        methods = participant_methods(study=study, participant=arm_of, role=Item.Role.PRACTICE)
        pool = pool if methods is None else [item for item in pool if item.method in methods]
    n = practice_round_size(study=study, pool=pool)
    if n == 0 or attempt < 1:
        return []
    example = practice_example(study=study, pool=pool)
    last_shown: dict[int, int] = {example.pk: 0} if example is not None else {}
    draw: list[Item] = []
    for k in range(1, attempt + 1):
        rng = slot_rng(seed=study.seed, participant_token=participant_token, label=f"practice-draw{k}")
        keys = {item.pk: rng.random() for item in pool}
        draw = sorted(pool, key=lambda item: (last_shown.get(item.pk, -1), keys[item.pk]))[:n]
        for item in draw:
            last_shown[item.pk] = k
    return draw


SCREENED_OUT_MESSAGE = (
    "Thank you for your time. The practice questions were not answered correctly in the {attempts} attempt{s} "
    "this study allows, so the study ends here: no further questions will be shown."
)
#: What to do next, per platform (MTurk: return the HIT; Prolific: return the submission, which is
#: never a rejection; a plain link: nothing).
SCREENED_OUT_NEXT = {
    "mturk": "Please return the HIT on Mechanical Turk (do not submit it: there is no completion code). "
    "Returning a HIT does not affect your approval rate.",
    "prolific": "Please return the study on Prolific (return your submission; do not submit it: there is no "
    "completion code). Returning does not affect your approval rating.",
    "link": "You may close this page.",
}


def screened_out_message(*, participant: Participant) -> str:
    """The polite end of a screened-out participant, with the platform's instruction."""
    attempts = practice_attempt_limit(participant.study)
    head = SCREENED_OUT_MESSAGE.format(attempts=attempts, s="" if attempts == 1 else "s")
    return f"{head} {SCREENED_OUT_NEXT.get(participant.platform, SCREENED_OUT_NEXT['link'])}"


def _practice_feedback(*, study: Study, item: Item, choices: AssignmentChoices, correct: bool | None) -> PracticeFeedback:
    """The feedback on one graded practice item: what its design names as the right answer
    (``Design.practice_feedback``) for the choices the worker was shown."""
    correct_choice, correct_robot, right_answer = design_for(study).practice_feedback(
        item=item, option_order=choices.option_order, model_a_shown_left=choices.model_a_shown_left
    )
    return PracticeFeedback(item.public_id, correct, correct_choice, correct_robot, right_answer)  # type: ignore[arg-type]


def practice_grade(*, participant: Participant, answers: Mapping[str, Any], attempt: int | None = None) -> PracticeResult:
    """Grade the participant's current practice attempt; pass, or count the failure, or screen out.

    ``answers`` maps each item of the current draw (:func:`practice_draw`) by ``public_id`` to the
    displayed choice; ``attempt`` (optional) is the attempt the worker answered: another one than
    the current (a resubmitted or stale form) raises ``StepNotAllowed`` and grades nothing. The
    round passes when ``n_correct >= ceil(practice_pass_fraction * n_items)`` (items with no right
    answer count as correct): ``in_progress`` with ``practice_passed``. A failed round is counted
    (``practice_attempts_used``); the ``study.practice_attempts``-th failure makes the participant
    ``screened_out``. One transaction holding the participant's row lock, and a conditional
    update on the attempt counter, so two concurrent submits grade one round once.
    Raises ``ScreenedOut`` once no attempt is left, ``StepNotAllowed`` before consent or after passing.
    """
    study = participant.study
    result = None
    with transaction.atomic():
        locked = Participant.objects.select_for_update().get(pk=participant.pk)
        locked.study = study
        if not practice_exhausted(locked):
            result = _practice_grade_locked(locked, answers=answers, attempt=attempt)
        elif locked.status == Participant.Status.CONSENTED:  # out of attempts: the study's limit was lowered
            Participant.objects.filter(pk=locked.pk, status=Participant.Status.CONSENTED).update(
                status=Participant.Status.SCREENED_OUT
            )
    participant.refresh_from_db(fields=["status", "practice_passed", "practice_attempts_used"])
    if result is None:
        raise ScreenedOut(screened_out_message(participant=participant))
    return result


def _practice_grade_locked(locked: Participant, *, answers: Mapping[str, Any], attempt: int | None) -> PracticeResult:
    """:func:`practice_grade` inside its transaction, the participant's row locked."""
    study = locked.study
    if not stage_allows(locked, "practice"):
        raise StepNotAllowed(f"practice is not open (status {locked.status}"
                             f"{', passed' if locked.practice_passed else ''})")  # fmt: skip
    current = practice_attempt(locked)
    if attempt is not None and attempt != current:
        raise StepNotAllowed(f"practice attempt {attempt} is not the current one ({current})")
    items = practice_draw(study=study, participant_token=locked.token, attempt=current)
    feedback: list[PracticeFeedback] = []
    n_correct = 0
    for item in items:
        if item.public_id not in answers:
            raise AnswerInvalid(f"answers.{item.public_id}", "is missing")
        choices = practice_choices(study=study, participant_token=locked.token, attempt=current, item=item)
        scored = answer_score(
            study=study, item=item, option_order=choices.option_order, model_a_shown_left=choices.model_a_shown_left,
            choice=_as_int(answers[item.public_id], f"answers.{item.public_id}"),
        )  # fmt: skip
        n_correct += scored.correct is not False
        feedback.append(_practice_feedback(study=study, item=item, choices=choices, correct=scored.correct))
    required = -(-round(study.practice_pass_fraction * len(items) * 1000) // 1000)  # ceil, float-safe
    passed = n_correct >= required
    screened_out = not passed and current >= practice_attempt_limit(study)
    updates: dict[str, Any] = {"practice_attempts_used": current}
    if passed:
        updates.update(status=Participant.Status.IN_PROGRESS, practice_passed=True)
    elif screened_out:
        updates.update(status=Participant.Status.SCREENED_OUT)
    graded = Participant.objects.filter(
        pk=locked.pk, status=Participant.Status.CONSENTED, practice_passed=False, practice_attempts_used=current - 1,
    ).update(**updates)  # fmt: skip
    if not graded:  # another request graded this attempt first (where row locks do not exist)
        raise StepNotAllowed(f"practice attempt {current} was graded already")
    return PracticeResult(
        passed=passed, n_correct=n_correct, n_items=len(items), required=required, feedback=feedback,
        attempt=current, attempts=practice_attempt_limit(study), screened_out=screened_out,
    )  # fmt: skip


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
    own_code = participant.completion_code or completion_code_derive(study=study, participant_token=participant.token)
    return Completion(
        code=study.completion_code if participant.platform == "prolific" else own_code,
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
            if not stage_allows(locked, "trials"):
                raise StepNotAllowed(f"cannot complete from status {locked.status}")
            if not participant_trials_done(participant=locked):
                raise StepNotAllowed("trials remain")
            if slot_counts(participant=locked).answered == 0:
                raise StepNotAllowed("no trial was answered")
            if questionnaire_pending(participant=locked):
                raise StepNotAllowed("the questionnaire is not submitted")
            locked.status = Participant.Status.COMPLETED
            locked.completed_at = now or timezone.now()
            locked.completion_code = completion_code_derive(study=locked.study, participant_token=locked.token)
            locked.save(update_fields=["status", "completed_at", "completion_code"])
    participant.status = locked.status
    participant.completed_at = locked.completed_at
    participant.completion_code = locked.completion_code
    return completion_for(locked)
