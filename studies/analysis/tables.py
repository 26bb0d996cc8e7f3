"""Per-method result tables for class-discrimination and trust studies (no Django).

These rows are what the summary CSV and the results page show: one
:class:`DiscriminationRow` or :class:`TrustRow` per method plus one :class:`PairwiseRow`
per pair of methods. Catch trials never enter the statistics (they only feed the quality
rules); workers excluded by the study's rules can be dropped
(:func:`analyse_both` gives both versions side by side; a study's design chooses the table).

Conventions:
    * Discrimination score = accuracy (share of correct judgments), as in Selvaraju et al.
      (Grad-CAM, ICCV 2017), with chance ``1 / n_options``.
    * Trust score = mean answer on ``-2..+2`` signed towards the pair's model B (the model
      expected to be stronger): ``score_towards_b = -score_towards_a`` (see
      :func:`studies.analysis.judgments.score_towards_model_a`).
    * Intervals: Wilson for accuracy; percentile intervals of a two-way cluster bootstrap
      over workers and items for both scores (see
      :func:`studies.analysis.stats.two_way_cluster_bootstrap_means`).
    * Pairwise comparisons: the bootstrap difference of the two methods' scores on the same
      replicates (percentile interval; Wald p-value ``2 (1 - Phi(|d| / sd_boot(d)))``), and a
      naive test that treats judgments as independent (pooled two-proportion z for accuracy,
      Welch-type z for trust means). Both p-values are Holm-adjusted over all pairs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps

from studies.analysis.judgments import Judgments
from studies.analysis.quality import ExclusionReport, ExclusionRule, apply_exclusions
from studies.analysis.stats import (
    binomial_test_two_sided,
    compact_codes,
    group_order,
    holm_adjust,
    krippendorff_alpha,
    majority_vote_accuracy,
    normal_two_sided_p,
    percentile_interval,
    two_proportion_z_test,
    two_way_cluster_bootstrap_means,
    wilson_interval,
)

__all__ = [
    "DiscriminationAnalysis",
    "DiscriminationRow",
    "PairwiseRow",
    "StudyAnalysis",
    "TrustAnalysis",
    "TrustRow",
    "ANALYSES",
    "analyse_both",
    "analyse_with_and_without_exclusions",
    "discrimination_analysis",
    "discrimination_table",
    "rows_as_dicts",
    "trust_analysis",
    "trust_table",
]

ZeroMethod = Literal["wilcox", "pratt", "zsplit"]


@dataclass(frozen=True)
class DiscriminationRow:
    """Class-discrimination statistics of one method (one summary-CSV row)."""

    method: str
    n_judgments: int
    n_correct: int
    n_workers: int
    n_items: int
    accuracy: float
    wilson_low: float
    wilson_high: float
    chance: float
    binomial_p: float
    boot_low: float
    boot_high: float
    majority_accuracy: float
    majority_n_items: int
    majority_ties: int
    alpha_nominal: float


@dataclass(frozen=True)
class TrustRow:
    """Trust statistics of one method (scores signed towards model B)."""

    method: str
    n_judgments: int
    n_workers: int
    n_items: int
    mean: float
    sd: float
    boot_low: float
    boot_high: float
    wilcoxon_statistic: float
    wilcoxon_p: float
    n_zero: int
    count_minus2: int
    count_minus1: int
    count_0: int
    count_plus1: int
    count_plus2: int
    share_minus2: float
    share_minus1: float
    share_0: float
    share_plus1: float
    share_plus2: float
    alpha_ordinal: float


@dataclass(frozen=True)
class PairwiseRow:
    """Comparison of two methods: ``difference = score(method_a) - score(method_b)``."""

    method_a: str
    method_b: str
    difference: float
    boot_low: float
    boot_high: float
    p_boot: float
    p_boot_holm: float
    z_naive: float
    p_naive: float
    p_naive_holm: float


@dataclass(frozen=True)
class DiscriminationAnalysis:
    """Rows per method and per pair of methods, plus the settings that produced them."""

    rows: tuple[DiscriminationRow, ...]
    pairs: tuple[PairwiseRow, ...]
    n_boot: int
    seed: int
    confidence: float
    n_excluded_workers: int


@dataclass(frozen=True)
class TrustAnalysis:
    """Rows per method and per pair of methods, plus the settings that produced them."""

    rows: tuple[TrustRow, ...]
    pairs: tuple[PairwiseRow, ...]
    n_boot: int
    seed: int
    confidence: float
    zero_method: str
    n_excluded_workers: int


@dataclass(frozen=True)
class StudyAnalysis:
    """The same analysis without and with the study's exclusions."""

    without_exclusions: DiscriminationAnalysis | TrustAnalysis
    with_exclusions: DiscriminationAnalysis | TrustAnalysis
    exclusions: ExclusionReport


def rows_as_dicts(rows: Sequence[Any]) -> list[dict[str, Any]]:
    """Rows as plain dicts (CSV writer / template friendly)."""
    return [asdict(row) for row in rows]


def _analysable(
    j: Judgments, exclude_workers: ArrayLike | None, include_simulated: bool
) -> tuple[NDArray[np.bool_], int]:
    keep = ~j.is_catch
    if not include_simulated:
        keep &= ~j.is_simulated
    n_excluded = 0
    if exclude_workers is not None:
        excluded = np.asarray(exclude_workers, dtype=np.intp)
        if excluded.size:
            n_excluded = int(np.unique(excluded).size)
            keep &= ~np.isin(j.worker, excluded)
    return keep, n_excluded


def _distinct_per_group(group: NDArray, codes: NDArray, n_groups: int) -> NDArray[np.int64]:
    """Number of distinct ``codes`` within each group (presence table, no sort)."""
    compact, k = compact_codes(codes)
    if k == 0:
        return np.zeros(n_groups, dtype=np.int64)
    present = np.bincount(group * k + compact, minlength=n_groups * k) > 0
    return present.reshape(n_groups, k).sum(axis=1)


def _pairs(
    names: Sequence[str],
    estimate: NDArray,
    replicates: NDArray,
    z_naive: NDArray,
    confidence: float,
) -> tuple[PairwiseRow, ...]:
    m = len(names)
    a_idx, b_idx = np.triu_indices(m, k=1)
    if a_idx.size == 0:
        return ()
    diff = estimate[a_idx] - estimate[b_idx]
    diff_reps = replicates[a_idx] - replicates[b_idx]
    low, high = percentile_interval(diff_reps, confidence, axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        finite = np.isfinite(diff_reps).sum(axis=1)
        sd = np.where(finite >= 2, np.nanstd(diff_reps, axis=1, ddof=1), np.nan)
        z_boot = np.where(sd > 0, diff / sd, np.nan)
    p_boot = normal_two_sided_p(z_boot)
    zn = z_naive[a_idx, b_idx]
    p_naive = normal_two_sided_p(zn)
    p_boot_holm = holm_adjust(p_boot)
    p_naive_holm = holm_adjust(p_naive)
    return tuple(
        PairwiseRow(
            method_a=names[a],
            method_b=names[b],
            difference=float(diff[t]),
            boot_low=float(low[t]),
            boot_high=float(high[t]),
            p_boot=float(p_boot[t]),
            p_boot_holm=float(p_boot_holm[t]),
            z_naive=float(zn[t]),
            p_naive=float(p_naive[t]),
            p_naive_holm=float(p_naive_holm[t]),
        )
        for t, (a, b) in enumerate(zip(a_idx.tolist(), b_idx.tolist(), strict=True))
    )


def discrimination_analysis(
    j: Judgments,
    *,
    n_options: int = 2,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    exclude_workers: ArrayLike | None = None,
    include_simulated: bool = True,
) -> DiscriminationAnalysis:
    """Per-method class-discrimination statistics and pairwise comparisons.

    Args:
        j: Judgments with ``correct``. ``answer`` is optional: when it is known for every
            judgment it is the rated value for the plurality vote and alpha; otherwise
            correct/incorrect is.
        n_options: Options per question; chance is ``1 / n_options``.
        n_boot: Cluster-bootstrap replicates (0 skips the bootstrap: intervals ``nan``).
        seed: Bootstrap seed (fixed seed, identical result).
        confidence: Coverage of all intervals.
        exclude_workers: Worker codes to drop (e.g. ``ExclusionReport.excluded_workers``).
        include_simulated: Keep judgments of simulated observers.

    Raises:
        ValueError: If ``correct`` is missing or ``n_options < 2``.
    """
    if j.correct is None:
        raise ValueError("discrimination_analysis needs Judgments.correct")
    if isinstance(n_options, bool) or not isinstance(n_options, int) or n_options < 2:
        raise ValueError(f"n_options must be an integer >= 2, got {n_options!r}")
    keep, n_excluded = _analysable(j, exclude_workers, include_simulated)
    method, worker, item = j.method[keep], j.worker[keep], j.item[keep]
    correct = j.correct[keep]
    answer = None if j.answer is None else j.answer[keep]
    names = j.method_names
    m = len(names)
    chance = 1.0 / n_options

    n = np.bincount(method, minlength=m)
    k = np.bincount(method, weights=correct, minlength=m).astype(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.where(n > 0, k / np.maximum(n, 1), np.nan)
    w_low, w_high = wilson_interval(k, n, confidence)
    n_workers = _distinct_per_group(method, worker, m)
    n_items = _distinct_per_group(method, item, m)
    reps = two_way_cluster_bootstrap_means(
        correct, method, worker, item, n_groups=m, n_boot=n_boot, seed=seed
    )
    b_low, b_high = percentile_interval(reps, confidence, axis=1)
    use_answer = answer is not None and bool((answer >= 0).all())
    maj_acc, maj_n, maj_ties = majority_vote_accuracy(
        method, item, correct, n_groups=m, answer=answer if use_answer else None
    )
    rated = answer if use_answer else correct.astype(np.intp)
    order, bounds = group_order(method, m)
    alphas = []
    for g in range(m):
        rows = order[bounds[g] : bounds[g + 1]]
        alphas.append(krippendorff_alpha(item[rows], rated[rows], level="nominal"))

    z_naive = np.full((m, m), np.nan)
    a_idx, b_idx = np.triu_indices(m, k=1)
    z_naive[a_idx, b_idx] = two_proportion_z_test(k[a_idx], n[a_idx], k[b_idx], n[b_idx])[0]

    rows_out = tuple(
        DiscriminationRow(
            method=names[g],
            n_judgments=int(n[g]),
            n_correct=int(k[g]),
            n_workers=int(n_workers[g]),
            n_items=int(n_items[g]),
            accuracy=float(acc[g]),
            wilson_low=float(w_low[g]),
            wilson_high=float(w_high[g]),
            chance=chance,
            binomial_p=binomial_test_two_sided(int(k[g]), int(n[g]), chance),
            boot_low=float(b_low[g]),
            boot_high=float(b_high[g]),
            majority_accuracy=float(maj_acc[g]),
            majority_n_items=int(maj_n[g]),
            majority_ties=int(maj_ties[g]),
            alpha_nominal=float(alphas[g]),
        )
        for g in range(m)
    )
    return DiscriminationAnalysis(
        rows=rows_out,
        pairs=_pairs(names, acc, reps, z_naive, confidence),
        n_boot=n_boot,
        seed=seed,
        confidence=confidence,
        n_excluded_workers=n_excluded,
    )


def discrimination_table(
    j: Judgments,
    *,
    n_options: int = 2,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    exclude_workers: ArrayLike | None = None,
    include_simulated: bool = True,
) -> list[DiscriminationRow]:
    """The per-method rows of :func:`discrimination_analysis` (same arguments)."""
    analysis = discrimination_analysis(
        j,
        n_options=n_options,
        n_boot=n_boot,
        seed=seed,
        confidence=confidence,
        exclude_workers=exclude_workers,
        include_simulated=include_simulated,
    )
    return list(analysis.rows)


def _wilcoxon(x: NDArray, zero_method: ZeroMethod) -> tuple[float, float]:
    """``scipy.stats.wilcoxon`` against 0; ``nan`` when no non-zero difference exists."""
    if x.size == 0 or not np.any(x != 0):
        return float("nan"), float("nan")
    res = sps.wilcoxon(x, zero_method=zero_method)
    return float(res.statistic), float(res.pvalue)


def trust_analysis(
    j: Judgments,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    zero_method: ZeroMethod = "wilcox",
    exclude_workers: ArrayLike | None = None,
    include_simulated: bool = True,
) -> TrustAnalysis:
    """Per-method trust statistics (scores towards model B) and pairwise comparisons.

    The Wilcoxon signed-rank test of ``H0: median = 0`` uses ``scipy.stats.wilcoxon`` with
    ``zero_method`` (default ``"wilcox"``: "equally reasonable" answers, i.e. zeros, are
    dropped before ranking; their number is reported as ``n_zero``; ``"pratt"`` ranks them
    and then drops them, ``"zsplit"`` splits them between signs). With many ties scipy uses
    the normal approximation with tie correction.

    Args:
        j: Judgments with ``score_towards_a``.
        n_boot, seed, confidence, exclude_workers, include_simulated: As in
            :func:`discrimination_analysis`.
        zero_method: Zero handling of the Wilcoxon test.

    Raises:
        ValueError: If ``score_towards_a`` is missing or ``zero_method`` is unknown.
    """
    if j.score_towards_a is None:
        raise ValueError("trust_analysis needs Judgments.score_towards_a")
    if zero_method not in ("wilcox", "pratt", "zsplit"):
        raise ValueError(f"zero_method must be 'wilcox', 'pratt' or 'zsplit', got {zero_method!r}")
    keep, n_excluded = _analysable(j, exclude_workers, include_simulated)
    method, worker, item = j.method[keep], j.worker[keep], j.item[keep]
    score_b = -j.score_towards_a[keep].astype(np.int64)
    names = j.method_names
    m = len(names)

    n = np.bincount(method, minlength=m)
    total = np.bincount(method, weights=score_b, minlength=m)
    total_sq = np.bincount(method, weights=score_b * score_b, minlength=m)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(n > 0, total / np.maximum(n, 1), np.nan)
        var = np.where(n > 1, (total_sq - n * mean * mean) / np.maximum(n - 1, 1), np.nan)
    var = np.maximum(var, 0.0)
    counts = np.bincount(method * 5 + (score_b + 2), minlength=m * 5).reshape(m, 5)
    with np.errstate(divide="ignore", invalid="ignore"):
        shares = np.where(n[:, None] > 0, counts / np.maximum(n[:, None], 1), np.nan)
    n_workers = _distinct_per_group(method, worker, m)
    n_items = _distinct_per_group(method, item, m)
    reps = two_way_cluster_bootstrap_means(
        score_b, method, worker, item, n_groups=m, n_boot=n_boot, seed=seed
    )
    b_low, b_high = percentile_interval(reps, confidence, axis=1)
    order, bounds = group_order(method, m)
    tests, alphas = [], []
    for g in range(m):
        rows = order[bounds[g] : bounds[g + 1]]
        tests.append(_wilcoxon(score_b[rows], zero_method))
        alphas.append(krippendorff_alpha(item[rows], score_b[rows], level="ordinal"))

    z_naive = np.full((m, m), np.nan)
    a_idx, b_idx = np.triu_indices(m, k=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.sqrt(var[a_idx] / n[a_idx] + var[b_idx] / n[b_idx])
        z_naive[a_idx, b_idx] = np.where(se > 0, (mean[a_idx] - mean[b_idx]) / se, np.nan)

    rows_out = tuple(
        TrustRow(
            method=names[g],
            n_judgments=int(n[g]),
            n_workers=int(n_workers[g]),
            n_items=int(n_items[g]),
            mean=float(mean[g]),
            sd=float(np.sqrt(var[g])),
            boot_low=float(b_low[g]),
            boot_high=float(b_high[g]),
            wilcoxon_statistic=tests[g][0],
            wilcoxon_p=tests[g][1],
            n_zero=int(counts[g, 2]),
            count_minus2=int(counts[g, 0]),
            count_minus1=int(counts[g, 1]),
            count_0=int(counts[g, 2]),
            count_plus1=int(counts[g, 3]),
            count_plus2=int(counts[g, 4]),
            share_minus2=float(shares[g, 0]),
            share_minus1=float(shares[g, 1]),
            share_0=float(shares[g, 2]),
            share_plus1=float(shares[g, 3]),
            share_plus2=float(shares[g, 4]),
            alpha_ordinal=float(alphas[g]),
        )
        for g in range(m)
    )
    return TrustAnalysis(
        rows=rows_out,
        pairs=_pairs(names, mean, reps, z_naive, confidence),
        n_boot=n_boot,
        seed=seed,
        confidence=confidence,
        zero_method=zero_method,
        n_excluded_workers=n_excluded,
    )


def trust_table(
    j: Judgments,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    zero_method: ZeroMethod = "wilcox",
    exclude_workers: ArrayLike | None = None,
    include_simulated: bool = True,
) -> list[TrustRow]:
    """The per-method rows of :func:`trust_analysis` (same arguments)."""
    analysis = trust_analysis(
        j,
        n_boot=n_boot,
        seed=seed,
        confidence=confidence,
        zero_method=zero_method,
        exclude_workers=exclude_workers,
        include_simulated=include_simulated,
    )
    return list(analysis.rows)


def analyse_both(
    j: Judgments,
    rules: Sequence[ExclusionRule],
    *,
    table: Callable[..., DiscriminationAnalysis | TrustAnalysis],
    **kwargs: Any,
) -> StudyAnalysis:
    """Run one analysis twice: on all workers and without the ones ``rules`` exclude.

    Args:
        j: The judgments.
        rules: Exclusion rules (e.g. from :func:`studies.analysis.quality.rules_from_json`).
        table: The analysis to run, :func:`discrimination_analysis` or :func:`trust_analysis`
            (a study's design chooses it: ``studies.designs``); called as
            ``table(j, exclude_workers=..., **kwargs)``.
        **kwargs: Passed to ``table`` (both runs use the same seed).
    """
    report = apply_exclusions(j, rules)
    return StudyAnalysis(
        without_exclusions=table(j, **kwargs),
        with_exclusions=table(j, exclude_workers=report.excluded_workers, **kwargs),
        exclusions=report,
    )


#: The analyses :func:`analyse_with_and_without_exclusions` knows, by the function's name less
#: ``_analysis`` (``discrimination``, ``trust``).
ANALYSES: dict[str, Callable[..., DiscriminationAnalysis | TrustAnalysis]] = {
    table.__name__.removesuffix("_analysis"): table for table in (discrimination_analysis, trust_analysis)
}


def analyse_with_and_without_exclusions(
    j: Judgments,
    rules: Sequence[ExclusionRule],
    *,
    kind: str,
    **kwargs: Any,
) -> StudyAnalysis:
    """:func:`analyse_both` with the analysis named ``kind`` (a key of :data:`ANALYSES`).

    Args:
        j: The judgments.
        rules: Exclusion rules.
        kind: ``"discrimination"`` or ``"trust"`` (a key of :data:`ANALYSES`).
        **kwargs: Passed to the analysis.

    Raises:
        ValueError: For an unknown ``kind``.
    """
    table = ANALYSES.get(kind)
    if table is None:
        raise ValueError(f"kind must be one of {', '.join(map(repr, ANALYSES))}, got {kind!r}")
    return analyse_both(j, rules, table=table, **kwargs)
