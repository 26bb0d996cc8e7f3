"""Per-method tables against independent references, and exclusions with/without."""

from __future__ import annotations

import krippendorff
import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint, proportions_ztest

from studies.analysis import (
    Judgments,
    analyse_with_and_without_exclusions,
    discrimination_analysis,
    discrimination_table,
    rows_as_dicts,
    rules_from_json,
    score_towards_model_a,
    trust_table,
)

PAPER_CORRECT = {
    "Guided Grad-CAM": 496,
    "Guided Backprop": 360,
    "Deconvolution": 432,
    "Deconvolution Grad-CAM": 489,
}


def paper_judgments(seed=0):
    """90 image-category pairs x 9 ratings per method, 43 workers, the paper's correct counts."""
    rng = np.random.default_rng(seed)
    names = tuple(PAPER_CORRECT)
    method, worker, item, correct = [], [], [], []
    for m, k in enumerate(PAPER_CORRECT.values()):
        ok = np.zeros(810, dtype=bool)
        ok[rng.choice(810, k, replace=False)] = True
        method.append(np.full(810, m))
        item.append(np.repeat(np.arange(90), 9))
        worker.append(rng.integers(0, 43, 810))
        correct.append(ok)
    return Judgments(
        method=np.concatenate(method),
        worker=np.concatenate(worker),
        item=np.concatenate(item),
        method_names=names,
        correct=np.concatenate(correct),
    )


def test_discrimination_table_reproduces_paper():
    rows = {r.method: r for r in discrimination_table(paper_judgments(), n_boot=300)}
    expected = {
        "Guided Grad-CAM": 61.23,
        "Guided Backprop": 44.44,
        "Deconvolution": 53.33,
        "Deconvolution Grad-CAM": 60.37,
    }
    for name, percent in expected.items():
        row = rows[name]
        assert (row.n_judgments, row.n_items) == (810, 90)
        assert row.n_correct == PAPER_CORRECT[name]
        assert round(100 * row.accuracy, 2) == percent
        lo, hi = proportion_confint(row.n_correct, 810, method="wilson")
        assert (row.wilson_low, row.wilson_high) == pytest.approx((lo, hi), abs=1e-12)
        assert row.binomial_p == pytest.approx(sps.binomtest(row.n_correct, 810, 0.5).pvalue, rel=1e-12)
        assert row.chance == 0.5
        assert row.boot_low < row.accuracy < row.boot_high
        assert 0.0 <= row.majority_accuracy <= 1.0
        assert row.majority_n_items == 90
    assert (round(rows["Guided Grad-CAM"].wilson_low, 3), round(rows["Guided Grad-CAM"].wilson_high, 3)) == (
        0.578,
        0.645,
    )


def test_discrimination_pairs_match_statsmodels_and_holm():
    analysis = discrimination_analysis(paper_judgments(), n_boot=300)
    assert len(analysis.pairs) == 6
    naive = []
    for pair in analysis.pairs:
        ka, kb = PAPER_CORRECT[pair.method_a], PAPER_CORRECT[pair.method_b]
        z, p = proportions_ztest([ka, kb], [810, 810])
        assert pair.z_naive == pytest.approx(z, rel=1e-10)
        assert pair.p_naive == pytest.approx(p, rel=1e-8)
        assert pair.difference == pytest.approx((ka - kb) / 810)
        assert pair.boot_low < pair.difference < pair.boot_high
        naive.append(p)
    holm = multipletests(naive, method="holm")[1]
    np.testing.assert_allclose([p.p_naive_holm for p in analysis.pairs], holm, rtol=1e-8)
    first = analysis.pairs[0]  # Guided Grad-CAM vs Guided Backprop: 16.79 points apart
    assert round(100 * first.difference, 2) == 16.79
    assert first.p_boot_holm < 0.001


def test_discrimination_n_options_sets_chance_and_validates():
    j = paper_judgments()
    row = discrimination_table(j, n_options=3, n_boot=0)[0]
    assert row.chance == pytest.approx(1 / 3)
    assert row.binomial_p == pytest.approx(sps.binomtest(496, 810, 1 / 3).pvalue)
    assert np.isnan(row.boot_low)  # n_boot=0 skips the bootstrap
    with pytest.raises(ValueError, match="n_options"):
        discrimination_table(j, n_options=1)
    with pytest.raises(ValueError, match="needs Judgments.correct"):
        discrimination_table(Judgments(method=[0], worker=[0], item=[0], method_names=("m",)))


def test_discrimination_alpha_and_majority_use_answers():
    # 3 raters x 4 units; the answer is the chosen category code
    matrix = np.array([[1, 2, 3, 3], [1, 2, 3, 1], [1, 1, 3, 3]], dtype=float)
    truth = np.array([1, 2, 3, 3])
    rater, unit = np.nonzero(np.ones_like(matrix))
    answer = matrix[rater, unit].astype(int)
    j = Judgments(
        method=np.zeros(answer.size, int),
        worker=rater,
        item=unit,
        method_names=("m",),
        correct=answer == truth[unit],
        answer=answer,
    )
    row = discrimination_table(j, n_boot=0, n_options=3)[0]
    assert row.alpha_nominal == pytest.approx(
        krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal")
    )
    assert row.majority_accuracy == 1.0  # each unit's plurality is the true category
    assert row.majority_ties == 0


def test_bootstrap_wider_than_wilson_when_workers_cluster():
    rng = np.random.default_rng(7)
    n_workers, per_worker = 40, 50
    worker = np.repeat(np.arange(n_workers), per_worker)
    ability = rng.choice([0.2, 0.95], n_workers)  # strongly clustered by worker
    j = Judgments(
        method=np.zeros(worker.size, int),
        worker=worker,
        item=rng.integers(0, 200, worker.size),
        method_names=("m",),
        correct=rng.random(worker.size) < ability[worker],
    )
    row = discrimination_table(j, n_boot=1000, seed=1)[0]
    assert row.boot_low < row.accuracy < row.boot_high
    assert (row.boot_high - row.boot_low) > 2.5 * (row.wilson_high - row.wilson_low)
    again = discrimination_table(j, n_boot=1000, seed=1)[0]
    assert (again.boot_low, again.boot_high) == (row.boot_low, row.boot_high)


def trust_judgments(seed=3):
    rng = np.random.default_rng(seed)
    n = 1200
    method = rng.integers(0, 2, n)
    towards_b = np.clip(np.rint(rng.normal(np.where(method == 0, 1.2, 0.3), 1.0)), -2, 2).astype(int)
    robot_a_is_model_a = rng.random(n) < 0.5
    # what the worker clicked: +x means Robot A is more reasonable
    towards_robot_a = np.where(robot_a_is_model_a, -towards_b, towards_b)
    return (
        Judgments(
            method=method,
            worker=rng.integers(0, 54, n),
            item=rng.integers(0, 40, n),
            method_names=("Guided Grad-CAM", "Guided Backprop"),
            score_towards_a=score_towards_model_a(towards_robot_a, robot_a_is_model_a),
        ),
        towards_b,
    )


@pytest.mark.parametrize("zero_method", ["wilcox", "pratt"])
def test_trust_table_matches_references(zero_method):
    j, towards_b = trust_judgments()
    rows = trust_table(j, n_boot=400, zero_method=zero_method)
    for m, row in enumerate(rows):
        x = towards_b[j.method == m]
        assert row.n_judgments == x.size
        assert row.mean == pytest.approx(x.mean())
        assert row.sd == pytest.approx(x.std(ddof=1))
        ref = sps.wilcoxon(x, zero_method=zero_method)
        assert row.wilcoxon_statistic == pytest.approx(ref.statistic)
        assert row.wilcoxon_p == pytest.approx(ref.pvalue, rel=1e-9)
        counts = [row.count_minus2, row.count_minus1, row.count_0, row.count_plus1, row.count_plus2]
        assert counts == np.bincount(x + 2, minlength=5).tolist()
        assert row.n_zero == row.count_0
        assert row.share_plus2 == pytest.approx(row.count_plus2 / x.size)
        assert row.boot_low < row.mean < row.boot_high
    assert rows[0].mean > 1.0 > rows[1].mean  # sign correction towards model B is applied


def test_trust_alpha_ordinal_matches_package():
    rng = np.random.default_rng(4)
    truth = rng.integers(-2, 3, 30)
    matrix = np.clip(truth + rng.integers(-1, 2, (8, 30)), -2, 2).astype(float)
    matrix[rng.random(matrix.shape) < 0.25] = np.nan
    rater, unit = np.nonzero(~np.isnan(matrix))
    towards_b = matrix[rater, unit].astype(int)
    j = Judgments(
        method=np.zeros(unit.size, int),
        worker=rater,
        item=unit,
        method_names=("m",),
        score_towards_a=-towards_b,
    )
    row = trust_table(j, n_boot=0)[0]
    ref = krippendorff.alpha(
        reliability_data=matrix, level_of_measurement="ordinal", value_domain=[-2, -1, 0, 1, 2]
    )
    assert row.alpha_ordinal == pytest.approx(ref, abs=1e-10)


def test_trust_validates_input():
    j, _ = trust_judgments()
    with pytest.raises(ValueError, match="zero_method"):
        trust_table(j, zero_method="drop")
    with pytest.raises(ValueError, match="needs Judgments.score_towards_a"):
        trust_table(Judgments(method=[0], worker=[0], item=[0], method_names=("m",), correct=[True]))


def test_score_towards_model_a_flips_when_robot_a_is_model_b():
    assert score_towards_model_a([2, 2, -1, 0], [True, False, False, True]).tolist() == [2, -2, 1, 0]


def test_catch_and_simulated_judgments():
    base = paper_judgments()
    n = len(base)
    is_catch = np.zeros(n, dtype=bool)
    is_catch[:10] = True
    sim = np.zeros(n, dtype=bool)
    sim[100:150] = True
    j = Judgments(
        method=base.method,
        worker=base.worker,
        item=base.item,
        method_names=base.method_names,
        correct=base.correct,
        is_catch=is_catch,
        is_simulated=sim,
    )
    assert discrimination_table(j, n_boot=0)[0].n_judgments == 800  # catch trials never count
    assert discrimination_table(j, n_boot=0, include_simulated=False)[0].n_judgments == 750


def test_exclusions_with_and_without():
    rng = np.random.default_rng(8)
    n_workers, per_worker = 30, 40
    worker = np.repeat(np.arange(n_workers), per_worker)
    n = worker.size
    is_catch = np.tile(np.arange(per_worker) < 4, n_workers)
    correct = rng.random(n) < 0.7
    correct[is_catch] = True
    bad = np.isin(worker, [3, 17])  # these two fail every catch trial
    correct[bad & is_catch] = False
    rt = rng.gamma(3.0, 800.0, n)
    rt[worker == 5] = 200.0  # clicks through
    j = Judgments(
        method=rng.integers(0, 2, n),
        worker=worker,
        item=rng.integers(0, 25, n),
        method_names=("a", "b"),
        correct=correct,
        is_catch=is_catch,
        response_ms=rt,
    )
    rules = rules_from_json(
        [
            {"rule": "catch_accuracy_below", "threshold": 0.75},
            {"rule": "median_trial_time_below", "seconds": 0.5},
        ]
    )
    result = analyse_with_and_without_exclusions(j, rules, kind="discrimination", n_boot=100)
    report = result.exclusions
    assert report.excluded_workers.tolist() == [3, 5, 17]
    assert [(c.n_workers, c.n_judgments) for c in report.per_rule] == [(2, 72), (1, 36)]
    without = {r.method: r for r in result.without_exclusions.rows}
    with_ = {r.method: r for r in result.with_exclusions.rows}
    analysable = ~is_catch
    for m, name in enumerate(("a", "b")):
        in_method = analysable & (j.method == m)
        assert without[name].n_judgments == in_method.sum()
        assert with_[name].n_judgments == (in_method & ~np.isin(worker, [3, 5, 17])).sum()
        assert without[name].n_workers == 30
        assert with_[name].n_workers == 27
        kept = in_method & ~np.isin(worker, [3, 5, 17])
        assert with_[name].accuracy == pytest.approx(correct[kept].mean())
    assert result.with_exclusions.n_excluded_workers == 3
    assert result.without_exclusions.n_excluded_workers == 0
    trust_free = analyse_with_and_without_exclusions(
        Judgments(
            method=j.method,
            worker=j.worker,
            item=j.item,
            method_names=j.method_names,
            correct=correct,
            is_catch=is_catch,
            score_towards_a=rng.integers(-2, 3, n),
        ),
        rules[:1],
        kind="trust",
        n_boot=50,
    )
    assert sum(r.n_judgments for r in trust_free.with_exclusions.rows) == analysable.sum() - 2 * 36
    with pytest.raises(ValueError, match="kind"):
        analyse_with_and_without_exclusions(j, rules, kind="bias")


def test_rows_as_dicts_and_empty_method():
    j = paper_judgments()
    j = Judgments(
        method=j.method,
        worker=j.worker,
        item=j.item,
        method_names=(*j.method_names, "Occlusion"),
        correct=j.correct,
    )
    rows = rows_as_dicts(discrimination_table(j, n_boot=50))
    assert rows[-1]["method"] == "Occlusion"
    assert rows[-1]["n_judgments"] == 0
    assert np.isnan(rows[-1]["accuracy"])
    assert np.isnan(rows[-1]["boot_low"])
    assert set(rows[0]) >= {
        "accuracy",
        "wilson_low",
        "boot_high",
        "binomial_p",
        "alpha_nominal",
        "majority_accuracy",
    }


def test_tables_on_empty_and_tiny_input_give_nan_not_errors():
    empty = np.array([], dtype=int)
    j = Judgments(
        method=empty,
        worker=empty,
        item=empty,
        method_names=("a", "b"),
        correct=np.array([], bool),
        score_towards_a=np.array([], np.int8),
    )
    d = discrimination_analysis(j, n_boot=10)
    assert [r.n_judgments for r in d.rows] == [0, 0]
    assert np.isnan(d.rows[0].accuracy)
    assert np.isnan(d.pairs[0].p_boot_holm)
    t = trust_table(j, n_boot=10)
    assert np.isnan(t[0].mean)
    assert np.isnan(t[0].wilcoxon_p)
    one = Judgments(
        method=[0], worker=[3], item=[5], method_names=("a",), correct=[True], score_towards_a=[0]
    )
    row = discrimination_table(one, n_boot=10)[0]
    assert (row.accuracy, row.boot_low, row.boot_high) == (1.0, 1.0, 1.0)
    assert np.isnan(row.alpha_nominal)  # a single rating is not pairable
    assert np.isnan(trust_table(one, n_boot=10)[0].wilcoxon_p)  # only a zero difference
