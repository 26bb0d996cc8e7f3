"""Analysis by between-subject arm and the between-arm contrasts, against independent references.

* the per-arm tables equal the whole-study table computed on each arm's subset;
* ``accuracy_ratio`` / ``accuracy_difference`` point estimates equal a numpy computation by hand;
* their intervals equal ``scipy.stats.bootstrap`` (percentile, each arm resampled on its own) where
  the two-way bootstrap reduces to a worker bootstrap (one item), within Monte-Carlo tolerance;
* the ratio's interval covers a known true ratio about as often as it says (200 simulated studies).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from studies.analysis import (
    Judgments,
    accuracy_difference,
    accuracy_ratio,
    analyse_by_arm,
    arm_judgments,
    discrimination_analysis,
)
from studies.analysis.stats import two_way_cluster_bootstrap_means


def _study(rng: np.random.Generator, *, workers: int = 12, items: int = 8, base=(0.8, 0.6)) -> Judgments:
    """Two arms (``expl``, ``control``), workers alternate; arm 0 judges methods 0 and 1, arm 1 method 2."""
    w = np.repeat(np.arange(workers), items)
    i = np.tile(np.arange(items), workers)
    arm = (w % 2).astype(np.intp)
    method = np.where(arm == 0, i % 2, 2)
    p = np.asarray(base)[arm]
    correct = rng.random(w.size) < p
    is_catch = (i == items - 1)
    return Judgments(method=method, worker=w, item=i, method_names=("gradcam", "saliency", "none"),
                     correct=correct, is_catch=is_catch, arm=arm, arm_names=("expl", "control"))  # fmt: skip


# --- the container ---------------------------------------------------------------------------------------


def test_arm_codes_are_checked_and_kept_by_subset():
    j = _study(np.random.default_rng(0))
    part = j.subset(j.arm == 1)
    assert part.arm_names == ("expl", "control")
    assert (part.arm == 1).all()
    with pytest.raises(ValueError, match="arm_names"):
        Judgments(method=[0], worker=[0], item=[0], method_names=("a",), arm=[2], arm_names=("x", "y"))
    with pytest.raises(ValueError, match="without Judgments.arm"):
        Judgments(method=[0], worker=[0], item=[0], method_names=("a",), arm_names=("x",))
    with pytest.raises(ValueError, match="not unique"):
        Judgments(method=[0], worker=[0], item=[0], method_names=("a",), arm=[0], arm_names=("x", "x"))
    no_arm = Judgments(method=[0, 0], worker=[0, 1], item=[0, 0], method_names=("a",), arm=[-1, 0], arm_names=("x",))
    assert no_arm.arm.tolist() == [-1, 0]
    assert arm_judgments(j.subset(np.ones(len(j), bool))) != ()
    assert arm_judgments(Judgments(method=[0], worker=[0], item=[0], method_names=("a",))) == ()


def test_per_arm_table_is_the_whole_study_table_on_the_arm_subset():
    j = _study(np.random.default_rng(1), workers=20)
    by_arm = dict(analyse_by_arm(j, lambda part: discrimination_analysis(part, n_boot=200, seed=3)))
    assert list(by_arm) == ["expl", "control"]
    assert [r.method for r in by_arm["expl"].rows] == ["gradcam", "saliency"]
    assert [r.method for r in by_arm["control"].rows] == ["none"]
    for code, name in enumerate(j.arm_names):
        whole = discrimination_analysis(j.subset(j.arm == code), n_boot=200, seed=3)
        rows = {r.method: r for r in whole.rows if r.n_judgments}
        assert {r.method: r for r in by_arm[name].rows} == rows
    # the pair within arm expl is the same comparison as on the subset
    whole_expl = discrimination_analysis(j.subset(j.arm == 0), n_boot=200, seed=3)
    pair = next(p for p in whole_expl.pairs if {p.method_a, p.method_b} == {"gradcam", "saliency"})
    assert by_arm["expl"].pairs[0].difference == pair.difference
    assert by_arm["expl"].pairs[0].boot_low == pair.boot_low


# --- the stratified bootstrap ----------------------------------------------------------------------------


def test_worker_strata_keep_each_arm_size_in_every_replicate():
    n0, n1 = 7, 13
    arm = np.r_[np.zeros(n0, np.intp), np.ones(n1, np.intp)]
    y = (arm == 0).astype(np.int8)  # one judgment per worker, on one shared item
    args = (y, np.zeros(y.size, np.intp), np.arange(y.size), np.zeros(y.size, np.intp))
    stratified = two_way_cluster_bootstrap_means(*args, n_groups=1, n_boot=300, seed=4, worker_strata=arm)
    np.testing.assert_allclose(stratified[0], n0 / (n0 + n1))
    pooled = two_way_cluster_bootstrap_means(*args, n_groups=1, n_boot=300, seed=4)
    assert pooled[0].std() > 0.05
    with pytest.raises(ValueError, match="two strata"):
        two_way_cluster_bootstrap_means(y, np.zeros(2, np.intp), [0, 0], [0, 1], n_groups=1, n_boot=5,
                                        worker_strata=[0, 1])  # fmt: skip


# --- point estimates against numpy -----------------------------------------------------------------------


def test_ratio_and_difference_point_estimates_by_hand():
    j = _study(np.random.default_rng(5), workers=30)
    main = ~j.is_catch
    acc = [j.correct[main & (j.arm == k)].mean() for k in (0, 1)]
    r = accuracy_ratio(j, numerator_arm="expl", denominator_arm="control", n_boot=100)
    assert r.ratio == pytest.approx(acc[0] / acc[1], rel=1e-12)
    assert (r.numerator_accuracy, r.denominator_accuracy) == pytest.approx(acc, rel=1e-12)
    assert r.numerator_n_judgments == int((main & (j.arm == 0)).sum())
    assert r.denominator_n_correct == int(j.correct[main & (j.arm == 1)].sum())
    assert (r.numerator_n_workers, r.denominator_n_workers, r.n_items) == (15, 15, 7)
    assert r.boot_low < r.ratio < r.boot_high
    flipped = accuracy_ratio(j, numerator_arm="control", denominator_arm="expl", n_boot=100)
    assert flipped.ratio == pytest.approx(1 / r.ratio)

    reference = np.linspace(0.0, 1.0, 8)  # per item code
    sel = main & (j.arm == 0)
    d = accuracy_difference(j, reference=reference, arm="expl", n_boot=100)
    assert d.team_accuracy == pytest.approx(j.correct[sel].mean())
    assert d.reference_accuracy == pytest.approx(reference[j.item[sel]].mean())
    assert d.difference == pytest.approx(np.mean(j.correct[sel] - reference[j.item[sel]]))
    assert d.n_judgments == int(sel.sum())
    assert d.n_workers == 15
    assert d.arm == "expl"
    everyone = accuracy_difference(j, reference=reference, n_boot=0)
    assert everyone.n_judgments == int(main.sum())
    assert np.isnan(everyone.boot_low)


def test_contrasts_reject_what_they_cannot_compute():
    j = _study(np.random.default_rng(6))
    with pytest.raises(ValueError, match="unknown arm"):
        accuracy_ratio(j, numerator_arm="expl", denominator_arm="nope")
    with pytest.raises(ValueError, match="both"):
        accuracy_ratio(j, numerator_arm="expl", denominator_arm="expl")
    with pytest.raises(ValueError, match="no arms"):
        accuracy_ratio(j.__class__(method=[0], worker=[0], item=[0], method_names=("a",), correct=[True]),
                       numerator_arm="a", denominator_arm="b")  # fmt: skip
    with pytest.raises(ValueError, match="item code"):
        accuracy_difference(j, reference=np.ones(3))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        accuracy_difference(j, reference=np.full(8, 1.5))


# --- intervals against scipy.stats.bootstrap ----------------------------------------------------------------


def _one_item(rng: np.random.Generator, n0: int, n1: int, k: int, p=(0.75, 0.55)) -> tuple[Judgments, list]:
    """Every judgment on one item (the item draw is always that item): a pure worker bootstrap.
    Workers differ (worker effect), each makes ``k`` judgments."""
    arm = np.r_[np.zeros(n0, np.intp), np.ones(n1, np.intp)]
    pw = np.clip(np.asarray(p)[arm] + rng.uniform(-0.2, 0.2, arm.size), 0, 1)
    correct = rng.random((arm.size, k)) < pw[:, None]
    j = Judgments(method=np.zeros(arm.size * k, np.intp), worker=np.repeat(np.arange(arm.size), k),
                  item=np.zeros(arm.size * k, np.intp), method_names=("m",), correct=correct.ravel(),
                  arm=np.repeat(arm, k), arm_names=("expl", "control"))  # fmt: skip
    per_worker = correct.mean(axis=1)  # equal k: the mean of worker means is the judgment mean
    return j, [per_worker[arm == 0], per_worker[arm == 1]]


def test_ratio_interval_matches_scipy_bootstrap_on_a_worker_only_case():
    j, (x0, x1) = _one_item(np.random.default_rng(7), 25, 30, 12)
    ours = accuracy_ratio(j, numerator_arm="expl", denominator_arm="control", n_boot=20000, seed=1)
    ref = sps.bootstrap((x0, x1), lambda a, b, axis: a.mean(axis) / b.mean(axis), vectorized=True,
                        n_resamples=20000, method="percentile", random_state=np.random.default_rng(2)).confidence_interval  # fmt: skip
    width = ref.high - ref.low
    print(f"ratio CI: ours [{ours.boot_low:.4f}, {ours.boot_high:.4f}], scipy [{ref.low:.4f}, {ref.high:.4f}]")
    assert ours.boot_low == pytest.approx(ref.low, abs=0.03 * width)
    assert ours.boot_high == pytest.approx(ref.high, abs=0.03 * width)


def test_difference_interval_matches_scipy_bootstrap_on_a_worker_only_case():
    j, (x0, _) = _one_item(np.random.default_rng(8), 40, 1, 10)
    reference = np.array([0.6])  # the AI alone is right on 60% of this item's trials
    ours = accuracy_difference(j, reference=reference, arm="expl", n_boot=20000, seed=3)
    ref = sps.bootstrap((x0 - 0.6,), np.mean, vectorized=True, n_resamples=20000, method="percentile",
                        random_state=np.random.default_rng(4)).confidence_interval  # fmt: skip
    width = ref.high - ref.low
    print(f"difference CI: ours [{ours.boot_low:.4f}, {ours.boot_high:.4f}], scipy [{ref.low:.4f}, {ref.high:.4f}]")
    assert ours.difference == pytest.approx(x0.mean() - 0.6)
    assert ours.boot_low == pytest.approx(ref.low, abs=0.03 * width)
    assert ours.boot_high == pytest.approx(ref.high, abs=0.03 * width)


# --- coverage on simulated studies --------------------------------------------------------------------------


def simulated_arm_study(rng: np.random.Generator, *, workers_per_arm: int, items: int, base=(0.7, 0.5),
                        worker_sd: float = 0.14, item_halfwidth: float = 0.05) -> Judgments:  # fmt: skip
    """Two arms judging the same freshly drawn items, every worker every item:
    ``P(correct) = base[arm] + u_worker + v_item`` with ``u ~ U(+-sqrt(3) worker_sd)``,
    ``v ~ U(+-item_halfwidth)`` (never clipped for the defaults), so each arm's true accuracy,
    over the populations of workers and items, is exactly ``base[arm]``."""
    n = 2 * workers_per_arm
    arm = np.repeat([0, 1], workers_per_arm)
    half = np.sqrt(3.0) * worker_sd
    u = rng.uniform(-half, half, n)
    v = rng.uniform(-item_halfwidth, item_halfwidth, items)
    p = np.asarray(base)[arm][:, None] + u[:, None] + v[None, :]
    correct = rng.random((n, items)) < p
    return Judgments(method=np.zeros(n * items, np.intp), worker=np.repeat(np.arange(n), items),
                     item=np.tile(np.arange(items), n), method_names=("m",), correct=correct.ravel(),
                     arm=np.repeat(arm, items), arm_names=("expl", "control"))  # fmt: skip


def test_ratio_interval_covers_the_true_ratio_about_as_often_as_it_says():
    rng = np.random.default_rng(2026)
    true_ratio = 0.7 / 0.5
    hits, widths = [], []
    for study in range(200):
        j = simulated_arm_study(rng, workers_per_arm=30, items=60)
        r = accuracy_ratio(j, numerator_arm="expl", denominator_arm="control", n_boot=1000, seed=study)
        hits.append(r.boot_low <= true_ratio <= r.boot_high)
        widths.append(r.boot_high - r.boot_low)
    coverage = float(np.mean(hits))
    print(f"ratio 95% CI coverage {coverage:.3f} over 200 studies, mean width {np.mean(widths):.3f}")
    assert 0.88 <= coverage <= 0.99
