"""Load a study's judgments from the database into the analysis core's columnar arrays.

One SQL statement reads every answered, non-practice assignment of a study as fixed-width
integer columns; on PostgreSQL (psycopg2) it is streamed with ``COPY ... TO STDOUT (FORMAT
binary)`` and decoded with one ``numpy.frombuffer`` over a big-endian record dtype, so no
Python object is created per judgment (about 0.5 s for 1,000,000 judgments). Other databases
(SQLite in the demo) use the same statement through ``fetchall``. Items and participants,
which are few, are read with ``values_list`` and joined by ``searchsorted``.

Codes handed to :class:`studies.analysis.Judgments`:

* ``worker``: index of the participant in ``StudyJudgments.participant_ids`` (sorted ids).
* ``item``: the *stimulus unit* - the (image, target class) pair - shared by every method
  that explains it, so the two-way cluster bootstrap resamples image-category pairs across
  methods (paired comparisons) as the paper's design intends. ``StudyJudgments.item_id``
  keeps the database item of each judgment.
* ``method``: index into ``method_names`` (the study's methods first, in their configured
  order, then any other method found on main items). Catch items take their method's code
  when it is known and code 0 otherwise: catch trials never enter the statistics.
* ``answer``, ``option_position`` (and a rating design's ``score_towards_a``): the answer
  columns the study's design makes of the stored answer (``Design.judgment_answers``; a choice:
  the option index chosen and its screen position in ``option_order``; trust: ``score + 2`` and
  the scale position ``score towards Robot A + 2``), the position for the straight-lining rule.
  Which responses hold a usable answer is the design's rule too (``Design.judgments_usable``).
* ``response_ms``: the client-measured time, else ``answered_at - shown_at`` on the server.
* ``arm`` (a study with arms, or a participant holding one): the participant's
  ``Participant.arm`` as an index into ``arm_names`` (the study's arms in their configured order,
  then any other arm a participant holds), ``-1`` for a participant without an arm. It comes with
  the participants' query, so the COPY and the ``fetchall`` transports give the same codes.
* ``item_right_option``: the judgment's item's ``correct_option`` (``-1`` where it has none), from
  the items' query (the same on both transports); a design's analysis may split on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from django.db import connection, transaction
from numpy.typing import NDArray

from studies.analysis import Judgments
from studies.designs import design_for
from studies.lib.arms import arm_names as configured_arm_names
from studies.models import Item, Participant, Study

__all__ = ["StudyJudgments", "study_judgments_load", "study_judgment_columns"]

# (name, SQL type, numpy big-endian type) of each column of the judgment query, in order.
_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("participant_id", "bigint", ">i8"),
    ("item_id", "bigint", ">i8"),
    ("correct", "smallint", ">i2"),  # 1 / 0, -1 = NULL
    ("score_model_a", "smallint", ">i2"),  # -2..+2, -9 = NULL
    ("chosen_option", "smallint", ">i2"),  # index into item.options, -1 = NULL
    ("position", "smallint", ">i2"),  # screen position of the chosen option, -1 = unknown
    ("model_a_shown_left", "smallint", ">i2"),  # 1 unless explicitly false
    ("response_ms", "integer", ">i4"),  # -1 = unknown
    ("answered_ms", "bigint", ">i8"),  # epoch milliseconds, -1 = unknown
)
_MAX_POSITIONS = 6  # option_order entries inspected for the screen position
# Per-query PostgreSQL settings: the hash join of ~1M responses with their assignments needs
# ~110 MB to stay in memory (the 4 MB default spills to disk in 16 batches); JIT compilation
# costs more than it saves on this one-pass query.
_PG_SETTINGS = ("SET LOCAL work_mem = '128MB'", "SET LOCAL jit = off")
_NULL_SCORE = -9


def _sql(vendor: str) -> str:
    """The judgment query for ``vendor`` with one ``%s`` placeholder (the study id)."""
    if vendor == "postgresql":
        element = "(a.option_order ->> {k})::int"
        # date_part gives double precision (EXTRACT gives numeric, several times slower)
        server_ms = "date_part('epoch', a.answered_at - a.shown_at) * 1000"
        epoch_ms = "date_part('epoch', COALESCE(a.answered_at, r.created_at)) * 1000"
    else:  # SQLite (datetimes stored as ISO text in UTC)
        element = "CAST(json_extract(a.option_order, '$[{k}]') AS integer)"
        server_ms = "(julianday(a.answered_at) - julianday(a.shown_at)) * 86400000"
        epoch_ms = "(julianday(COALESCE(a.answered_at, r.created_at)) - 2440587.5) * 86400000"
    position = "CASE " + " ".join(
        f"WHEN {element.format(k=k)} = r.chosen_option THEN {k}" for k in range(_MAX_POSITIONS)
    ) + " ELSE -1 END"
    exprs = {
        "participant_id": "a.participant_id",
        "item_id": "a.item_id",
        "correct": "COALESCE(CAST(r.correct AS integer), -1)",
        "score_model_a": f"COALESCE(r.score_model_a, {_NULL_SCORE})",
        "chosen_option": "COALESCE(r.chosen_option, -1)",
        "position": position,
        "model_a_shown_left": "CASE WHEN a.model_a_shown_left IS NULL OR a.model_a_shown_left THEN 1 ELSE 0 END",
        "response_ms": f"COALESCE(r.client_response_ms, ROUND({server_ms}), -1)",
        "answered_ms": f"COALESCE(ROUND({epoch_ms}), -1)",
    }
    select = ",\n       ".join(f"CAST({exprs[name]} AS {sql_type})" for name, sql_type, _ in _COLUMNS)
    return (
        f"SELECT {select}\n"
        "FROM studies_response r\n"
        "JOIN studies_assignment a ON a.id = r.assignment_id\n"
        "JOIN studies_item i ON i.id = a.item_id\n"
        "WHERE i.study_id = %s AND i.role <> 'practice'\n"
        "ORDER BY r.id"
    )


def _copy_binary(study_id: int) -> dict[str, NDArray[np.int64]] | None:
    """Run the query through PostgreSQL's binary COPY; ``None`` when the driver can't."""
    import io

    with transaction.atomic(), connection.cursor() as cursor:
        if not hasattr(cursor.cursor, "copy_expert"):  # psycopg 3 or another driver
            return None
        for statement in _PG_SETTINGS:
            cursor.execute(statement)
        query = _sql("postgresql") % int(study_id)
        buffer = io.BytesIO()
        cursor.cursor.copy_expert(f"COPY ({query}) TO STDOUT WITH (FORMAT binary)", buffer)
    data = buffer.getbuffer()
    # Header: 11-byte signature, int32 flags, int32 extension length (+ extension).
    if bytes(data[:11]) != b"PGCOPY\n\xff\r\n\x00":
        raise RuntimeError("unexpected COPY BINARY signature from PostgreSQL")
    header = 19 + int.from_bytes(data[15:19], "big")
    fields = [("n_fields", ">i2")]
    for name, _, np_type in _COLUMNS:
        fields += [(f"{name}_len", ">i4"), (name, np_type)]
    record = np.dtype(fields)
    body = len(data) - header - 2  # trailer: int16 -1
    if body % record.itemsize:
        raise RuntimeError(f"COPY BINARY body of {body} bytes is not a multiple of {record.itemsize}")
    rows = np.frombuffer(data, dtype=record, count=body // record.itemsize, offset=header)
    if rows.size and (rows["n_fields"] != len(_COLUMNS)).any():
        raise RuntimeError("COPY BINARY returned an unexpected number of fields")
    for name, _, np_type in _COLUMNS:
        if rows.size and (rows[f"{name}_len"] != np.dtype(np_type).itemsize).any():
            raise RuntimeError(f"COPY BINARY column {name} holds NULLs or has an unexpected width")
    return {name: rows[name].astype(np.int64) for name, _, _ in _COLUMNS}


def _fetch_all(study_id: int) -> dict[str, NDArray[np.int64]]:
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            for statement in _PG_SETTINGS:
                cursor.execute(statement)
        cursor.execute(_sql(connection.vendor), [int(study_id)])
        table = np.array(cursor.fetchall(), dtype=np.int64).reshape(-1, len(_COLUMNS))
    return {name: table[:, k] for k, (name, _, _) in enumerate(_COLUMNS)}


def study_judgment_columns(*, study_id: int, method: Literal["auto", "copy", "fetch"] = "auto") -> dict[str, NDArray]:
    """The raw integer columns of a study's answered, non-practice judgments (by response id).

    Args:
        study_id: The study's primary key.
        method: ``"copy"`` (PostgreSQL binary COPY), ``"fetch"`` (``fetchall``, any database)
            or ``"auto"`` (COPY where available).

    Returns:
        One int64 array per column: participant_id, item_id, correct (-1 NULL),
        score_model_a (-9 NULL), chosen_option (-1 NULL), position (-1 unknown),
        model_a_shown_left (0/1), response_ms (-1 unknown), answered_ms (epoch ms, -1 unknown).
    """
    if method not in ("auto", "copy", "fetch"):
        raise ValueError(f"method must be 'auto', 'copy' or 'fetch', got {method!r}")
    if method != "fetch" and connection.vendor == "postgresql":
        columns = _copy_binary(study_id)
        if columns is not None:
            return columns
    if method == "copy":
        raise RuntimeError("binary COPY needs PostgreSQL with psycopg2")
    return _fetch_all(study_id)


@dataclass(frozen=True, eq=False)
class StudyJudgments:
    """A study's judgments as arrays, plus what maps codes back to database rows.

    Attributes:
        judgments: The analysis core's container (catch trials flagged, practice left out).
        design: The study's design (``Study.kind``, a registered design's name).
        participant_ids: Participant primary key of each worker code.
        participant_id: Per-judgment participant primary key.
        item_id: Per-judgment item primary key.
        answered_ms: Per-judgment answer time, epoch milliseconds (-1 unknown).
        n_options: Options per question (largest over main items; 2 if none).
        n_dropped: Responses without a usable answer (left out of ``judgments``).
    """

    judgments: Judgments
    design: str
    participant_ids: NDArray[np.int64]
    participant_id: NDArray[np.int64]
    item_id: NDArray[np.int64]
    answered_ms: NDArray[np.int64]
    n_options: int
    n_dropped: int


def study_judgments_load(*, study: Study, method: Literal["auto", "copy", "fetch"] = "auto") -> StudyJudgments:
    """Read every answered, non-practice judgment of ``study`` into arrays (three queries).

    Responses without a usable answer (the design's rule, ``Design.judgments_usable``; a
    choice: ``correct`` NULL; trust main trials: score NULL) are dropped and counted in
    ``n_dropped``.

    Args:
        study: The study.
        method: Transport of the big query, see :func:`study_judgment_columns`.
    """
    design = design_for(study)
    cols = study_judgment_columns(study_id=study.pk, method=method)

    items = list(
        Item.objects.filter(study_id=study.pk)
        .exclude(role=Item.Role.PRACTICE)
        .order_by("id")
        .values_list("id", "method", "role", "image_id", "target_class", "options", "correct_option")
    )
    names = [str(m) for m in (study.methods or [])]
    for _, item_method, role, *_ in items:
        if role == Item.Role.MAIN and item_method not in names:
            names.append(item_method)
    if not names:
        names = ["(none)"]
    code_of = {name: code for code, name in enumerate(names)}
    item_ids = np.array([row[0] for row in items], dtype=np.int64)
    item_method = np.array([code_of.get(row[1], 0) for row in items], dtype=np.intp)
    item_catch = np.array([row[2] == Item.Role.CATCH for row in items], dtype=bool)
    unit_keys = sorted({(row[3], row[4]) for row in items})  # code order = (image id, target class)
    unit_code = {key: code for code, key in enumerate(unit_keys)}
    item_unit = np.array([unit_code[(row[3], row[4])] for row in items], dtype=np.intp)
    item_right = np.array([-1 if row[6] is None else row[6] for row in items], dtype=np.intp)
    n_options = max([len(row[5] or []) for row in items if row[2] == Item.Role.MAIN] or [2])

    participants = list(Participant.objects.filter(study_id=study.pk).order_by("id")
                        .values_list("id", "is_simulated", "arm"))  # fmt: skip
    participant_ids = np.array([p[0] for p in participants], dtype=np.int64)
    participant_sim = np.array([p[1] for p in participants], dtype=bool)
    arms = list(configured_arm_names(study.arms))
    arms += sorted({p[2] for p in participants if p[2]} - set(arms))
    arm_code = {name: code for code, name in enumerate(arms)}
    participant_arm = np.array([arm_code.get(p[2], -1) for p in participants], dtype=np.intp)

    it = np.searchsorted(item_ids, cols["item_id"])
    wk = np.searchsorted(participant_ids, cols["participant_id"])
    is_catch = item_catch[it] if it.size else np.zeros(0, dtype=bool)
    correct_raw = cols["correct"]
    score_raw = cols["score_model_a"]
    usable = design.judgments_usable(correct_known=correct_raw >= 0, score_known=score_raw != _NULL_SCORE,
                                     is_catch=is_catch)
    keep = np.flatnonzero(usable)
    it, wk, is_catch = it[keep], wk[keep], is_catch[keep]
    correct = correct_raw[keep] == 1
    chosen = cols["chosen_option"][keep]
    response_ms = cols["response_ms"][keep].astype(np.float64)
    response_ms[response_ms < 0] = np.nan

    common = {
        "method": item_method[it],
        "worker": wk,
        "item": item_unit[it],
        "method_names": tuple(names),
        "correct": correct,
        "is_catch": is_catch,
        "is_simulated": participant_sim[wk] if wk.size else np.zeros(0, dtype=bool),
        "response_ms": response_ms,
        "item_right_option": item_right[it] if it.size else np.zeros(0, dtype=np.intp),
    }
    if arms:
        common["arm"] = participant_arm[wk] if wk.size else np.zeros(0, dtype=np.intp)
        common["arm_names"] = tuple(arms)
    score_a = score_raw[keep]
    answers = design.judgment_answers(
        chosen_option=chosen,
        position=cols["position"][keep],
        score_model_a=score_a,
        score_known=score_a != _NULL_SCORE,
        model_a_shown_left=cols["model_a_shown_left"][keep] == 1,
    )
    return StudyJudgments(
        judgments=Judgments(**answers, **common),
        design=design.name,
        participant_ids=participant_ids,
        participant_id=cols["participant_id"][keep],
        item_id=cols["item_id"][keep],
        answered_ms=cols["answered_ms"][keep],
        n_options=int(n_options),
        n_dropped=int(correct_raw.size - keep.size),
    )
