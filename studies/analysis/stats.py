"""Vectorized statistics for human-study judgments (numpy + scipy, no Django).

Every function works on flat per-judgment arrays (one element per judgment) or on
per-method aggregates, never loops over judgments in Python, and is checked against an
independent reference in ``tests/studies/analysis/test_stats*.py`` (scipy ``binomtest``
and ``wilcoxon``, statsmodels ``proportion_confint``, the ``krippendorff`` package).

References:
    * Wilson, E. B. (1927). Probable inference, the law of succession, and statistical
      inference. JASA 22(158), 209-212.
    * Holm, S. (1979). A simple sequentially rejective multiple test procedure.
      Scand. J. Statist. 6(2), 65-70.
    * Owen, A. B. (2007). The pigeonhole bootstrap. Ann. Appl. Stat. 1(2), 386-411.
    * Field, C. A. & Welsh, A. H. (2007). Bootstrapping clustered data. JRSS-B 69(3),
      369-390.
    * Krippendorff, K. (2011). Computing Krippendorff's alpha-reliability.
      https://repository.upenn.edu/asc_papers/43
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps

AlphaLevel = Literal["nominal", "ordinal", "interval"]

__all__ = [
    "AlphaLevel",
    "binomial_test_two_sided",
    "compact_codes",
    "group_order",
    "holm_adjust",
    "krippendorff_alpha",
    "majority_vote_accuracy",
    "normal_two_sided_p",
    "percentile_interval",
    "two_proportion_z_test",
    "two_way_cluster_bootstrap_means",
    "wilson_interval",
]


def _z_for(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    return float(sps.norm.ppf(0.5 + confidence / 2.0))


def compact_codes(codes: ArrayLike) -> tuple[NDArray[np.intp], int]:
    """Relabel non-negative integer codes to ``0..k-1`` in sorted order of the originals.

    Uses a presence table (``bincount``) instead of ``np.unique``, so it is O(n + max code).

    Args:
        codes: Non-negative integer codes, any shape.

    Returns:
        ``(compact, k)``: the relabelled codes (same shape) and the number of distinct codes.
    """
    arr = np.asarray(codes)
    if arr.size == 0:
        return np.zeros(arr.shape, dtype=np.intp), 0
    present = np.bincount(arr.ravel()) > 0
    new_code = np.cumsum(present) - 1
    return new_code[arr].astype(np.intp, copy=False), int(present.sum())


def group_order(group: NDArray[np.integer], n_groups: int) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Stable order of judgments by group code, and each group's slice bounds in that order.

    Group ``g`` occupies ``order[bounds[g]:bounds[g + 1]]``. Small codes are sorted with
    numpy's radix sort (stable sort of a 16-bit key), O(n).
    """
    g = np.asarray(group)
    key = g.astype(np.uint16) if n_groups <= 2**16 else g
    order = np.argsort(key, kind="stable")
    bounds = np.concatenate(([0], np.cumsum(np.bincount(g, minlength=n_groups)[:n_groups])))
    return order, bounds


def _factorize(x: NDArray) -> tuple[NDArray[np.intp], NDArray]:
    """``(codes, levels)`` with ``levels[codes] == x`` and levels sorted; O(n) for small ints."""
    if x.size and np.issubdtype(x.dtype, np.integer):
        low = int(x.min())
        span = int(x.max()) - low
        if span <= 4 * x.size + 16:
            codes, _ = compact_codes(x.astype(np.int64) - low)
            present = np.bincount(x.astype(np.int64) - low, minlength=span + 1) > 0
            return codes, np.flatnonzero(present) + low
    sorted_x = np.sort(x)
    levels = sorted_x[np.concatenate(([True], sorted_x[1:] != sorted_x[:-1]))] if x.size else sorted_x
    return np.searchsorted(levels, x), levels


def wilson_interval(
    successes: ArrayLike, n: ArrayLike, confidence: float = 0.95
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Wilson score interval for a binomial proportion (vectorized).

    With ``p = k/n`` and ``z`` the two-sided normal quantile::

        centre    = (p + z^2 / (2n)) / (1 + z^2 / n)
        halfwidth = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / (4 n^2))

    Matches ``statsmodels.stats.proportion.proportion_confint(method="wilson")``
    (Wilson 1927). ``n == 0`` gives ``nan``.

    Args:
        successes: Number of successes ``k`` (scalar or array).
        n: Number of trials (same shape as ``successes``).
        confidence: Coverage, e.g. 0.95.

    Returns:
        ``(low, high)`` arrays (0-d for scalar input).
    """
    z = _z_for(confidence)
    k = np.asarray(successes, dtype=np.float64)
    nn = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / nn
        denom = 1.0 + z * z / nn
        centre = (p + z * z / (2.0 * nn)) / denom
        half = z / denom * np.sqrt(p * (1.0 - p) / nn + z * z / (4.0 * nn * nn))
    low = np.where(nn > 0, np.clip(centre - half, 0.0, 1.0), np.nan)
    high = np.where(nn > 0, np.clip(centre + half, 0.0, 1.0), np.nan)
    return low, high


def binomial_test_two_sided(successes: int, n: int, p0: float = 0.5) -> float:
    """Exact two-sided binomial test of ``H0: p = p0`` (``scipy.stats.binomtest``).

    The two-sided p-value sums the probabilities of all outcomes no more likely than the
    observed one (scipy's definition). ``n == 0`` gives ``nan``.
    """
    if n <= 0:
        return float("nan")
    return float(sps.binomtest(int(successes), int(n), p=p0, alternative="two-sided").pvalue)


def normal_two_sided_p(z: ArrayLike) -> NDArray[np.float64]:
    """Two-sided p-value ``2 * (1 - Phi(|z|))`` of a standard-normal statistic (nan stays nan)."""
    return 2.0 * sps.norm.sf(np.abs(np.asarray(z, dtype=np.float64)))


def two_proportion_z_test(
    k1: ArrayLike, n1: ArrayLike, k2: ArrayLike, n2: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Pooled two-proportion z test (vectorized), treating judgments as independent.

    ``z = (p1 - p2) / sqrt(p (1 - p) (1/n1 + 1/n2))`` with the pooled ``p = (k1+k2)/(n1+n2)``;
    equal to ``statsmodels.stats.proportion.proportions_ztest`` with its default pooled variance.
    It ignores clustering by worker and item: use the cluster-bootstrap comparison for inference.

    Returns:
        ``(z, p_two_sided)``; ``nan`` where the pooled variance is zero.
    """
    k1, n1, k2, n2 = (np.asarray(a, dtype=np.float64) for a in (k1, n1, k2, n2))
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = (k1 + k2) / (n1 + n2)
        se = np.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
        z = np.where(se > 0, (k1 / n1 - k2 / n2) / se, np.nan)
    return z, normal_two_sided_p(z)


def holm_adjust(p_values: ArrayLike) -> NDArray[np.float64]:
    """Holm (1979) step-down adjusted p-values, in the input order.

    For the ``m`` non-missing p-values sorted ascending, ``p_(i)`` becomes
    ``max_{j <= i} min(1, (m - j + 1) p_(j))``. ``nan`` entries stay ``nan`` and do not
    count towards ``m``. Matches ``statsmodels.stats.multitest.multipletests(method="holm")``.
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    if m == 0:
        return out
    order = valid[np.argsort(p[valid], kind="stable")]
    scaled = (m - np.arange(m)) * p[order]
    out[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return out


def percentile_interval(
    replicates: NDArray[np.float64], confidence: float = 0.95, axis: int = -1
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Percentile bootstrap interval along ``axis``, ignoring ``nan`` replicates.

    Replicates are ``nan`` when a resample holds no judgment of a method; with fewer than
    two finite replicates the interval is ``nan``.
    """
    _z_for(confidence)
    tail = (1.0 - confidence) / 2.0 * 100.0
    reps = np.asarray(replicates, dtype=np.float64)
    if reps.shape[axis] == 0:
        shape = np.delete(np.array(reps.shape), axis % reps.ndim)
        return np.full(shape, np.nan), np.full(shape, np.nan)
    finite = np.isfinite(reps).sum(axis=axis)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan slices -> nan
        low, high = np.nanpercentile(reps, [tail, 100.0 - tail], axis=axis)
    low = np.where(finite >= 2, low, np.nan)
    high = np.where(finite >= 2, high, np.nan)
    return low, high


def _multiplicities(rng: np.random.Generator, n_units: int, n_boot: int) -> NDArray[np.integer]:
    """Counts of each unit in ``n_boot`` resamples with replacement, shape ``(n_units, n_boot)``.

    Distributed as ``rng.multinomial(n_units, [1/n_units]*n_units, size=n_boot).T``, but a
    ``bincount`` of uniform draws per replicate (much faster than numpy's multinomial).
    """
    draw_type = np.uint16 if n_units <= 2**16 else np.int64
    draws = rng.integers(0, n_units, size=(n_boot, n_units), dtype=draw_type)
    small = np.int16 if n_units < 2**15 else np.int64  # a count never exceeds n_units
    counts = np.empty((n_boot, n_units), dtype=small)
    for b in range(n_boot):  # one bincount per replicate beats one over all draws
        counts[b] = np.bincount(draws[b], minlength=n_units)
    return np.ascontiguousarray(counts.T)


def _stratified_multiplicities(
    rng: np.random.Generator, worker: NDArray[np.intp], n_workers: int, strata: NDArray, n_boot: int
) -> NDArray[np.integer]:
    """:func:`_multiplicities` drawn within each stratum (rows: compact worker codes)."""
    if strata.shape != worker.shape:
        raise ValueError(f"worker_strata has shape {strata.shape}, expected {worker.shape}")
    stratum_of = np.full(n_workers, -1, dtype=np.int64)
    stratum_of[worker] = strata
    if (stratum_of[worker] != strata).any():
        raise ValueError("worker_strata: a worker's judgments carry two strata (workers must be nested in strata)")
    mult = np.zeros((n_workers, n_boot), dtype=np.int64 if n_workers >= 2**15 else np.int16)
    for stratum in np.unique(stratum_of):
        members = np.flatnonzero(stratum_of == stratum)
        mult[members] = _multiplicities(rng, members.size, n_boot)
    return mult


def two_way_cluster_bootstrap_means(
    values: ArrayLike,
    group: ArrayLike,
    worker: ArrayLike,
    item: ArrayLike,
    *,
    n_groups: int,
    n_boot: int,
    seed: int | np.random.Generator = 0,
    worker_strata: ArrayLike | None = None,
) -> NDArray[np.float64]:
    """Replicates of the per-group mean under a two-way (pigeonhole) cluster bootstrap.

    Judgments are crossed: the same worker rates many items and the same item is rated by
    many workers, so neither judgments nor one kind of cluster are independent. Each
    replicate ``b`` draws workers with replacement (``W_bw`` = how often worker ``w`` is drawn)
    and, independently, items with replacement (``I_bi``); a judgment of worker ``w`` on item
    ``i`` then enters the replicate with multiplicity ``W_bw * I_bi`` (zero unless both were
    drawn). The replicate mean of group ``g`` (a method) is::

        mean_bg = sum_{j in g} W_b,w(j) I_b,i(j) y_j / sum_{j in g} W_b,w(j) I_b,i(j)

    This is Owen's (2007) pigeonhole bootstrap for crossed random effects (see also Field &
    Welsh 2007, and McCullagh 2000 on why no exact bootstrap exists for crossed designs);
    it is conservative: the judgment-level (residual) variance is counted up to three times,
    so with no worker or item effects the interval is up to sqrt(3) wider than needed, while
    with strong effects it is close to nominal (``bench/analysis_coverage.py``). All groups
    share the same worker and item draws, so differences between methods can be read off
    the same replicates (a paired comparison when items are shared by methods).

    With ``worker_strata`` (e.g. the between-subject arm), workers are drawn within each
    stratum: a stratum of ``n_s`` workers gets ``n_s`` draws among its own workers, so every
    replicate keeps each arm's size, as the design fixed it; items are still drawn once per
    replicate for the whole study (an item shared by two arms has one multiplicity in both).
    Without it the draws are exactly those of earlier versions (same seed, same replicates).

    Vectorization: per group, the judgments are summed into a sparse matrix ``A`` (values)
    and ``N`` (counts) with rows on the larger cluster side (usually workers) and columns on
    the smaller one; for all replicates at once ``sum_rc R_r C_c A_rc`` is
    ``colsum(R * (A @ C))`` with ``R``, ``C`` the multiplicity matrices, costing
    ``O(nnz * n_boot)`` in one sparse-dense product. Integer-valued data (0/1 correctness,
    -2..+2 scores) use int16/int32 products when they cannot overflow (about 3x faster than
    float32), otherwise float64; sums are accumulated in int64/float64, so the result does
    not depend on the arithmetic path.

    Args:
        values: Per-judgment outcome (0/1 correctness or a score).
        group: Per-judgment group code in ``0..n_groups-1`` (the method).
        worker: Per-judgment worker code (non-negative integers).
        item: Per-judgment item code (non-negative integers).
        n_groups: Number of groups; groups without judgments give ``nan`` rows.
        n_boot: Number of bootstrap replicates.
        seed: Seed or generator; a fixed seed gives identical replicates.
        worker_strata: Optional per-judgment stratum code (non-negative); each worker must lie
            in one stratum. Strata are drawn in code order, then the items.

    Raises:
        ValueError: If a worker's judgments carry two strata.

    Returns:
        Array ``(n_groups, n_boot)`` of replicate means (``nan`` where a replicate holds no
        judgment of that group).
    """
    y = np.asarray(values)
    g = np.asarray(group, dtype=np.intp)
    out = np.full((n_groups, n_boot), np.nan)
    if n_boot <= 0 or y.size == 0:
        return out
    w, n_workers = compact_codes(worker)
    i, n_items = compact_codes(item)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if worker_strata is None:
        worker_mult = _multiplicities(rng, n_workers, n_boot)
    else:
        worker_mult = _stratified_multiplicities(rng, w, n_workers, np.asarray(worker_strata), n_boot)
    item_mult = _multiplicities(rng, n_items, n_boot)
    if n_workers >= n_items:  # dense operand = the smaller side (stays in cache)
        row_code, n_rows, row_mult, col_code, n_cols, col_mult = (
            w,
            n_workers,
            worker_mult,
            i,
            n_items,
            item_mult,
        )
    else:
        row_code, n_rows, row_mult, col_code, n_cols, col_mult = (
            i,
            n_items,
            item_mult,
            w,
            n_workers,
            worker_mult,
        )
    if y.dtype == bool:
        y = y.astype(np.int8)
    integer = bool(np.all(np.mod(y, 1) == 0)) if y.dtype.kind == "f" else True
    y_scale = max(float(np.abs(y).max()), 1.0)
    # |(A @ C)_rb| <= (ratings in row r) * max|y| * max C: pick the narrowest safe type
    per_row = int(np.bincount(row_code, minlength=n_rows).max())
    bound = max(per_row * y_scale * float(col_mult.max()), float(row_mult.max()))
    if integer and bound < 2**15:
        dtype = np.int16
    elif integer and bound < 2**31:
        dtype = np.int32
    else:
        dtype = np.float64
    yv = y.astype(dtype)
    ones = np.ones(y.size, dtype=dtype)
    col_mult_d = col_mult.astype(dtype)
    row_mult_f32 = row_mult.astype(np.float32)
    order, bounds = group_order(g, n_groups)
    for gg in range(n_groups):
        sel = order[bounds[gg] : bounds[gg + 1]]
        if sel.size == 0:
            continue
        idx = (row_code[sel], col_code[sel])
        sums = sp.csr_matrix((yv[sel], idx), shape=(n_rows, n_cols)) @ col_mult_d
        counts = sp.csr_matrix((ones[sel], idx), shape=(n_rows, n_cols)) @ col_mult_d
        # float32 sums of integers are exact while every partial sum stays below 2**24
        numer = np.einsum("rb,rb->b", row_mult_f32, sums.astype(np.float32))
        denom = np.einsum("rb,rb->b", row_mult_f32, counts.astype(np.float32))
        if not integer or float(denom.max()) * y_scale >= 2**24:
            numer = np.einsum("rb,rb->b", row_mult, sums, dtype=np.float64)
            denom = np.einsum("rb,rb->b", row_mult, counts, dtype=np.float64)
        numer, denom = numer.astype(np.float64), denom.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[gg] = np.where(denom > 0, numer / np.maximum(denom, 1.0), np.nan)
    return out


def krippendorff_alpha(
    units: ArrayLike,
    values: ArrayLike,
    *,
    level: AlphaLevel = "nominal",
) -> float:
    """Krippendorff's alpha from one (unit, value) pair per rating, via the coincidence matrix.

    Ratings with a missing value must be dropped by the caller (the data may be unbalanced:
    any number of ratings per unit). With ``n_uc`` the number of ratings of value ``c`` in
    unit ``u`` and ``m_u = sum_c n_uc``, only units with ``m_u >= 2`` are pairable::

        o_ck  = sum_u (n_uc n_uk - [c == k] n_uc) / (m_u - 1)      (coincidences)
        n_c   = sum_k o_ck,   n = sum_c n_c
        alpha = 1 - (n - 1) * sum_ck o_ck d2_ck / sum_ck n_c n_k d2_ck

    Distances ``d2_ck``: nominal ``[c != k]``; interval ``(v_c - v_k)^2``; ordinal, with the
    values in rank order, ``(sum_{g=c..k} n_g - (n_c + n_k) / 2)^2`` (Krippendorff 2011).
    The coincidence matrix is one sparse product ``N^T diag(1/(m_u-1)) N`` (no loop over
    units). Matches the ``krippendorff`` package on reliability matrices.

    Args:
        units: Per-rating unit code (e.g. the item).
        values: Per-rating value (category code, or score for ordinal/interval).
        level: ``"nominal"``, ``"ordinal"`` or ``"interval"``.

    Returns:
        Alpha; ``nan`` when fewer than two pairable ratings exist or all values agree
        (expected disagreement zero).
    """
    if level not in ("nominal", "ordinal", "interval"):
        raise ValueError(f"level must be 'nominal', 'ordinal' or 'interval', got {level!r}")
    u_raw = np.asarray(units)
    v_raw = np.asarray(values)
    if u_raw.shape != v_raw.shape or u_raw.ndim != 1:
        raise ValueError("units and values must be 1-d arrays of equal length")
    if u_raw.size == 0:
        return float("nan")
    u, u_levels = _factorize(u_raw)
    v, v_levels = _factorize(v_raw)
    n_units, n_values = u_levels.size, v_levels.size
    counts = sp.csr_matrix((np.ones(u.size), (u, v)), shape=(n_units, n_values))  # duplicates are summed
    m_u = np.asarray(counts.sum(axis=1)).ravel()
    weight = np.where(m_u >= 2, 1.0 / np.maximum(m_u - 1.0, 1.0), 0.0)
    weighted = sp.diags(weight) @ counts
    coincidence = (counts.T @ weighted).toarray()
    coincidence -= np.diag(np.asarray(weighted.sum(axis=0)).ravel())
    n_c = coincidence.sum(axis=1)
    n = n_c.sum()
    if n < 2:
        return float("nan")
    if level == "nominal":
        d2 = 1.0 - np.eye(n_values)
    elif level == "interval":
        vals = v_levels.astype(np.float64)
        d2 = (vals[:, None] - vals[None, :]) ** 2
    else:
        cum = np.cumsum(n_c)
        # for c <= k: sum_{g=c..k} n_g - (n_c + n_k)/2 = cum_k - cum_c + (n_c - n_k)/2
        between = cum[None, :] - cum[:, None] + (n_c[:, None] - n_c[None, :]) / 2.0
        d2 = between**2  # symmetric: swapping c and k flips the sign only
    observed = float((coincidence * d2).sum())
    expected = float((n_c[:, None] * n_c[None, :] * d2).sum())
    if expected == 0.0:
        return float("nan")
    return 1.0 - (n - 1.0) * observed / expected


def _group_starts(sorted_keys: NDArray) -> NDArray[np.intp]:
    """Indices where a new run of equal keys begins in a sorted 1-d array."""
    if sorted_keys.size == 0:
        return np.zeros(0, dtype=np.intp)
    return np.flatnonzero(np.concatenate(([True], sorted_keys[1:] != sorted_keys[:-1])))


def majority_vote_accuracy(
    group: ArrayLike,
    item: ArrayLike,
    correct: ArrayLike,
    *,
    n_groups: int,
    answer: ArrayLike | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.int64]]:
    """Per-group accuracy of the per-item majority (plurality) answer.

    For each (group, item), the answers given to the item are tallied; the item scores 1 if
    the correct answer alone has the highest tally, ``1/k`` if it ties with ``k - 1`` other
    answers at the top (the expected score of breaking the tie at random), and 0 otherwise.
    Without ``answer`` codes only correct/incorrect is known, so each item is a two-way vote:
    1 if more than half of its ratings are correct, 0.5 on an exact half, else 0. For a
    two-option task both rules agree.

    Args:
        group: Per-judgment group code ``0..n_groups-1`` (the method).
        item: Per-judgment item code (non-negative integers).
        correct: Per-judgment correctness.
        n_groups: Number of groups.
        answer: Optional per-judgment code of the option chosen (its identity, e.g. the
            category, not its screen position).

    Returns:
        ``(accuracy, n_items, n_tied_items)`` per group (accuracy ``nan`` without items).
    """
    g = np.asarray(group, dtype=np.int64)
    it = np.asarray(item, dtype=np.int64)
    ok = np.asarray(correct, dtype=bool)
    acc = np.full(n_groups, np.nan)
    if g.size == 0:
        return acc, np.zeros(n_groups, np.int64), np.zeros(n_groups, np.int64)
    it_c, n_items = compact_codes(it)
    cell = g * n_items + it_c  # one code per (group, item)
    if answer is None:
        n_cell = np.bincount(cell, minlength=n_groups * n_items)
        k_cell = np.bincount(cell, weights=ok, minlength=n_groups * n_items)
        used = n_cell > 0
        score = np.where(2 * k_cell > n_cell, 1.0, np.where(2 * k_cell == n_cell, 0.5, 0.0))
        tied = used & (2 * k_cell == n_cell)
        cell_group = np.arange(n_groups * n_items) // n_items
    else:
        ans_c, n_answers = compact_codes(np.asarray(answer, dtype=np.int64))
        key = cell * n_answers + ans_c
        order = np.argsort(key, kind="stable")
        key_sorted = key[order]
        starts = _group_starts(key_sorted)
        tally = np.diff(np.append(starts, key.size))  # votes per (cell, answer)
        answer_correct = np.maximum.reduceat(ok[order], starts)
        cell_of = key_sorted[starts] // n_answers
        cell_starts = _group_starts(cell_of)
        top = np.maximum.reduceat(tally, cell_starts)
        is_top = tally == np.repeat(top, np.diff(np.append(cell_starts, cell_of.size)))
        n_top = np.add.reduceat(is_top.astype(np.int64), cell_starts)
        correct_top = np.add.reduceat((is_top & answer_correct).astype(np.int64), cell_starts)
        score = np.minimum(correct_top, 1) / n_top
        tied = n_top > 1
        cell_group = cell_of[cell_starts] // n_items
        used = np.ones(cell_group.size, dtype=bool)
    n_items_g = np.bincount(cell_group[used], minlength=n_groups).astype(np.int64)
    sum_g = np.bincount(cell_group[used], weights=score[used], minlength=n_groups)
    ties_g = np.bincount(cell_group[used], weights=tied[used], minlength=n_groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.where(n_items_g > 0, sum_g / n_items_g, np.nan)
    return acc, n_items_g, ties_g.astype(np.int64)
