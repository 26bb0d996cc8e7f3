"""Declarative worker-exclusion rules, stored as JSON with a study and applied to arrays.

A study stores its rules as a JSON list, e.g.::

    [{"rule": "catch_accuracy_below", "threshold": 0.8},
     {"rule": "median_trial_time_below", "seconds": 1.0},
     {"rule": "total_time_below", "seconds": 60},
     {"rule": "straight_lining", "max_share_same_option": 0.9, "min_trials": 10}]

:func:`rules_from_json` turns that into rule objects (clear ``ValueError`` on an unknown rule
or a bad parameter); :func:`apply_exclusions` flags workers, vectorized over judgments with
``bincount``/``lexsort``, and reports a count per rule (workers and judgments, Zimmermann-style
exclusion table). A worker flagged by any rule is excluded entirely.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from studies.analysis.judgments import Judgments

__all__ = [
    "RULES",
    "CatchAccuracyBelow",
    "ExclusionReport",
    "ExclusionRule",
    "MedianTrialTimeBelow",
    "RuleCount",
    "StraightLining",
    "TotalTimeBelow",
    "apply_exclusions",
    "rules_from_json",
    "rules_to_json",
]


def _check_number(rule: str, name: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"rule {rule!r}: parameter {name!r} must be a number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"rule {rule!r}: parameter {name!r} = {value!r} is outside [{low}, {high}]")


def _check_int(rule: str, name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"rule {rule!r}: parameter {name!r} must be an integer >= {low}, got {value!r}")


def _need(j: Judgments, rule: str, *names: str) -> None:
    for name in names:
        if getattr(j, name) is None:
            raise ValueError(f"rule {rule!r} needs Judgments.{name}, which is missing")


class ExclusionRule:
    """Base of the rules: ``flag(j)`` returns a bool per worker code (True = exclude)."""

    name: ClassVar[str]

    def flag(self, j: Judgments) -> NDArray[np.bool_]:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        """The JSON form accepted by :func:`rules_from_json`."""
        return {"rule": self.name, **{f.name: getattr(self, f.name) for f in fields(self)}}

    def describe(self) -> str:
        """A label such as ``catch_accuracy_below(threshold=0.8)``."""
        params = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))
        return f"{self.name}({params})"


@dataclass(frozen=True)
class CatchAccuracyBelow(ExclusionRule):
    """Exclude a worker whose accuracy on catch (attention-check) trials is below ``threshold``.

    Workers with fewer than ``min_catch_trials`` catch trials are not judged by this rule.
    """

    threshold: float
    min_catch_trials: int = 1
    name: ClassVar[str] = "catch_accuracy_below"

    def __post_init__(self) -> None:
        _check_number(self.name, "threshold", self.threshold, 0.0, 1.0)
        _check_int(self.name, "min_catch_trials", self.min_catch_trials, 1)

    def flag(self, j: Judgments) -> NDArray[np.bool_]:
        _need(j, self.name, "correct")
        size = j.n_worker_codes
        catch_w = j.worker[j.is_catch]
        n = np.bincount(catch_w, minlength=size)
        k = np.bincount(catch_w, weights=j.correct[j.is_catch], minlength=size)
        judged = n >= self.min_catch_trials
        return judged & (k < self.threshold * np.maximum(n, 1))


def _per_worker_median(worker: NDArray[np.intp], x: NDArray[np.float64], size: int) -> NDArray:
    """Median of ``x`` (ms, rounded to whole ms) per worker code, ``nan`` where none, vectorized.

    One ``np.sort`` of the int64 key ``worker * 2**32 + round(x)`` orders by worker, then
    by value (much faster than ``lexsort`` on floats).
    """
    keep = ~np.isnan(x)
    w = worker[keep].astype(np.int64)
    ms = np.minimum(np.rint(x[keep]), 2**32 - 1).astype(np.int64)
    v_sorted = (np.sort((w << 32) | ms) & (2**32 - 1)).astype(np.float64)
    counts = np.bincount(w, minlength=size)
    starts = np.cumsum(counts) - counts
    has = counts > 0
    lo = starts[has] + (counts[has] - 1) // 2
    hi = starts[has] + counts[has] // 2
    median = np.full(size, np.nan)
    median[has] = (v_sorted[lo] + v_sorted[hi]) / 2.0
    return median


@dataclass(frozen=True)
class MedianTrialTimeBelow(ExclusionRule):
    """Exclude a worker whose median response time over all their trials is below ``seconds``.

    Times are compared at millisecond resolution.
    """

    seconds: float
    name: ClassVar[str] = "median_trial_time_below"

    def __post_init__(self) -> None:
        _check_number(self.name, "seconds", self.seconds, 0.0, 86_400.0)

    def flag(self, j: Judgments) -> NDArray[np.bool_]:
        _need(j, self.name, "response_ms")
        median = _per_worker_median(j.worker, j.response_ms, j.n_worker_codes)
        return np.nan_to_num(median, nan=np.inf) < self.seconds * 1000.0


@dataclass(frozen=True)
class TotalTimeBelow(ExclusionRule):
    """Exclude a worker whose summed response time over all their trials is below ``seconds``.

    The sum of trial times (not the session's wall-clock span) is used, so pauses between
    trials never rescue a worker who clicked through.
    """

    seconds: float
    name: ClassVar[str] = "total_time_below"

    def __post_init__(self) -> None:
        _check_number(self.name, "seconds", self.seconds, 0.0, 7 * 86_400.0)

    def flag(self, j: Judgments) -> NDArray[np.bool_]:
        _need(j, self.name, "response_ms")
        size = j.n_worker_codes
        rt = j.response_ms
        known = ~np.isnan(rt)
        total = np.bincount(j.worker[known], weights=rt[known], minlength=size)
        seen = np.bincount(j.worker[known], minlength=size) > 0
        return seen & (total < self.seconds * 1000.0)


@dataclass(frozen=True)
class StraightLining(ExclusionRule):
    """Exclude a worker who clicked the same screen position on too many trials.

    With at least ``min_trials`` trials of known position, a worker is excluded when the
    share of trials on their most-used position exceeds ``max_share_same_option``.
    """

    max_share_same_option: float
    min_trials: int = 10
    name: ClassVar[str] = "straight_lining"

    def __post_init__(self) -> None:
        _check_number(self.name, "max_share_same_option", self.max_share_same_option, 0.0, 1.0)
        _check_int(self.name, "min_trials", self.min_trials, 1)

    def flag(self, j: Judgments) -> NDArray[np.bool_]:
        _need(j, self.name, "option_position")
        size = j.n_worker_codes
        known = j.option_position >= 0
        if not known.any():
            return np.zeros(size, dtype=bool)
        pos = j.option_position[known]
        n_pos = int(pos.max()) + 1
        table = np.bincount(j.worker[known] * n_pos + pos, minlength=size * n_pos)
        table = table.reshape(size, n_pos)
        n = table.sum(axis=1)
        return (n >= self.min_trials) & (table.max(axis=1) > self.max_share_same_option * n)


RULES: dict[str, type[ExclusionRule]] = {
    cls.name: cls for cls in (CatchAccuracyBelow, MedianTrialTimeBelow, TotalTimeBelow, StraightLining)
}


def rules_from_json(spec: Sequence[Mapping[str, Any]] | None) -> list[ExclusionRule]:
    """Parse a study's JSON rule list.

    Args:
        spec: ``[{"rule": <name>, <param>: <value>, ...}, ...]`` (``None`` = no rules).

    Raises:
        ValueError: Naming the rule's position, for a non-list, a non-object entry, an
            unknown rule, an unknown or missing parameter, or a value of the wrong type or
            range.
    """
    if spec is None:
        return []
    if isinstance(spec, (str, bytes)) or not isinstance(spec, Sequence):
        raise ValueError(f"exclusion rules must be a JSON list, got {type(spec).__name__}")
    rules: list[ExclusionRule] = []
    for pos, entry in enumerate(spec):
        where = f"exclusion rule #{pos + 1}"
        if not isinstance(entry, Mapping) or "rule" not in entry:
            raise ValueError(f'{where}: expected an object with a "rule" key, got {entry!r}')
        name = entry["rule"]
        cls = RULES.get(name)
        if cls is None:
            raise ValueError(f"{where}: unknown rule {name!r}; known rules: {sorted(RULES)}")
        params = {k: v for k, v in entry.items() if k != "rule"}
        allowed = [f.name for f in fields(cls)]
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise ValueError(f"{where} ({name}): unknown parameter(s) {unknown}; allowed: {allowed}")
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [k for k in required if k not in params]
        if missing:
            raise ValueError(f"{where} ({name}): missing parameter(s) {missing}")
        try:
            rules.append(cls(**params))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    return rules


def rules_to_json(rules: Iterable[ExclusionRule]) -> list[dict[str, Any]]:
    """Inverse of :func:`rules_from_json`."""
    return [rule.to_json() for rule in rules]


@dataclass(frozen=True)
class RuleCount:
    """Workers flagged by one rule and their analysable (non-catch) judgments.

    Rules may overlap, so the per-rule counts can sum to more than the total excluded.
    """

    rule: str
    label: str
    n_workers: int
    n_judgments: int


@dataclass(frozen=True, eq=False)
class ExclusionReport:
    """Result of :func:`apply_exclusions`.

    Attributes:
        rules: The rules applied, in order.
        worker_flags: ``(n_rules, n_worker_codes)`` bool, True where the rule flags a worker
            (index with ``j.worker`` for per-judgment exclusion flags in exports).
        excluded_workers: Sorted codes of the workers flagged by any rule.
        per_rule: One :class:`RuleCount` per rule.
        n_workers_total, n_judgments_total: Workers and non-catch judgments before exclusion.
        n_workers_excluded, n_judgments_excluded: Removed by the union of the rules.
    """

    rules: tuple[ExclusionRule, ...]
    worker_flags: NDArray[np.bool_]
    excluded_workers: NDArray[np.intp]
    per_rule: tuple[RuleCount, ...]
    n_workers_total: int
    n_judgments_total: int
    n_workers_excluded: int
    n_judgments_excluded: int

    def judgment_excluded(self, j: Judgments) -> NDArray[np.bool_]:
        """Per-judgment flag: True where the judgment's worker is excluded."""
        if self.worker_flags.shape[1] == 0:
            return np.zeros(len(j), dtype=bool)
        return self.worker_flags.any(axis=0)[j.worker]


def apply_exclusions(j: Judgments, rules: Sequence[ExclusionRule]) -> ExclusionReport:
    """Flag workers by every rule and count, per rule and overall, what would be removed.

    Judgment counts are of analysable (non-catch) judgments; catch trials only feed rules.
    """
    size = j.n_worker_codes
    flags = np.zeros((len(rules), size), dtype=bool)
    for r, rule in enumerate(rules):
        flags[r] = rule.flag(j)
    analysable = ~j.is_catch
    judgments_per_worker = np.bincount(j.worker[analysable], minlength=size)
    present = np.bincount(j.worker, minlength=size) > 0
    per_rule = tuple(
        RuleCount(
            rule=rule.name,
            label=rule.describe(),
            n_workers=int((flags[r] & present).sum()),
            n_judgments=int(judgments_per_worker[flags[r]].sum()),
        )
        for r, rule in enumerate(rules)
    )
    any_flag = flags.any(axis=0) & present
    return ExclusionReport(
        rules=tuple(rules),
        worker_flags=flags,
        excluded_workers=np.flatnonzero(any_flag),
        per_rule=per_rule,
        n_workers_total=int(present.sum()),
        n_judgments_total=int(analysable.sum()),
        n_workers_excluded=int(any_flag.sum()),
        n_judgments_excluded=int(judgments_per_worker[any_flag].sum()),
    )
