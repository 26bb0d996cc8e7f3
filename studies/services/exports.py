"""CSV exports of a study, produced as row generators and streamed.

Exports (``EXPORT_KINDS``):

* ``tidy`` - one row per judgment (practice trials left out): study, item, method, models,
  image, target class, the options as shown and their order, the answer (as the study's design
  writes it, ``Design.export_answer``; trust: the scale position and the wording shown), correct
  or scores, the worker's comment, hashed worker id,
  platform ids, times, response times, exclusion flags (any rule and one column per rule), the
  participant's questionnaire answers (``q_<name>``, one column per question), simulated flag.
* ``summary`` - one row per (with/without exclusions, method) with every statistic, for the
  whole study (``arm`` empty) then for each between-subject arm.
* ``pairwise`` - one row per (with/without exclusions, pair of methods), Holm-adjusted.
* ``exclusions`` - one row per rule with the workers and judgments it flags.
* ``mturk`` - MTurk batch-results shape: one row per participant with ``HITId``,
  ``AssignmentId``, ``WorkerId``, ``WorkTimeInSeconds``, ``Input.*`` and ``Answer.*`` (the
  questionnaire as ``Answer.q_<name>``, each trial as ``Answer.trial_NN_*``).
* ``questionnaire`` - one row per (participant who submitted it, question): the question's
  name, text and type and the answer, with the hashed worker and session ids.
* ``payments-mturk`` / ``payments-prolific`` - approve / reject / bonus lists.

Every cell goes through :func:`csv_cell`: a string that a spreadsheet would evaluate as a
formula (first character ``= + - @``, tab or carriage return) is prefixed with ``'``
(OWASP "CSV injection"); numbers are written as numbers, so ``-2`` stays ``-2``. The one
exception are identifiers (:class:`Identifier`: study slug, item id, hashed worker id,
platform ids) made only of ``A-Z a-z 0-9 _ -``: such a value cannot hold a function call or
a DDE payload (no parentheses, quotes, ``|``, ``!`` or ``+``), so it is written unchanged and
joins exactly with the other files; any other identifier (e.g. a worker id sent as
``=cmd|...``) is escaped like all text.

Payment policy (``payment_decisions``): a completed participant flagged by no rule is
approved (and gets ``bonus``); one flagged by ``catch_accuracy_below`` (failed attention
checks, the reason both platforms accept) is rejected; one flagged only by other rules, or
who did not complete, is left for manual review. A participant screened out by the practice
(``screened_out``: every practice attempt failed, asked to return the HIT / study) is listed
apart, last: neither approved nor rejected.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np
from django.http import StreamingHttpResponse

from studies.analysis import apply_exclusions, rows_as_dicts, rules_from_json
from studies.designs import design_for
from studies.models import Assignment, Item, Participant, Response, Study
from studies.selectors.judgments import StudyJudgments, study_judgments_load
from studies.selectors.participation import study_wording
from studies.services.participation import questionnaire_questions, session_hash
from studies.services.results import StudyResults, pairwise_rows, study_results_compute, summary_rows

__all__ = [
    "EXPORT_KINDS",
    "MAX_BONUS",
    "ExclusionFlags",
    "Identifier",
    "PaymentDecision",
    "bonus_parse",
    "csv_cell",
    "csv_lines",
    "export_rows",
    "exclusion_flags_compute",
    "payment_decisions",
    "streaming_csv_response",
]

EXPORT_KINDS = (
    "tidy", "summary", "pairwise", "exclusions", "questionnaire", "mturk", "payments-mturk", "payments-prolific",
)  # fmt: skip
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_SAFE_IDENTIFIER = re.compile(r"[A-Za-z0-9_-]+")


class Identifier(str):
    """A system or platform identifier: left unescaped when it is ``[A-Za-z0-9_-]+`` only."""

    __slots__ = ()


def _ident(value: Any) -> Identifier | None:
    return None if value is None else Identifier(value)
_CHUNK = 2000
#: The largest bonus per participant a payment list accepts (in the platform's currency).
MAX_BONUS = Decimal("1000")


def bonus_parse(value: Decimal | str | int | None) -> Decimal:
    """A bonus amount from a query parameter or argument: finite, ``0 <= x <= MAX_BONUS``, cents.

    Raises:
        ValueError: For anything else (``NaN``, ``inf``, ``-1``, ``1e9``, ``0.001``, ``abc``),
            with a message that can be shown to the user as it is.
    """
    text = "0" if value is None else str(value).strip() or "0"
    shown = text if len(text) <= 40 else text[:40] + "..."
    problem = f"bonus must be an amount from 0 to {MAX_BONUS} with at most two decimals, such as 0.50 (got {shown!r})"
    if len(text) > 40:
        raise ValueError(problem)
    try:
        amount = Decimal(text)
    except (InvalidOperation, ValueError):
        raise ValueError(problem) from None
    # Checked in this order, so quantize never meets a huge or non-finite value.
    if not amount.is_finite() or amount < 0 or amount > MAX_BONUS or amount != amount.quantize(Decimal("0.01")):
        raise ValueError(problem)
    return abs(amount.quantize(Decimal("0.01")))  # abs: "-0" is 0.00


def csv_cell(value: Any) -> Any:
    """A value made safe for a spreadsheet cell.

    ``None`` becomes ``""``; booleans ``true``/``false``; datetimes ISO 8601; lists and dicts
    JSON; numbers stay numbers; a string starting with ``= + - @``, tab or CR gets a leading
    ``'`` so that Excel, LibreOffice and Google Sheets show it as text.
    """
    if value is None:
        return ""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal | np.integer | np.floating):
        if isinstance(value, float | np.floating) and not np.isfinite(value):
            return ""
        return value
    if isinstance(value, Identifier) and _SAFE_IDENTIFIER.fullmatch(value):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple | dict):
        value = json.dumps(value, ensure_ascii=False)
    text = str(value)
    if text.startswith(_FORMULA_START):
        return "'" + text
    return text


class _Echo:
    """A file-like object whose ``write`` returns the line (for streaming csv.writer output)."""

    def write(self, value: str) -> str:
        return value


def csv_lines(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[str]:
    """CSV text lines (header first) with every cell passed through :func:`csv_cell`."""
    writer = csv.writer(_Echo(), lineterminator="\n")
    yield writer.writerow([csv_cell(h) for h in header])
    for row in rows:
        yield writer.writerow([csv_cell(v) for v in row])


def streaming_csv_response(lines: Iterator[str], filename: str) -> StreamingHttpResponse:
    """A streamed ``text/csv`` download (UTF-8) named ``filename``."""
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


@dataclass(frozen=True)
class ExclusionFlags:
    """Which rule flags which participant (by participant primary key)."""

    rule_names: tuple[str, ...]
    flags_by_participant: dict[int, tuple[bool, ...]]

    def of(self, participant_id: int) -> tuple[bool, ...]:
        return self.flags_by_participant.get(participant_id, (False,) * len(self.rule_names))


def exclusion_flags_compute(*, study: Study, loaded: StudyJudgments | None = None) -> ExclusionFlags:
    """Apply the study's exclusion rules and return the flags per participant id."""
    data = loaded if loaded is not None else study_judgments_load(study=study)
    rules = rules_from_json(study.exclusion_rules or [])
    report = apply_exclusions(data.judgments, rules)
    names = tuple(f"{r.name}#{k + 1}" if sum(x.name == r.name for x in rules) > 1 else r.name
                  for k, r in enumerate(rules))  # fmt: skip
    flags: dict[int, tuple[bool, ...]] = {}
    if rules and report.worker_flags.shape[1]:
        present = np.unique(data.judgments.worker)
        for code in present.tolist():
            flags[int(data.participant_ids[code])] = tuple(bool(x) for x in report.worker_flags[:, code])
    return ExclusionFlags(rule_names=names, flags_by_participant=flags)


def _item_info(study: Study) -> dict[int, dict[str, Any]]:
    rows = Item.objects.filter(study_id=study.pk).exclude(role=Item.Role.PRACTICE).values(
        "id", "public_id", "role", "method", "target_class", "target_label", "options", "correct_option",
        "image__original_name", "image__sha256", "stimulus_a__sha256", "stimulus_b__sha256",
    )  # fmt: skip
    return {row["id"]: row for row in rows}


def _participant_info(study: Study) -> dict[int, dict[str, Any]]:
    rows = Participant.objects.filter(study_id=study.pk).values(
        "id", "worker_hash", "platform", "platform_worker_id", "mturk_assignment_id", "mturk_hit_id",
        "prolific_study_id", "prolific_session_id", "status", "is_simulated", "started_at", "completed_at",
        "completion_code", "session_key", "questionnaire", "arm",
    )  # fmt: skip
    return {row["id"]: row for row in rows}


@dataclass(frozen=True)
class QuestionColumn:
    """One closing question as exported: ``name`` (column ``q_<name>``), the text shown, its type."""

    name: str
    text: str
    type: str


def questionnaire_columns(study: Study, people: dict[int, dict[str, Any]]) -> list[QuestionColumn]:
    """The study's questions in order, then any name answered under an earlier questionnaire (text unknown)."""
    columns = [QuestionColumn(q.name, q.label, q.type) for q in questionnaire_questions(study=study)]
    known = {c.name for c in columns}
    extra = sorted({name for person in people.values() for name in _answers(person) if name not in known})
    return columns + [QuestionColumn(name, "", "") for name in extra]


def _answers(person: dict[str, Any]) -> dict[str, Any]:
    stored = person.get("questionnaire")
    answers = stored.get("answers") if isinstance(stored, dict) else None
    return answers if isinstance(answers, dict) else {}


TIDY_HEADER = (
    "study", "study_kind", "item", "item_role", "method", "model", "model_b", "image", "image_sha256",
    "stimulus_sha256", "stimulus_b_sha256", "target_class", "target_label", "options", "option_order",
    "options_as_shown", "correct_option", "answer_option", "answer_label", "answer_position", "correct",
    "robot_a_is_model_a", "score_model_a", "score_towards_model_b", "worker_hash", "platform",
    "session_hash", "mturk_hit_id", "prolific_study_id", "arm", "trial_position",
    "shown_at", "answered_at", "response_ms", "server_response_ms", "comment", "excluded", "excluded_by",
)  # fmt: skip


def _tidy(study: Study, flags: ExclusionFlags) -> tuple[list[str], Iterator[list[Any]]]:
    items = _item_info(study)
    people = _participant_info(study)
    design = design_for(study)
    model_a, model_b = design.model_names(study)
    hashes: dict[int, str] = {}

    def session_of(person: dict[str, Any]) -> str:
        """The keyed hash of the participant's session: assignment and session ids resume a participant
        (``services.participation``), so they leave only in the lists that need ``export_worker_ids``."""
        if person["id"] not in hashes:
            hashes[person["id"]] = session_hash(study=study, platform=person["platform"], session_key=person["session_key"])
        return hashes[person["id"]]

    questions = questionnaire_columns(study, people)
    header = [*TIDY_HEADER, *(f"exclude_{name}" for name in flags.rule_names), *(f"q_{q.name}" for q in questions),
              "is_simulated"]  # fmt: skip
    scale = study_wording(study).scale

    def rows() -> Iterator[list[Any]]:
        query = (
            Response.objects.filter(assignment__item__study_id=study.pk)
            .exclude(assignment__item__role=Item.Role.PRACTICE)
            .order_by("id")
            .values_list(
                "assignment__item_id", "assignment__participant_id", "assignment__position",
                "assignment__option_order", "assignment__model_a_shown_left", "assignment__shown_at",
                "assignment__answered_at", "chosen_option", "correct", "score_model_a", "client_response_ms",
                "created_at", "comment",
            )
        )  # fmt: skip
        for (item_id, pid, position, order, a_left, shown_at, answered_at, chosen, correct, score, rt_ms,
             created_at, comment) in query.iterator(chunk_size=_CHUNK):  # fmt: skip
            item = items[item_id]
            person = people[pid]
            options = item["options"] or []
            order = list(order or range(len(options)))
            shown = [options[k] if 0 <= k < len(options) else None for k in order]
            answered = answered_at or created_at
            server_ms = round((answered_at - shown_at).total_seconds() * 1000) if answered_at and shown_at else None
            rule_flags = flags.of(pid)
            answers = _answers(person)
            answer = design.export_answer(options=options, order=order, chosen_option=chosen, score_model_a=score,
                                          model_a_shown_left=a_left, scale=scale)  # fmt: skip
            yield [
                _ident(study.slug), study.kind, _ident(item["public_id"]), item["role"], item["method"], model_a, model_b,
                item["image__original_name"], item["image__sha256"], item["stimulus_a__sha256"],
                item["stimulus_b__sha256"], item["target_class"], item["target_label"], options, order, shown,
                item["correct_option"], answer["answer_option"], answer["answer_label"], answer["answer_position"],
                correct, answer["robot_a_is_model_a"],
                score, None if score is None else -score,
                _ident(person["worker_hash"]), person["platform"], _ident(session_of(person)),
                _ident(person["mturk_hit_id"]), _ident(person["prolific_study_id"]), _ident(person["arm"]), position,
                shown_at, answered, rt_ms, server_ms, comment, any(rule_flags),
                ";".join(n for n, f in zip(flags.rule_names, rule_flags, strict=True) if f),
                *rule_flags, *(answers.get(q.name) for q in questions), person["is_simulated"],
            ]  # fmt: skip

    return header, rows()


def _dict_rows(dicts: list[dict[str, Any]], fallback_header: Sequence[str]) -> tuple[list[str], Iterator[list[Any]]]:
    header = list(dicts[0]) if dicts else list(fallback_header)
    return header, ([d.get(h) for h in header] for d in dicts)


@dataclass(frozen=True)
class PaymentDecision:
    """What to do with one participant's submission on the crowd platform."""

    participant_id: int
    action: str  # "approve", "reject", "review" or "screened_out"
    reason: str
    bonus: Decimal


#: The reason given for a participant screened out by the practice (issue #12).
SCREENED_OUT_REASON = "screened out by the practice"


def payment_decisions(*, study: Study, flags: ExclusionFlags, bonus: Decimal = Decimal("0")) -> list[PaymentDecision]:
    """Approve / reject / review / screened_out per participant, following the module docstring's policy.

    ``screened_out``: failed every practice attempt (a comprehension check) and was asked to return
    the HIT / the study; never approved and never rejected (Prolific: a failed comprehension check
    is never a reason to reject; request a return if they submitted anyway). They have no trials.
    A completed participant whose worker id was also screened out in another session of the study
    (a second try after returning) is left for review.
    """
    people = list(
        Participant.objects.filter(study_id=study.pk).order_by("id")
        .values_list("id", "status", "platform", "platform_worker_id", "practice_attempts_used")
    )  # fmt: skip
    screened = {(platform, worker) for _, status, platform, worker, _ in people
                if status == Participant.Status.SCREENED_OUT}  # fmt: skip
    decisions = []
    for pid, status, platform, worker, attempts in people:
        rule_flags = flags.of(pid)
        flagged = [n for n, f in zip(flags.rule_names, rule_flags, strict=True) if f]
        if status == Participant.Status.SCREENED_OUT:
            what = {"mturk": "the HIT", "prolific": "the study"}.get(platform, "")
            reason = f"{SCREENED_OUT_REASON} ({attempts} failed attempt{'' if attempts == 1 else 's'})"
            decisions.append(PaymentDecision(pid, "screened_out", reason + (f"; asked to return {what}" if what else ""),
                                             Decimal("0")))  # fmt: skip
        elif status != Participant.Status.COMPLETED:
            decisions.append(PaymentDecision(pid, "review", f"did not complete (status {status})", Decimal("0")))
        elif any(n.startswith("catch_accuracy_below") for n in flagged):
            decisions.append(PaymentDecision(pid, "reject", "failed attention checks", Decimal("0")))
        elif flagged:
            decisions.append(PaymentDecision(pid, "review", "flagged by " + ", ".join(flagged), Decimal("0")))
        elif (platform, worker) in screened:
            decisions.append(PaymentDecision(pid, "review", f"{SCREENED_OUT_REASON} in another session of this study",
                                             Decimal("0")))  # fmt: skip
        else:
            decisions.append(PaymentDecision(pid, "approve", "", bonus))
    return decisions


def _payments(study: Study, flags: ExclusionFlags, platform: str, bonus: Decimal) -> tuple[list[str], Iterator[list[Any]]]:
    """The platform's payment list; screened-out participants come last, in a list of their own
    (MTurk: neither approved nor rejected, the reason in ``ScreenedOut``; Prolific: action
    ``SCREENED_OUT``)."""
    people = _participant_info(study)
    decisions = [d for d in payment_decisions(study=study, flags=flags, bonus=bonus)
                 if people[d.participant_id]["platform"] == platform]  # fmt: skip
    decisions.sort(key=lambda d: d.action == "screened_out")  # stable: the others keep their order
    if platform == Study.Platform.MTURK:
        header = ["AssignmentId", "WorkerId", "HITId", "Approve", "Reject", "BonusAmount", "BonusReason", "Review",
                  "ExpectedCompletionCode", "ScreenedOut"]  # fmt: skip

        def rows() -> Iterator[list[Any]]:
            for d in decisions:
                p = people[d.participant_id]
                yield [_ident(p["mturk_assignment_id"]), _ident(p["platform_worker_id"]), _ident(p["mturk_hit_id"]),
                       "x" if d.action == "approve" else "", d.reason if d.action == "reject" else "",
                       f"{d.bonus:.2f}" if d.bonus else "", "study bonus" if d.bonus else "",
                       d.reason if d.action == "review" else "", _ident(p["completion_code"]),
                       d.reason if d.action == "screened_out" else ""]  # fmt: skip
    else:
        header = ["participant_id", "session_id", "study_id", "action", "reason", "bonus"]

        def rows() -> Iterator[list[Any]]:
            for d in decisions:
                p = people[d.participant_id]
                yield [_ident(p["platform_worker_id"]), _ident(p["prolific_session_id"]), _ident(p["prolific_study_id"]),
                       d.action.upper(), d.reason, f"{d.bonus:.2f}" if d.bonus else ""]  # fmt: skip

    return header, rows()


def _mturk_wide(study: Study) -> tuple[list[str], Iterator[list[Any]]]:
    """One row per participant, trials in their order as ``Answer.trial_NN_*`` columns.

    Per trial: ``item``, ``method``, ``answer``, ``answer_option``, ``answer_label`` (as the study's
    design writes them, ``Design.export_answer``; discrimination: the option chosen, its index into
    the item's options, its text; trust: the score towards model A, -2..+2, the scale position
    clicked, 0..4, its text), ``correct``, ``rt_ms``, ``comment``. The questionnaire comes first as ``Answer.q_<name>``.
    """
    items = _item_info(study)
    people = _participant_info(study)
    questions = questionnaire_columns(study, people)
    scale = study_wording(study).scale
    answered = (
        Assignment.objects.filter(participant__study_id=study.pk, response__isnull=False)
        .exclude(item__role=Item.Role.PRACTICE)
        .order_by("participant_id", "position", "id")
        .values_list("participant_id", "item_id", "response__chosen_option", "response__score_model_a",
                     "response__correct", "response__client_response_ms", "model_a_shown_left", "response__comment")
    )  # fmt: skip
    per_participant: dict[int, int] = {}
    for pid in answered.values_list("participant_id", flat=True).iterator(chunk_size=_CHUNK):
        per_participant[pid] = per_participant.get(pid, 0) + 1
    n_trials = max(per_participant.values(), default=0)
    trial_fields = ("item", "method", "answer", "answer_option", "answer_label", "correct", "rt_ms", "comment")
    header = ["HITId", "AssignmentId", "WorkerId", "AssignmentStatus", "AcceptTime", "SubmitTime",
              "WorkTimeInSeconds", "Input.study", "Input.study_kind", "Input.platform", "Answer.n_trials",
              "Answer.worker_hash", "Answer.arm", "Answer.is_simulated", *(f"Answer.q_{q.name}" for q in questions),
              *(f"Answer.trial_{k + 1:02d}_{f}" for k in range(n_trials) for f in trial_fields)]  # fmt: skip
    design = design_for(study)

    def person_row(pid: int, trials: list[list[Any]]) -> list[Any]:
        p = people[pid]
        started, completed = p["started_at"], p["completed_at"]
        work = round((completed - started).total_seconds()) if started and completed else None
        status = "Submitted" if p["status"] == Participant.Status.COMPLETED else "Accepted"
        cells = [value for trial in trials for value in trial]
        cells += [None] * (n_trials * len(trial_fields) - len(cells))
        return [_ident(p["mturk_hit_id"]), _ident(p["mturk_assignment_id"]), _ident(p["platform_worker_id"]), status,
                started, completed, work, _ident(study.slug), study.kind, p["platform"], len(trials),
                _ident(p["worker_hash"]), _ident(p["arm"]), p["is_simulated"],
                *(_answers(p).get(q.name) for q in questions), *cells]  # fmt: skip

    def rows() -> Iterator[list[Any]]:
        current: int | None = None
        trials: list[list[Any]] = []
        for pid, item_id, chosen, score, correct, rt_ms, a_left, comment in answered.iterator(chunk_size=_CHUNK):
            if pid != current and current is not None:
                yield person_row(current, trials)
                trials = []
            current = pid
            item = items[item_id]
            options = item["options"] or []
            a = design.export_answer(options=options, order=list(range(len(options))), chosen_option=chosen,
                                     score_model_a=score, model_a_shown_left=a_left, scale=scale)  # fmt: skip
            trials.append([_ident(item["public_id"]), item["method"], a["answer"], a["answer_option"], a["answer_label"],
                           correct, rt_ms, comment])  # fmt: skip
        if current is not None:
            yield person_row(current, trials)

    return header, rows()


QUESTIONNAIRE_HEADER = (
    "study", "worker_hash", "session_hash", "platform", "participant_status", "submitted_at", "question",
    "question_text", "question_type", "answer", "is_simulated",
)  # fmt: skip


def _questionnaire(study: Study) -> tuple[list[str], Iterator[list[Any]]]:
    """One row per (participant who submitted the questionnaire, question), in question order; a
    question left blank has an empty answer. Hashed worker and session ids only (view permission)."""
    people = _participant_info(study)
    questions = questionnaire_columns(study, people)

    def rows() -> Iterator[list[Any]]:
        for pid in sorted(people):
            person = people[pid]
            stored = person["questionnaire"] if isinstance(person["questionnaire"], dict) else {}
            if "submitted_at" not in stored:
                continue
            answers = _answers(person)
            session = session_hash(study=study, platform=person["platform"], session_key=person["session_key"])
            for question in questions:
                yield [_ident(study.slug), _ident(person["worker_hash"]), _ident(session), person["platform"],
                       person["status"], stored["submitted_at"], question.name, question.text, question.type,
                       answers.get(question.name), person["is_simulated"]]  # fmt: skip

    return list(QUESTIONNAIRE_HEADER), rows()


def _results_dicts(results: StudyResults, export: str) -> tuple[list[str], Iterator[list[Any]]]:
    """The ``summary``, ``pairwise`` or ``exclusions`` export of computed results."""
    if export == "summary":
        return _dict_rows(summary_rows(results), ("analysis", "arm", "method"))
    if export == "pairwise":
        return _dict_rows(pairwise_rows(results), ("analysis", "method_a", "method_b"))
    report = results.analysis.exclusions
    dicts = rows_as_dicts(report.per_rule) + [{
        "rule": "any", "label": "excluded by any rule", "n_workers": report.n_workers_excluded,
        "n_judgments": report.n_judgments_excluded,
    }]  # fmt: skip
    return _dict_rows(dicts, ("rule", "label", "n_workers", "n_judgments"))


#: The exports computed from the study's results (``summary_rows`` and friends).
RESULTS_EXPORTS = ("summary", "pairwise", "exclusions")
#: The payment lists, by export name: the platform they pay on.
PAYMENT_EXPORTS = {"payments-mturk": Study.Platform.MTURK, "payments-prolific": Study.Platform.PROLIFIC}


def export_rows(
    *,
    study: Study,
    kind: str,
    include_simulated: bool = True,
    bonus: Decimal | str = "0",
    results: StudyResults | None = None,
) -> tuple[list[str], Iterator[list[Any]]]:
    """Header and row iterator of one export of one study (rows are produced lazily).

    Args:
        study: The study.
        kind: The export's name, one of ``EXPORT_KINDS`` (not the study's kind).
        include_simulated: For ``summary``/``pairwise``: analyse simulated observers too.
        bonus: Bonus per approved participant for the payment lists (e.g. ``"0.50"``).
        results: Results already computed (summary/pairwise/exclusions reuse them).

    Raises:
        ValueError: For an unknown ``kind`` or a malformed bonus (see :func:`bonus_parse`).
    """
    export = kind
    if export not in EXPORT_KINDS:
        raise ValueError(f"unknown export {export!r}; choose one of {', '.join(EXPORT_KINDS)}")
    bonus_amount = bonus_parse(bonus)
    if export in RESULTS_EXPORTS:
        if results is None:
            results = study_results_compute(study=study, include_simulated=include_simulated)
        return _results_dicts(results, export)
    built = {"mturk": _mturk_wide, "questionnaire": _questionnaire}.get(export)
    if built is not None:
        return built(study)
    flags = exclusion_flags_compute(study=study)
    if export in PAYMENT_EXPORTS:
        return _payments(study, flags, PAYMENT_EXPORTS[export], bonus_amount)
    return _tidy(study, flags)


def export_filename(study: Study, export: str) -> str:
    """``study-<id>-<export>.csv``."""
    return f"study-{study.pk}-{export}.csv"


def tidy_lines_for_studies(studies: Sequence[Study]) -> Iterator[str]:
    """Tidy CSV lines of several studies in one file (the union of their columns, one header).

    Studies with different exclusion rules have different ``exclude_<rule>`` columns; a
    study's rows leave the other studies' rule columns empty.
    """
    parts = [export_rows(study=study, kind="tidy") for study in studies]
    header: list[str] = []
    for study_header, _ in parts:
        header += [h for h in study_header if h not in header]
    if "is_simulated" in header:  # keep the simulated flag last
        header.remove("is_simulated")
        header.append("is_simulated")

    def rows() -> Iterator[list[Any]]:
        for study_header, study_rows in parts:
            if study_header == header:
                yield from study_rows
                continue
            index = [study_header.index(h) if h in study_header else None for h in header]
            for row in study_rows:
                yield [None if k is None else row[k] for k in index]

    return csv_lines(header, rows())
