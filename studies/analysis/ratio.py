"""Between-arm accuracy statistics with a two-way cluster bootstrap (numpy + scipy, no Django).

Two contrasts that the between-subject designs report:

* :func:`accuracy_ratio` - the ratio of two arms' mean accuracies, e.g. the *utility* of
  explanations in a forward-simulation study (Colin et al. 2022: accuracy of the arm trained
  with explanations divided by the accuracy of the control arm trained without);
* :func:`accuracy_difference` - the accuracy of people deciding with the AI's help minus the
  accuracy of a reference on the same trials, e.g. the AI alone (Nguyen et al. 2021: accept or
  reject the model's prediction; "human + AI" against "AI alone").

Both use main (non-catch) judgments only, pooled over the methods of an arm, and every
judgment they are given: leave out excluded workers or simulated observers before calling
(``Judgments.subset``). The interval is the percentile interval of the two-way (pigeonhole)
cluster bootstrap of :func:`studies.analysis.stats.two_way_cluster_bootstrap_means`, with
workers resampled within their arm (each arm keeps its size, as the design fixed it) and items
resampled once per replicate for the whole study, so an item seen in both arms carries the
same multiplicity in both (the comparison is paired on items). Like the per-method tables'
interval it is conservative when the judgment-level noise dominates the worker and item
effects (``bench/ratio_coverage.py`` prints coverage and width).

References:
    * Colin, J., Fel, T., Cadene, R. & Serre, T. (2022). What I cannot predict, I do not
      understand: a human-centered evaluation framework for explainability methods. NeurIPS.
    * Nguyen, G., Kim, D. & Nguyen, A. (2021). The effectiveness of feature attribution
      methods and its correlation with automatic evaluation scores. NeurIPS.
    * Owen, A. B. (2007). The pigeonhole bootstrap. Ann. Appl. Stat. 1(2), 386-411.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from studies.analysis.judgments import Judgments
from studies.analysis.stats import percentile_interval, two_way_cluster_bootstrap_means

__all__ = ["AccuracyDifference", "AccuracyRatio", "accuracy_difference", "accuracy_ratio"]


@dataclass(frozen=True)
class AccuracyRatio:
    """``ratio = numerator_accuracy / denominator_accuracy`` with its bootstrap interval.

    Attributes:
        numerator_arm, denominator_arm: The arms compared.
        ratio: Ratio of the two arms' accuracies (``nan`` when the denominator is 0 or an arm
            has no judgment).
        numerator_accuracy, denominator_accuracy: Share of correct main judgments in each arm.
        numerator_n_judgments, denominator_n_judgments: Main judgments per arm.
        numerator_n_correct, denominator_n_correct: Correct ones per arm.
        numerator_n_workers, denominator_n_workers: Workers with a main judgment, per arm.
        n_items: Distinct items judged in either arm.
        boot_low, boot_high: Percentile bootstrap interval of the ratio (``nan`` with fewer than
            two finite replicates).
        n_boot, seed, level: The bootstrap's settings.
    """

    numerator_arm: str
    denominator_arm: str
    ratio: float
    numerator_accuracy: float
    denominator_accuracy: float
    numerator_n_judgments: int
    denominator_n_judgments: int
    numerator_n_correct: int
    denominator_n_correct: int
    numerator_n_workers: int
    denominator_n_workers: int
    n_items: int
    boot_low: float
    boot_high: float
    n_boot: int
    seed: int
    level: float


@dataclass(frozen=True)
class AccuracyDifference:
    """``difference = team_accuracy - reference_accuracy`` on the same trials, with its interval.

    Attributes:
        arm: The arm analysed (``None``: every judgment).
        difference: Team minus reference accuracy.
        team_accuracy: Share of correct main judgments.
        reference_accuracy: Mean of the reference accuracy of each judgment's item, over the
            same judgments (each trial paired with the reference on its item).
        n_judgments, n_correct, n_workers, n_items: What the estimate rests on.
        boot_low, boot_high: Percentile bootstrap interval of the difference.
        n_boot, seed, level: The bootstrap's settings.
    """

    arm: str | None
    difference: float
    team_accuracy: float
    reference_accuracy: float
    n_judgments: int
    n_correct: int
    n_workers: int
    n_items: int
    boot_low: float
    boot_high: float
    n_boot: int
    seed: int
    level: float


def _arm_code(j: Judgments, name: str) -> int:
    if j.arm is None:
        raise ValueError("the judgments carry no arm (Judgments.arm is None): the study has no arms")
    if name not in j.arm_names:
        raise ValueError(f"unknown arm {name!r}; the arms are {', '.join(map(repr, j.arm_names)) or 'none'}")
    return j.arm_names.index(name)


def _correct(j: Judgments, caller: str) -> NDArray[np.bool_]:
    if j.correct is None:
        raise ValueError(f"{caller} needs Judgments.correct")
    return j.correct


def _mean(values: NDArray) -> float:
    return float(values.mean()) if values.size else float("nan")


def accuracy_ratio(
    j: Judgments,
    *,
    numerator_arm: str,
    denominator_arm: str,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> AccuracyRatio:
    """Ratio of two arms' accuracies, ``acc(numerator_arm) / acc(denominator_arm)``.

    ``acc(arm) = sum_{j in arm} correct_j / n_arm`` over the arm's main judgments. Replicate
    ``b`` of the bootstrap gives ``acc_b(num) / acc_b(den)``, each the weighted mean of
    :func:`~studies.analysis.stats.two_way_cluster_bootstrap_means` (worker multiplicities
    drawn within each arm, item multiplicities shared); the interval is the percentile
    interval of the finite replicate ratios.

    Args:
        j: Judgments with ``correct`` and ``arm``.
        numerator_arm, denominator_arm: Two different names of ``j.arm_names``.
        n_boot: Bootstrap replicates (0: no interval).
        seed: Bootstrap seed (fixed seed, identical result).
        level: Coverage of the interval.

    Raises:
        ValueError: Without ``correct`` or ``arm``, for an unknown arm or the same arm twice.
    """
    correct = _correct(j, "accuracy_ratio")
    num, den = _arm_code(j, numerator_arm), _arm_code(j, denominator_arm)
    if num == den:
        raise ValueError(f"numerator_arm and denominator_arm are both {numerator_arm!r}")
    assert j.arm is not None
    main = ~j.is_catch
    in_num, in_den = main & (j.arm == num), main & (j.arm == den)
    sel = np.flatnonzero(in_num | in_den)
    group = np.where(j.arm[sel] == num, 0, 1).astype(np.intp)
    y = correct[sel]
    n = np.bincount(group, minlength=2)
    k = np.bincount(group, weights=y, minlength=2).astype(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.where(n > 0, k / np.maximum(n, 1), np.nan)
        ratio = float(acc[0] / acc[1]) if acc[1] > 0 else float("nan")
    reps = two_way_cluster_bootstrap_means(y, group, j.worker[sel], j.item[sel], n_groups=2, n_boot=n_boot,
                                           seed=seed, worker_strata=group)  # fmt: skip
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio_reps = np.where(reps[1] > 0, reps[0] / reps[1], np.nan)
    low, high = percentile_interval(ratio_reps, level)
    return AccuracyRatio(
        numerator_arm=numerator_arm,
        denominator_arm=denominator_arm,
        ratio=ratio,
        numerator_accuracy=float(acc[0]),
        denominator_accuracy=float(acc[1]),
        numerator_n_judgments=int(n[0]),
        denominator_n_judgments=int(n[1]),
        numerator_n_correct=int(k[0]),
        denominator_n_correct=int(k[1]),
        numerator_n_workers=int(np.unique(j.worker[in_num]).size),
        denominator_n_workers=int(np.unique(j.worker[in_den]).size),
        n_items=int(np.unique(j.item[sel]).size),
        boot_low=float(low),
        boot_high=float(high),
        n_boot=n_boot,
        seed=seed,
        level=level,
    )


def accuracy_difference(
    j: Judgments,
    *,
    reference: ArrayLike,
    arm: str | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> AccuracyDifference:
    """Team accuracy minus a reference's accuracy on the same trials (e.g. human + AI - AI alone).

    With ``r_i`` the reference's accuracy on item ``i`` (``reference[i]``: 0/1 for one AI
    prediction, or a share), each main judgment ``j`` gives ``d_j = correct_j - r_item(j)`` and
    ``difference = mean_j d_j = team_accuracy - reference_accuracy``, the reference weighted as
    the people's trials are. Replicate ``b`` is the two-way cluster bootstrap mean of ``d``
    (workers drawn within their arm when the judgments carry arms, items once per replicate).

    Args:
        j: Judgments with ``correct``.
        reference: Reference accuracy per item code, indexable by ``j.item`` (values in
            ``[0, 1]``, no ``nan`` on an item judged).
        arm: Only this arm's judgments (``None``: every main judgment).
        n_boot: Bootstrap replicates (0: no interval).
        seed: Bootstrap seed.
        level: Coverage of the interval.

    Raises:
        ValueError: Without ``correct``, for an unknown arm, or when ``reference`` does not cover
            a judged item or lies outside ``[0, 1]``.
    """
    correct = _correct(j, "accuracy_difference")
    keep = ~j.is_catch
    if arm is not None:
        code = _arm_code(j, arm)
        assert j.arm is not None
        keep &= j.arm == code
    sel = np.flatnonzero(keep)
    ref = np.asarray(reference, dtype=np.float64)
    if ref.ndim != 1:
        raise ValueError(f"reference must be 1-d (one value per item code), got shape {ref.shape}")
    item = j.item[sel]
    if item.size and int(item.max()) >= ref.size:
        raise ValueError(f"reference has {ref.size} values but item code {int(item.max())} is judged")
    r = ref[item]
    if r.size and (not np.isfinite(r).all() or r.min() < 0 or r.max() > 1):
        raise ValueError("reference must be a finite accuracy in [0, 1] on every judged item")
    y = correct[sel]
    d = y.astype(np.float64) - r
    strata = None if j.arm is None else j.arm[sel]
    reps = two_way_cluster_bootstrap_means(d, np.zeros(sel.size, dtype=np.intp), j.worker[sel], item, n_groups=1,
                                           n_boot=n_boot, seed=seed, worker_strata=strata)  # fmt: skip
    low, high = percentile_interval(reps[0], level)
    team, reference_accuracy = _mean(y.astype(np.float64)), _mean(r)
    return AccuracyDifference(
        arm=arm,
        difference=team - reference_accuracy,
        team_accuracy=team,
        reference_accuracy=reference_accuracy,
        n_judgments=int(sel.size),
        n_correct=int(y.sum()),
        n_workers=int(np.unique(j.worker[sel]).size),
        n_items=int(np.unique(item).size),
        boot_low=float(low),
        boot_high=float(high),
        n_boot=n_boot,
        seed=seed,
        level=level,
    )
