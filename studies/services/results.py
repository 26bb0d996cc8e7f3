"""A study's results: the analysis core run on the database's judgments, cached briefly.

The results page, the plots, the summary export and the reproducibility pack all read one
:class:`StudyResults`, computed by :func:`study_results_compute` from
:func:`studies.selectors.judgments.study_judgments_load` and the study design's analysis
(``Design.analyse``: the design's table of :mod:`studies.analysis` on every worker and without
the workers the study's exclusion rules flag). A study with between-subject arms gets the same
analysis on each arm's judgments too (:func:`studies.analysis.arm_judgments`: the design's own
``analyse`` on the arm's participants only, whatever the design). It is live: the cache
key holds the number of responses and the newest response id, so a new judgment gives a new
key, and entries expire after ``RESULTS_CACHE_SECONDS`` anyway.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.core.cache import cache
from django.db.models import Count, Max

from studies.analysis import (
    DiscriminationAnalysis,
    Judgments,
    PairwiseRow,
    StudyAnalysis,
    TrustAnalysis,
    arm_judgments,
    rows_as_dicts,
    rules_from_json,
)
from studies.designs import design_for
from studies.models import EvaluationResult, Response, Study
from studies.selectors.judgments import StudyJudgments, study_judgments_load

__all__ = [
    "RESULTS_CACHE_SECONDS",
    "ArmResults",
    "EvaluationRow",
    "StudyResults",
    "evaluations_beside_human",
    "study_evaluations_list",
    "study_results_compute",
    "study_results_get",
    "summary_rows",
    "pairwise_rows",
]

RESULTS_CACHE_SECONDS = 30
DEFAULT_N_BOOT = 1000
TIMELINE_BINS = 60


@dataclass(frozen=True)
class EvaluationRow:
    """One automatic metric of one method: mean and interval from ``EvaluationResult.summary``."""

    method: str
    metric: str
    mean: float | None
    low: float | None
    high: float | None
    n: int


@dataclass(frozen=True, eq=False)
class ArmResults:
    """The study's analysis on one between-subject arm's participants.

    Attributes:
        name: The arm (``Study.arms``; ``Participant.arm``).
        analysis: The design's tables on the arm's judgments, without and with the exclusions.
        method_names: Row order of the arm's tables (the methods its participants judged).
        n_judgments: Main judgments analysed in the arm.
        n_workers: Participants of the arm with at least one main judgment analysed.
    """

    name: str
    analysis: StudyAnalysis
    method_names: tuple[str, ...]
    n_judgments: int
    n_workers: int

    def table(self, *, with_exclusions: bool) -> DiscriminationAnalysis | TrustAnalysis:
        """The arm's analysis with the study's exclusions applied, or on every worker."""
        return self.analysis.with_exclusions if with_exclusions else self.analysis.without_exclusions


@dataclass(frozen=True, eq=False)
class StudyResults:
    """Everything the results page shows for one study and one simulated-observer setting.

    Attributes:
        study_id: The study.
        design: The study's design (``Study.kind``).
        kind: The design's analysis (``Design.analysis_name``: ``discrimination``, ``trust``), the
            ``kind`` column of the summary and pairwise exports.
        include_simulated: Whether simulated observers' judgments were analysed.
        analysis: The tables without and with the study's exclusions, and the exclusion report.
        method_names: Row order of the tables.
        n_judgments: Main judgments analysed (catch trials excluded).
        n_catch: Catch-trial judgments (they only feed the exclusion rules).
        n_simulated: Main judgments by simulated observers in the loaded data (0 when
            ``include_simulated`` is False and they were left out).
        n_simulated_available: Main judgments by simulated observers in the study.
        n_workers: Distinct participants with at least one judgment analysed.
        n_dropped: Responses without a usable answer.
        timeline_edges_ms, timeline_counts: Main judgments per time bin (epoch ms edges).
        load_seconds, analysis_seconds: Time spent loading and computing.
        n_boot: Bootstrap replicates.
        arms: The same analysis per between-subject arm, in the study's arm order (``()`` for a
            study without arms).
    """

    study_id: int
    design: str
    kind: str
    include_simulated: bool
    analysis: StudyAnalysis
    method_names: tuple[str, ...]
    n_judgments: int
    n_catch: int
    n_simulated: int
    n_simulated_available: int
    n_workers: int
    n_dropped: int
    timeline_edges_ms: tuple[int, ...]
    timeline_counts: tuple[int, ...]
    load_seconds: float
    analysis_seconds: float
    n_boot: int
    arms: tuple[ArmResults, ...] = ()

    def table(self, *, with_exclusions: bool) -> DiscriminationAnalysis | TrustAnalysis:
        """The analysis with the study's exclusions applied, or on every worker."""
        return self.analysis.with_exclusions if with_exclusions else self.analysis.without_exclusions


def _timeline(answered_ms: np.ndarray, keep: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
    times = answered_ms[keep & (answered_ms >= 0)]
    if times.size == 0:
        return (), ()
    low, high = int(times.min()), int(times.max())
    if high == low:
        high = low + 1
    counts, edges = np.histogram(times, bins=TIMELINE_BINS, range=(low, high))
    return tuple(int(e) for e in edges), tuple(int(c) for c in counts)


def study_results_compute(
    *,
    study: Study,
    include_simulated: bool = True,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int | None = None,
    loaded: StudyJudgments | None = None,
) -> StudyResults:
    """Load the study's judgments and compute both tables (with and without exclusions).

    Args:
        study: The study.
        include_simulated: Analyse simulated observers' judgments too (they are counted and
            labelled either way).
        n_boot: Cluster-bootstrap replicates.
        seed: Bootstrap seed; default the study's seed, so the page is reproducible.
        loaded: Judgments already loaded (skips the database).

    Raises:
        ValueError: If the study's ``exclusion_rules`` are malformed (message names the rule).
    """
    start = time.perf_counter()
    data = loaded if loaded is not None else study_judgments_load(study=study)
    load_seconds = time.perf_counter() - start
    rules = rules_from_json(study.exclusion_rules or [])
    j = data.judgments
    main = ~j.is_catch
    n_simulated_available = int((main & j.is_simulated).sum())
    keep = np.ones(len(j), dtype=bool) if include_simulated else ~j.is_simulated
    j_used = j if include_simulated else j.subset(keep)
    start = time.perf_counter()
    design = design_for(data.design)
    options = {"n_options": data.n_options, "n_boot": n_boot, "seed": study.seed % 2**32 if seed is None else seed}
    analysis = design.analyse(j_used, rules, **options)
    arms = tuple(_arm_results(name, part, design.analyse(part, rules, **options))
                 for name, part in arm_judgments(j_used))  # fmt: skip
    analysis_seconds = time.perf_counter() - start
    edges, counts = _timeline(data.answered_ms, keep & main)
    used_main = ~j_used.is_catch
    return StudyResults(
        study_id=study.pk,
        design=design.name,
        kind=design.analysis_name,
        include_simulated=include_simulated,
        analysis=analysis,
        method_names=j.method_names,
        n_judgments=int(used_main.sum()),
        n_catch=int(j_used.is_catch.sum()),
        n_simulated=int((used_main & j_used.is_simulated).sum()),
        n_simulated_available=n_simulated_available,
        n_workers=int(np.unique(j_used.worker[used_main]).size),
        n_dropped=data.n_dropped,
        timeline_edges_ms=edges,
        timeline_counts=counts,
        load_seconds=load_seconds,
        analysis_seconds=analysis_seconds,
        n_boot=n_boot,
        arms=arms,
    )


def _arm_results(name: str, part: Judgments, analysis: StudyAnalysis) -> ArmResults:
    main = ~part.is_catch
    return ArmResults(name=name, analysis=analysis, method_names=part.method_names, n_judgments=int(main.sum()),
                      n_workers=int(np.unique(part.worker[main]).size))  # fmt: skip


def _fingerprint(study: Study) -> str:
    agg = Response.objects.filter(assignment__item__study_id=study.pk).aggregate(n=Count("id"), last=Max("id"))
    rules = hashlib.sha256(json.dumps(study.exclusion_rules, sort_keys=True).encode()).hexdigest()[:12]
    return f"{agg['n']}-{agg['last']}-{rules}-{study.seed}"


def study_results_get(*, study: Study, include_simulated: bool = True, n_boot: int = DEFAULT_N_BOOT) -> StudyResults:
    """:func:`study_results_compute`, cached for ``RESULTS_CACHE_SECONDS``.

    The key holds the response count and newest response id (one aggregate query), the
    exclusion rules and the seed, so a new answer or a changed rule recomputes at once.
    """
    key = f"xaistudy:results:v3:{study.pk}:{int(include_simulated)}:{n_boot}:{_fingerprint(study)}"
    results = cache.get(key)
    if results is None:
        results = study_results_compute(study=study, include_simulated=include_simulated, n_boot=n_boot)
        cache.set(key, results, RESULTS_CACHE_SECONDS)
    return results


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def study_evaluations_list(*, study: Study) -> list[EvaluationRow]:
    """The automatic-evaluation rows of a study (one query), ordered by metric then method."""
    rows = []
    for method, metric, values, summary in (
        EvaluationResult.objects.filter(study_id=study.pk).order_by("metric", "method")
        .values_list("method", "metric", "values", "summary")
    ):
        summary = summary or {}
        rows.append(
            EvaluationRow(
                method=method,
                metric=metric,
                mean=_finite(summary.get("mean")),
                low=_finite(summary.get("lo", summary.get("low"))),
                high=_finite(summary.get("hi", summary.get("high"))),
                n=int(summary.get("n", sum(v is not None for v in (values or [])))),
            )
        )
    return rows


def evaluations_beside_human(
    *, results: StudyResults, evaluations: list[EvaluationRow], with_exclusions: bool = True
) -> tuple[list[str], list[dict[str, Any]]]:
    """Automatic metrics per method next to the human score (a pivot for the results page).

    Returns:
        ``(metrics, rows)``: the metric names (sorted) and one row per method, in the table's
        order then any method only the evaluation knows, with ``method``, ``human`` (the design's
        score, ``Design.human_score``: accuracy, mean trust score), ``human_low``/``human_high`` (bootstrap interval) and
        ``metrics``: ``{metric: EvaluationRow}``.
    """
    metrics = sorted({e.metric for e in evaluations})
    by_method: dict[str, dict[str, EvaluationRow]] = {}
    for e in evaluations:
        by_method.setdefault(e.method, {})[e.metric] = e
    design = design_for(results.design)
    rows: list[dict[str, Any]] = []
    for row in results.table(with_exclusions=with_exclusions).rows:
        human = design.human_score(row)
        rows.append({"method": row.method, "human": _finite(human), "human_low": _finite(row.boot_low),
                     "human_high": _finite(row.boot_high), "metrics": by_method.pop(row.method, {})})  # fmt: skip
    for method in sorted(by_method):
        rows.append({"method": method, "human": None, "human_low": None, "human_high": None,
                     "metrics": by_method[method]})  # fmt: skip
    return metrics, rows


def summary_rows(results: StudyResults) -> list[dict[str, Any]]:
    """One dict per (arm, analysis variant, method) with every statistic (the summary CSV).

    The whole study's rows come first (``arm`` empty), then each arm's (``results.arms``).
    Keys: ``analysis`` (``with_exclusions`` / ``without_exclusions``), ``arm``, ``kind``,
    ``n_excluded_workers``, ``n_boot``, ``confidence``, ``include_simulated``, then every
    field of the design's analysis row (:class:`~studies.analysis.DiscriminationRow`,
    :class:`~studies.analysis.TrustRow`, ...).
    """
    out: list[dict[str, Any]] = []
    parts = [("", results.analysis)] + [(arm.name, arm.analysis) for arm in results.arms]
    for arm, label, table in ((arm, label, table) for arm, analysis in parts
                              for label, table in (("with_exclusions", analysis.with_exclusions),
                                                   ("without_exclusions", analysis.without_exclusions))):  # fmt: skip
        for row in rows_as_dicts(table.rows):
            out.append({
                "analysis": label,
                "arm": arm,
                "kind": results.kind,
                "include_simulated": results.include_simulated,
                "n_excluded_workers": table.n_excluded_workers,
                "n_boot": table.n_boot,
                "confidence": table.confidence,
                **row,
            })  # fmt: skip
    return out


def pairwise_rows(results: StudyResults) -> list[dict[str, Any]]:
    """One dict per (analysis variant, pair of methods) with the Holm-adjusted p-values."""
    out: list[dict[str, Any]] = []
    for label, table in (("with_exclusions", results.analysis.with_exclusions),
                         ("without_exclusions", results.analysis.without_exclusions)):  # fmt: skip
        pairs: tuple[PairwiseRow, ...] = table.pairs
        out.extend({"analysis": label, "kind": results.kind, **row} for row in rows_as_dicts(pairs))
    return out
