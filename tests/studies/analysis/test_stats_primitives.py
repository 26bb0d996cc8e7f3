"""The statistics primitives against independent references (scipy, statsmodels, krippendorff)."""

from __future__ import annotations

import krippendorff
import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint, proportions_ztest

from studies.analysis import stats
from studies.analysis.stats import (
    binomial_test_two_sided,
    compact_codes,
    holm_adjust,
    krippendorff_alpha,
    majority_vote_accuracy,
    percentile_interval,
    two_proportion_z_test,
    two_way_cluster_bootstrap_means,
    wilson_interval,
)

# Selvaraju et al. class discrimination: correct of 810 judgments per method. Wilson bounds
# rounded to 3 places (statsmodels agrees); for 432/810 the upper bound is 0.56745 -> 0.567
# (research/mission_anchors.md prints 0.568, a rounding slip).
PAPER = {
    "Guided Grad-CAM": (496, 0.6123, (0.578, 0.645)),
    "Guided Backprop": (360, 0.4444, (0.411, 0.479)),
    "Deconvolution": (432, 0.5333, (0.499, 0.567)),
    "Deconvolution Grad-CAM": (489, 0.6037, (0.570, 0.637)),
}


@pytest.mark.parametrize("method", sorted(PAPER))
def test_wilson_reproduces_paper_counts(method):
    k, accuracy, (low, high) = PAPER[method]
    assert round(k / 810, 4) == accuracy
    lo, hi = wilson_interval(k, 810)
    assert (round(float(lo), 3), round(float(hi), 3)) == (low, high)


def test_wilson_matches_statsmodels_vectorized():
    rng = np.random.default_rng(3)
    n = rng.integers(1, 2000, 200)
    k = rng.integers(0, n + 1)
    k[:3], n[:3] = [0, 5, 7], [5, 5, 9]  # edge cases: none and all correct
    for confidence in (0.9, 0.95, 0.99):
        lo, hi = wilson_interval(k, n, confidence)
        ref_lo, ref_hi = proportion_confint(k, n, alpha=1 - confidence, method="wilson")
        np.testing.assert_allclose(lo, ref_lo, rtol=0, atol=1e-12)
        np.testing.assert_allclose(hi, ref_hi, rtol=0, atol=1e-12)


def test_wilson_empty_is_nan_and_bad_confidence_raises():
    lo, hi = wilson_interval(np.array([0, 3]), np.array([0, 4]))
    assert np.isnan(lo[0])
    assert np.isnan(hi[0])
    assert not np.isnan(lo[1])
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 2, confidence=1.5)


@pytest.mark.parametrize(("k", "n", "p0"), [(496, 810, 0.5), (360, 810, 0.5), (7, 30, 1 / 3), (0, 4, 0.25)])
def test_binomial_test_matches_scipy(k, n, p0):
    assert binomial_test_two_sided(k, n, p0) == pytest.approx(sps.binomtest(k, n, p0).pvalue, rel=1e-12)


def test_binomial_test_paper_significance():
    # Guided Backprop is significantly below chance, Deconvolution is not (naive test)
    assert binomial_test_two_sided(360, 810) < 0.01
    assert binomial_test_two_sided(432, 810) > 0.05
    assert np.isnan(binomial_test_two_sided(0, 0))


def test_holm_matches_statsmodels_and_keeps_nan():
    rng = np.random.default_rng(0)
    p = rng.random(15) ** 3
    np.testing.assert_allclose(holm_adjust(p), multipletests(p, method="holm")[1], atol=1e-15)
    with_nan = np.array([0.01, np.nan, 0.04, 0.03])
    out = holm_adjust(with_nan)
    np.testing.assert_allclose(out[[0, 2, 3]], multipletests([0.01, 0.04, 0.03], method="holm")[1])
    assert np.isnan(out[1])


def test_two_proportion_z_matches_statsmodels():
    z, p = two_proportion_z_test(496, 810, 360, 810)
    ref_z, ref_p = proportions_ztest([496, 360], [810, 810])
    assert float(z) == pytest.approx(ref_z, rel=1e-12)
    assert float(p) == pytest.approx(ref_p, rel=1e-9)


def test_compact_codes():
    codes, k = compact_codes(np.array([7, 3, 7, 10, 3]))
    assert k == 3
    assert codes.tolist() == [1, 0, 1, 2, 0]


def _reliability_to_pairs(matrix):
    """raters x units matrix with nan = missing -> (unit, value) per rating."""
    rater, unit = np.nonzero(~np.isnan(matrix))
    return unit, matrix[rater, unit]


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_krippendorff_alpha_matches_package(level, seed):
    rng = np.random.default_rng(seed)
    n_raters, n_units = 12, 40
    truth = rng.integers(-2, 3, n_units)
    noise = rng.integers(-1, 2, (n_raters, n_units)) * (rng.random((n_raters, n_units)) < 0.4)
    matrix = np.clip(truth + noise, -2, 2).astype(float)
    matrix[rng.random(matrix.shape) < 0.3] = np.nan  # unbalanced, some units with < 2 ratings
    unit, value = _reliability_to_pairs(matrix)
    ours = krippendorff_alpha(unit, value, level=level)
    ref = krippendorff.alpha(
        reliability_data=matrix, level_of_measurement=level, value_domain=[-2, -1, 0, 1, 2]
    )
    assert ours == pytest.approx(ref, abs=1e-10)


def test_krippendorff_alpha_edge_cases():
    assert np.isnan(krippendorff_alpha(np.array([1, 1, 2]), np.array([0, 0, 0])))  # no disagreement
    assert np.isnan(krippendorff_alpha(np.array([1, 2]), np.array([0, 1])))  # nothing pairable
    # perfect agreement with variation between units
    assert krippendorff_alpha(np.array([1, 1, 2, 2]), np.array([0, 0, 1, 1])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="level"):
        krippendorff_alpha(np.array([1]), np.array([1]), level="ratio")


def _majority_reference(group, item, correct, answer, n_groups):
    """Slow, obvious per-item plurality vote."""
    acc, n_items, ties = [], [], []
    for g in range(n_groups):
        scores, tied = [], 0
        for it in sorted(set(item[group == g].tolist())):
            sel = (group == g) & (item == it)
            if answer is None:
                k, n = int(correct[sel].sum()), int(sel.sum())
                scores.append(1.0 if 2 * k > n else 0.5 if 2 * k == n else 0.0)
                tied += 2 * k == n
            else:
                tally = {}
                for a, c in zip(answer[sel].tolist(), correct[sel].tolist()):
                    tally.setdefault(a, [0, c])[0] += 1
                top = max(v[0] for v in tally.values())
                winners = [c for v, c in tally.values() if v == top]
                scores.append(sum(winners) / len(winners))
                tied += len(winners) > 1
        acc.append(np.mean(scores) if scores else np.nan)
        n_items.append(len(scores))
        ties.append(tied)
    return np.array(acc), np.array(n_items), np.array(ties)


@pytest.mark.parametrize("with_answers", [False, True])
def test_majority_vote_matches_loop_reference(with_answers):
    rng = np.random.default_rng(5)
    n = 3000
    group = rng.integers(0, 3, n)
    item = rng.integers(0, 60, n) * 3  # sparse item codes
    if with_answers:
        truth = rng.integers(0, 4, 200)  # correct answer per item
        answer = np.where(rng.random(n) < 0.45, truth[item // 3], rng.integers(0, 4, n))
        correct = answer == truth[item // 3]
    else:
        answer = None
        correct = rng.random(n) < 0.55
    ours = majority_vote_accuracy(group, item, correct, n_groups=4, answer=answer)
    ref = _majority_reference(group, item, correct, answer, 4)
    np.testing.assert_allclose(ours[0][:3], ref[0][:3])
    assert np.isnan(ours[0][3])
    assert ours[1][3] == 0
    np.testing.assert_array_equal(ours[1][:3], ref[1][:3])
    np.testing.assert_array_equal(ours[2][:3], ref[2][:3])
    assert ours[2][:3].sum() > 0  # the data do contain ties


def _bootstrap_reference(values, group, worker, item, n_groups, n_boot, seed):
    """Per-judgment weights W[worker] * I[item], one replicate at a time (slow, obvious)."""
    rng = np.random.default_rng(seed)
    w, n_w = compact_codes(worker)
    i, n_i = compact_codes(item)
    w_mult = stats._multiplicities(rng, n_w, n_boot)  # same draw order as the fast path
    i_mult = stats._multiplicities(rng, n_i, n_boot)
    out = np.full((n_groups, n_boot), np.nan)
    for b in range(n_boot):
        weight = w_mult[w, b].astype(float) * i_mult[i, b]
        for g in range(n_groups):
            sel = group == g
            if weight[sel].sum() > 0:
                out[g, b] = (weight[sel] * values[sel]).sum() / weight[sel].sum()
    return out


@pytest.mark.parametrize(
    ("n_workers", "n_items", "kind"),
    [(40, 15, "binary"), (12, 50, "score"), (30, 30, "real")],  # both orientations, all dtypes
)
def test_cluster_bootstrap_matches_weighted_loop(n_workers, n_items, kind):
    rng = np.random.default_rng(11)
    n = 900
    group = rng.integers(0, 3, n)
    worker = rng.integers(0, n_workers, n) * 7 + 2
    item = rng.integers(0, n_items, n)
    values = {
        "binary": rng.random(n) < 0.6,
        "score": rng.integers(-2, 3, n),
        "real": rng.normal(size=n),
    }[kind]
    ours = two_way_cluster_bootstrap_means(values, group, worker, item, n_groups=4, n_boot=60, seed=9)
    ref = _bootstrap_reference(values.astype(float), group, worker, item, 4, 60, 9)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)
    assert np.isnan(ours[3]).all()  # group without judgments


def test_multiplicities_are_resamples():
    counts = stats._multiplicities(np.random.default_rng(0), 50, 400)
    assert counts.shape == (50, 400)
    assert (counts.sum(axis=0) == 50).all()
    assert counts.mean() == pytest.approx(1.0)
    assert counts.var() == pytest.approx(1 - 1 / 50, rel=0.1)  # multinomial variance


def test_cluster_bootstrap_is_deterministic_and_seed_dependent():
    rng = np.random.default_rng(1)
    n = 2000
    args = (rng.random(n) < 0.6, rng.integers(0, 2, n), rng.integers(0, 50, n), rng.integers(0, 30, n))
    a = two_way_cluster_bootstrap_means(*args, n_groups=2, n_boot=100, seed=4)
    b = two_way_cluster_bootstrap_means(*args, n_groups=2, n_boot=100, seed=4)
    c = two_way_cluster_bootstrap_means(*args, n_groups=2, n_boot=100, seed=5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert two_way_cluster_bootstrap_means(*args, n_groups=2, n_boot=0).shape == (2, 0)


def test_percentile_interval_ignores_nan_replicates():
    reps = np.array([[1.0, 2.0, 3.0, np.nan, 4.0], [np.nan] * 5])
    low, high = percentile_interval(reps, 0.5, axis=1)
    assert (low[0], high[0]) == (1.75, 3.25)
    assert np.isnan(low[1])
    assert np.isnan(high[1])


def test_analysis_package_imports_neither_django_nor_torch():
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, studies.analysis; "
        "bad = sorted({m.split('.')[0] for m in sys.modules} & {'django', 'torch'}); "
        "assert not bad, bad"
    )
    root = Path(__file__).resolve().parents[3]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)
