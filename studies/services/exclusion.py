"""Who may not start a study: the study's own list, its exclusion group, and "already took part".

Platform ids are public and typed by people, so every lookup goes through
:func:`platform_id_normalize` first (MTurk ids are upper-case, Prolific ids lower-case hex;
surrounding whitespace is dropped). Lists are stored normalised; a row typed into the admin with other
letter case or spaces is still matched (``LOWER(TRIM(id))``).

Rule (issue #11): a worker is refused at entry when their normalised id is

- on the study's ``ExcludedWorker`` list, or on the list of the study's ``ExclusionGroup``;
- a participant who **completed** another study of the same group (same platform).

"Took part" means completed: a participant row that only entered, declined or is half-way may
have been made by someone else who knows the (public) id, and must not lock the real worker out.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import QuerySet
from django.db.models.functions import Lower, Trim

from studies.models import ExcludedWorker, ExclusionGroup, ExclusionGroupWorker, Participant, Study

#: Platform ids: letters and digits only (MTurk ids are upper-case alphanumerics, Prolific ids
#: 24 hex digits), at most 255 characters (AWS Assignment data structure).
PLATFORM_ID_RE = re.compile(r"^[A-Za-z0-9]{1,255}$")
#: Column names read as the platform id in an imported CSV (first match wins, case-insensitive).
ID_COLUMNS = ("workerid", "worker_id", "prolific_pid", "participant_id", "participant id", "platform_worker_id", "id")


def platform_id_normalize(*, platform: str, worker_id: str) -> str:
    """The lookup form of a platform id: stripped; MTurk upper-case, Prolific lower-case.

    MTurk worker and assignment ids are upper-case alphanumerics and Prolific ids lower-case
    hex, so folding to the platform's own case keeps exported ids as the platform shows them.
    A link study's ids are the server's own and are returned stripped only.
    """
    value = (worker_id or "").strip()
    if platform == Study.Platform.MTURK:
        return value.upper()
    if platform == Study.Platform.PROLIFIC:
        return value.lower()
    return value


def _listed(rows: QuerySet, folded: str) -> bool:
    """Whether a list holds ``folded`` whatever the case and surrounding spaces it was typed with."""
    return rows.annotate(folded=Lower(Trim("platform_worker_id"))).filter(folded=folded).exists()


def exclusion_reason(*, study: Study, platform: str, worker_id: str) -> str | None:
    """Why this (normalised) worker may not start ``study``, or ``None``. At most three queries."""
    if not worker_id:
        return None
    folded = worker_id.strip().lower()
    if _listed(ExcludedWorker.objects.filter(study=study), folded):
        return "study list"
    if study.exclusion_group_id is None:
        return None
    if _listed(ExclusionGroupWorker.objects.filter(group_id=study.exclusion_group_id), folded):
        return "group list"
    took_part = Participant.objects.filter(
        study__exclusion_group_id=study.exclusion_group_id,
        platform=platform,
        platform_worker_id=worker_id,
        status=Participant.Status.COMPLETED,
    ).exclude(study=study)
    if took_part.exists():
        return "took part in a related study"
    return None


@dataclass
class ExclusionImport:
    """What an import did: ids added, ids already listed, and rows that could not be read."""

    added: int = 0
    already: int = 0
    errors: list[str] = field(default_factory=list)


def _csv_ids(text: str) -> tuple[list[tuple[int, str]], list[str]]:
    """``(line, id)`` pairs from a CSV with a header naming the id column, or one id per line."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return [], []
    rows = list(csv.reader(io.StringIO("\n".join(lines))))
    header = [cell.strip().lower() for cell in rows[0]]
    column = next((header.index(name) for name in ID_COLUMNS if name in header), None)
    if column is None:
        if len(rows[0]) == 1 and PLATFORM_ID_RE.match(rows[0][0].strip()):
            return [(n + 1, row[0] if row else "") for n, row in enumerate(rows)], []
        return [], [f"line 1: no id column (expected one of {', '.join(ID_COLUMNS)})"]
    return [(n + 2, row[column] if column < len(row) else "") for n, row in enumerate(rows[1:])], []


def exclusion_group_import(*, group: ExclusionGroup, csv_text: str, reason: str = "", platform: str = "") -> ExclusionImport:
    """Add the platform ids of a CSV (MTurk's or Prolific's export, or one id per line) to a group's list.

    Every id is validated (letters and digits) and normalised for ``platform`` (empty: MTurk-style
    ids are kept as given but matched case-insensitively). Nothing is written when any row is
    invalid: the summary lists the bad lines. Ids already listed are counted, not duplicated.
    """
    result = ExclusionImport()
    found, header_errors = _csv_ids(csv_text)
    result.errors.extend(header_errors)
    clean: dict[str, int] = {}
    for line, raw in found:
        value = platform_id_normalize(platform=platform, worker_id=raw)
        if not PLATFORM_ID_RE.match(value):
            result.errors.append(f"line {line}: {raw.strip()[:40]!r} is not a platform id (letters and digits)")
            continue
        clean.setdefault(value, line)
    if result.errors:
        return result
    with transaction.atomic():
        listed = {
            v.lower() for v in ExclusionGroupWorker.objects.filter(group=group).values_list("platform_worker_id", flat=True)
        }
        new = [value for value in clean if value.lower() not in listed]
        ExclusionGroupWorker.objects.bulk_create(
            [ExclusionGroupWorker(group=group, platform_worker_id=value, reason=reason[:200]) for value in new]
        )
    result.added = len(new)
    result.already = len(clean) - len(new)
    return result
