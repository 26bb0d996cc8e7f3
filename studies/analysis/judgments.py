"""Columnar container of judgments (one numpy array per field), free of Django.

The database layer (a selector) fills a :class:`Judgments` from ``values_list`` columns;
the statistics and quality rules only ever see these arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["Judgments", "score_towards_model_a"]

TRUST_SCORES = (-2, -1, 0, 1, 2)


def score_towards_model_a(
    score_towards_robot_a: ArrayLike, robot_a_is_model_a: ArrayLike
) -> NDArray[np.int8]:
    """Undo the screen-side randomization of a trust answer.

    The worker answers on ``-2..+2`` where ``+2`` means "Robot A (the left/first robot) is
    clearly more reasonable". Robot A shows model A of the pair on some trials and model B
    on the others, so the score relative to model A is the answer where Robot A was model A
    and its negation elsewhere.

    Args:
        score_towards_robot_a: Per-judgment answer, ``-2..+2`` in favour of Robot A.
        robot_a_is_model_a: Per-judgment flag, True where Robot A displayed model A.

    Returns:
        Per-judgment score in favour of the pair's model A (int8).
    """
    s = np.asarray(score_towards_robot_a, dtype=np.int8)
    return np.where(np.asarray(robot_a_is_model_a, dtype=bool), s, -s).astype(np.int8)


def _as_codes(name: str, values: ArrayLike, n: int | None) -> NDArray[np.intp]:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"Judgments.{name} must be 1-d, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"Judgments.{name} must hold integer codes, got dtype {arr.dtype}")
    arr = arr.astype(np.intp, copy=False)
    if n is not None and arr.size != n:
        raise ValueError(f"Judgments.{name} has {arr.size} elements, expected {n}")
    if arr.size and arr.min() < 0:
        raise ValueError(f"Judgments.{name} holds a negative code at index {int(arr.argmin())}")
    return arr


@dataclass(frozen=True, eq=False)
class Judgments:
    """One element per judgment in every array; optional fields may be ``None``.

    Attributes:
        method: Method code, an index into ``method_names``.
        worker: Worker code (non-negative int; e.g. the participant's database id).
        item: Item code (non-negative int). Items may be shared across methods (the same
            image-category pair under each method) or not; the bootstrap handles both.
        method_names: Display name of each method code.
        correct: Class-discrimination correctness (bool). In trust studies it may still be
            given for catch trials only (other values are then ignored).
        score_towards_a: Trust answer already related to the pair's model A, ``-2..+2``
            (``+2``: model A clearly more reasonable); see :func:`score_towards_model_a`.
            The tables report the score towards model B, ``-score_towards_a``.
        answer: Identity of the option chosen (e.g. category code), for the plurality vote
            and Krippendorff's alpha; ``-1`` where unknown.
        is_catch: Attention-check trial (used by quality rules, never in the statistics).
        is_simulated: Judgment made by a simulated observer.
        response_ms: Response time of the trial in milliseconds.
        option_position: Screen position of the option clicked (0 = first), for
            straight-lining; ``-1`` where unknown.
        arm: Between-subject arm of the judgment's worker, an index into ``arm_names``;
            ``-1`` for a worker without an arm. ``None``: the study has no arms.
        arm_names: Name of each arm code (empty when ``arm`` is ``None``).
        item_right_option: The right answer of the judgment's item (``Item.correct_option``, an
            index into its options; ``-1`` for an item without one), an item-level fact that a
            design's analysis may split on (e.g. distinction: ``0`` = the top-1 prediction is right).
    """

    method: NDArray[np.intp]
    worker: NDArray[np.intp]
    item: NDArray[np.intp]
    method_names: tuple[str, ...]
    correct: NDArray[np.bool_] | None = None
    score_towards_a: NDArray[np.int8] | None = None
    answer: NDArray[np.intp] | None = None
    is_catch: NDArray[np.bool_] = field(default=None)  # type: ignore[assignment]
    is_simulated: NDArray[np.bool_] = field(default=None)  # type: ignore[assignment]
    response_ms: NDArray[np.float64] | None = None
    option_position: NDArray[np.intp] | None = None
    arm: NDArray[np.intp] | None = None
    arm_names: tuple[str, ...] = ()
    item_right_option: NDArray[np.intp] | None = None

    def __post_init__(self) -> None:
        put = object.__setattr__
        method = _as_codes("method", self.method, None)
        n = method.size
        put(self, "method", method)
        put(self, "worker", _as_codes("worker", self.worker, n))
        put(self, "item", _as_codes("item", self.item, n))
        names = tuple(str(m) for m in self.method_names)
        if len(set(names)) != len(names):
            raise ValueError(f"Judgments.method_names are not unique: {names}")
        put(self, "method_names", names)
        if n and method.max() >= len(names):
            bad = int(np.argmax(method >= len(names)))
            raise ValueError(
                f"Judgments.method[{bad}] = {int(method[bad])} has no name (only {len(names)} method_names)"
            )
        for name in ("is_catch", "is_simulated"):
            value = getattr(self, name)
            put(self, name, self._flags(name, value, n))
        if self.correct is not None:
            put(self, "correct", self._flags("correct", self.correct, n))
        if self.score_towards_a is not None:
            s = np.asarray(self.score_towards_a)
            self._check_len("score_towards_a", s, n)
            if s.size and not np.issubdtype(s.dtype, np.integer):
                raise ValueError(f"Judgments.score_towards_a must be integers, got {s.dtype}")
            if s.size and (s.min() < -2 or s.max() > 2):
                bad = int(np.argmax((s < -2) | (s > 2)))
                raise ValueError(f"Judgments.score_towards_a[{bad}] = {int(s[bad])} is outside -2..+2")
            put(self, "score_towards_a", s.astype(np.int8, copy=False))
        for name in ("answer", "option_position", "item_right_option"):
            value = getattr(self, name)
            if value is not None:
                arr = np.asarray(value)
                self._check_len(name, arr, n)
                if arr.size and not np.issubdtype(arr.dtype, np.integer):
                    raise ValueError(f"Judgments.{name} must be integers, got {arr.dtype}")
                if arr.size and arr.min() < -1:
                    raise ValueError(f"Judgments.{name} uses codes below -1 (-1 = unknown)")
                put(self, name, arr.astype(np.intp, copy=False))
        if self.response_ms is not None:
            rt = np.asarray(self.response_ms, dtype=np.float64)
            self._check_len("response_ms", rt, n)
            if rt.size and np.nanmin(rt) < 0:
                raise ValueError("Judgments.response_ms holds a negative time")
            put(self, "response_ms", rt)
        self._check_arms(put, n)

    def _check_arms(self, put: Any, n: int) -> None:
        arm_names = tuple(str(a) for a in self.arm_names)
        if len(set(arm_names)) != len(arm_names):
            raise ValueError(f"Judgments.arm_names are not unique: {arm_names}")
        put(self, "arm_names", arm_names)
        if self.arm is None:
            if arm_names:
                raise ValueError("Judgments.arm_names given without Judgments.arm")
            return
        arm = np.asarray(self.arm)
        self._check_len("arm", arm, n)
        if arm.size and not np.issubdtype(arm.dtype, np.integer):
            raise ValueError(f"Judgments.arm must hold integer codes, got dtype {arm.dtype}")
        if arm.size and (arm.min() < -1 or arm.max() >= len(arm_names)):
            bad = int(np.argmax((arm < -1) | (arm >= len(arm_names))))
            raise ValueError(f"Judgments.arm[{bad}] = {int(arm[bad])} is neither -1 (no arm) nor the code "
                             f"of one of the {len(arm_names)} arm_names")  # fmt: skip
        put(self, "arm", arm.astype(np.intp, copy=False))

    @staticmethod
    def _check_len(name: str, arr: NDArray, n: int) -> None:
        if arr.ndim != 1 or arr.size != n:
            raise ValueError(f"Judgments.{name} has shape {arr.shape}, expected ({n},)")

    @classmethod
    def _flags(cls, name: str, value: ArrayLike | None, n: int) -> NDArray[np.bool_]:
        if value is None:
            return np.zeros(n, dtype=bool)
        arr = np.asarray(value)
        cls._check_len(name, arr, n)
        if arr.size and arr.dtype != bool and not np.isin(arr, (0, 1)).all():
            raise ValueError(f"Judgments.{name} must be boolean (0/1)")
        return arr.astype(bool, copy=False)

    def __len__(self) -> int:
        return int(self.method.size)

    @property
    def n_worker_codes(self) -> int:
        """One more than the largest worker code (size of per-worker lookup tables)."""
        return int(self.worker.max()) + 1 if len(self) else 0

    def subset(self, mask: ArrayLike) -> Judgments:
        """The judgments where ``mask`` is True (boolean mask or index array)."""
        sel = np.asarray(mask)
        kwargs = {}
        for f in fields(self):
            value = getattr(self, f.name)
            names = f.name in ("method_names", "arm_names")
            kwargs[f.name] = value if names or value is None else value[sel]
        return Judgments(**kwargs)

    @classmethod
    def from_labels(
        cls,
        *,
        method: Sequence[str] | ArrayLike,
        worker: ArrayLike,
        item: ArrayLike,
        method_order: Sequence[str] | None = None,
        **columns: ArrayLike | None,
    ) -> Judgments:
        """Build from label columns (strings or any sortable values) by factorizing them.

        Args:
            method: Per-judgment method label.
            worker: Per-judgment worker label (e.g. hashed id).
            item: Per-judgment item label.
            method_order: Row order of methods in the tables (default: sorted labels);
                it may name methods without judgments.
            **columns: The optional array fields of :class:`Judgments`.

        Raises:
            ValueError: If a method label is missing from ``method_order``.
        """
        m = np.asarray(method)
        names = tuple(method_order) if method_order is not None else tuple(np.unique(m).tolist())
        lookup = {name: code for code, name in enumerate(names)}
        missing = sorted(set(np.unique(m).tolist()) - set(lookup))
        if missing:
            raise ValueError(f"method labels not in method_order: {missing}")
        m_codes = np.array([lookup[x] for x in np.unique(m).tolist()], dtype=np.intp)
        m_idx = m_codes[np.unique(m, return_inverse=True)[1]] if m.size else m.astype(np.intp)
        w_idx = np.unique(np.asarray(worker), return_inverse=True)[1]
        i_idx = np.unique(np.asarray(item), return_inverse=True)[1]
        return cls(method=m_idx, worker=w_idx, item=i_idx, method_names=names, **columns)
