"""Exclusion rules: JSON parsing with clear errors, per-worker flags, per-rule counts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from studies.analysis import (
    CatchAccuracyBelow,
    Judgments,
    MedianTrialTimeBelow,
    StraightLining,
    TotalTimeBelow,
    apply_exclusions,
    rules_from_json,
    rules_to_json,
)


def _judgments(rows):
    """rows: (worker, is_catch, correct, response_ms, option_position)."""
    worker, catch, correct, rt, pos = (np.array(c) for c in zip(*rows))
    return Judgments(
        method=np.zeros(len(rows), dtype=int),
        worker=worker,
        item=np.arange(len(rows)),
        method_names=("m",),
        correct=correct.astype(bool),
        is_catch=catch.astype(bool),
        response_ms=rt.astype(float),
        option_position=pos,
    )


def test_rules_round_trip_through_json():
    spec = [
        {"rule": "catch_accuracy_below", "threshold": 0.8},
        {"rule": "median_trial_time_below", "seconds": 1.5},
        {"rule": "total_time_below", "seconds": 60},
        {"rule": "straight_lining", "max_share_same_option": 0.9, "min_trials": 5},
    ]
    rules = rules_from_json(json.loads(json.dumps(spec)))
    assert [type(r) for r in rules] == [
        CatchAccuracyBelow,
        MedianTrialTimeBelow,
        TotalTimeBelow,
        StraightLining,
    ]
    assert rules[0].min_catch_trials == 1  # default filled in
    again = rules_from_json(json.loads(json.dumps(rules_to_json(rules))))
    assert again == rules
    assert rules_from_json(None) == []
    assert rules[3].describe() == "straight_lining(max_share_same_option=0.9, min_trials=5)"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"rule": "catch_accuracy_below"}, "must be a JSON list"),
        (["catch_accuracy_below"], r"#1: expected an object"),
        ([{"threshold": 0.8}], r'#1: expected an object with a "rule" key'),
        ([{"rule": "too_fast", "seconds": 1}], r"#1: unknown rule 'too_fast'; known rules"),
        ([{"rule": "total_time_below", "secs": 1}], r"unknown parameter\(s\) \['secs'\]"),
        (
            [{"rule": "total_time_below", "seconds": 1}, {"rule": "total_time_below"}],
            r"#2 .*missing parameter",
        ),
        ([{"rule": "catch_accuracy_below", "threshold": 1.2}], r"'threshold' = 1.2 is outside \[0.0, 1.0\]"),
        ([{"rule": "catch_accuracy_below", "threshold": "0.8"}], "must be a number"),
        ([{"rule": "catch_accuracy_below", "threshold": True}], "must be a number"),
        ([{"rule": "median_trial_time_below", "seconds": -1}], "outside"),
        ([{"rule": "straight_lining", "max_share_same_option": 0.9, "min_trials": 2.5}], "integer >= 1"),
    ],
)
def test_bad_rule_specs_raise_clear_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        rules_from_json(spec)


def test_catch_accuracy_rule():
    j = _judgments(
        # worker 0: 1/2 catch correct; worker 1: 2/2; worker 2: no catch trials
        [(0, 1, 1, 900, 0), (0, 1, 0, 900, 0), (0, 0, 1, 900, 0)]
        + [(1, 1, 1, 900, 0), (1, 1, 1, 900, 0), (1, 0, 0, 900, 0)]
        + [(2, 0, 0, 900, 0)]
    )
    assert CatchAccuracyBelow(0.8).flag(j).tolist() == [True, False, False]
    assert CatchAccuracyBelow(0.5).flag(j).tolist() == [False, False, False]  # 0.5 is not below 0.5
    assert CatchAccuracyBelow(0.8, min_catch_trials=3).flag(j).tolist() == [False, False, False]


def test_time_rules_match_per_worker_reference():
    rng = np.random.default_rng(2)
    n = 3000
    worker = rng.integers(0, 80, n) * 2  # codes 0, 2, 4, ... (odd codes have no judgments)
    rt = np.round(rng.gamma(1.5, 1200.0, n) * rng.choice([0.2, 1.0], 80)[worker // 2])
    j = Judgments(
        method=np.zeros(n, int), worker=worker, item=np.zeros(n, int), method_names=("m",), response_ms=rt
    )
    median_flags = MedianTrialTimeBelow(1.0).flag(j)
    total_flags = TotalTimeBelow(40.0).flag(j)
    for w in range(j.n_worker_codes):
        mine = rt[worker == w]
        assert median_flags[w] == (mine.size > 0 and np.median(mine) < 1000.0)
        assert total_flags[w] == (mine.size > 0 and mine.sum() < 40_000.0)
    assert 0 < median_flags.sum() < 80
    assert 0 < total_flags.sum() < 80


def test_time_rules_need_response_times():
    j = Judgments(method=[0], worker=[0], item=[0], method_names=("m",))
    with pytest.raises(ValueError, match="needs Judgments.response_ms"):
        MedianTrialTimeBelow(1.0).flag(j)


def test_straight_lining_rule():
    same = [(0, 0, 1, 900, 1)] * 10  # always the second option
    mixed = [(1, 0, 1, 900, p) for p in [0, 1] * 5]
    short = [(2, 0, 1, 900, 0)] * 4  # too few trials to judge
    unknown = [(3, 0, 1, 900, -1)] * 12  # position not recorded
    j = _judgments(same + mixed + short + unknown)
    assert StraightLining(0.9).flag(j).tolist() == [True, False, False, False]
    assert StraightLining(0.9, min_trials=3).flag(j).tolist() == [True, False, True, False]
    assert StraightLining(1.0).flag(j).tolist() == [False, False, False, False]


def test_apply_exclusions_counts_per_rule_and_union():
    rows = (
        [(0, 1, 0, 300, 0)] * 2  # worker 0: fails catch, fast, straight-lines
        + [(0, 0, 1, 300, 0)] * 10
        + [(1, 1, 1, 2000, 0)] * 2  # worker 1: good
        + [(1, 0, 1, 2000, p) for p in [0, 1] * 4]
        + [(2, 1, 1, 400, 1)]  # worker 2: passes catch, too fast
        + [(2, 0, 1, 400, p) for p in [0, 1] * 3]
    )
    j = _judgments(rows)
    rules = rules_from_json(
        [
            {"rule": "catch_accuracy_below", "threshold": 0.8},
            {"rule": "median_trial_time_below", "seconds": 1.0},
            {"rule": "straight_lining", "max_share_same_option": 0.9, "min_trials": 5},
        ]
    )
    report = apply_exclusions(j, rules)
    assert report.excluded_workers.tolist() == [0, 2]
    assert [(c.rule, c.n_workers, c.n_judgments) for c in report.per_rule] == [
        ("catch_accuracy_below", 1, 10),
        ("median_trial_time_below", 2, 16),
        ("straight_lining", 1, 10),
    ]
    assert report.n_workers_total == 3
    assert report.n_judgments_total == 10 + 8 + 6  # catch trials are not analysable
    assert (report.n_workers_excluded, report.n_judgments_excluded) == (2, 16)
    assert report.judgment_excluded(j).tolist() == [w in (0, 2) for w in j.worker.tolist()]
    assert report.worker_flags.shape == (3, 3)


def test_apply_no_rules():
    j = _judgments([(0, 0, 1, 900, 0), (1, 0, 1, 900, 0)])
    report = apply_exclusions(j, [])
    assert report.excluded_workers.size == 0
    assert report.per_rule == ()
    assert not report.judgment_excluded(j).any()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"worker": [0, 1]}, r"Judgments.worker has 2 elements, expected 3"),
        ({"item": [0, -1, 2]}, r"Judgments.item holds a negative code at index 1"),
        ({"method": [0, 1, 2]}, r"Judgments.method\[2\] = 2 has no name"),
        ({"method": [0.0, 1.0, 0.0]}, "must hold integer codes"),
        ({"score_towards_a": [0, 3, 1]}, r"score_towards_a\[1\] = 3 is outside -2..\+2"),
        ({"is_catch": [0, 2, 1]}, "must be boolean"),
        ({"method_names": ("a", "a")}, "not unique"),
        ({"response_ms": [1.0, -5.0, 2.0]}, "negative time"),
    ],
)
def test_judgments_validation(kwargs, message):
    base = {"method": [0, 1, 0], "worker": [0, 1, 2], "item": [0, 0, 1], "method_names": ("a", "b")}
    with pytest.raises(ValueError, match=message):
        Judgments(**{**base, **kwargs})


def test_judgments_from_labels_and_subset():
    j = Judgments.from_labels(
        method=["gradcam", "gbp", "gradcam"],
        worker=["w9", "w1", "w9"],
        item=[10, 20, 20],
        method_order=["gradcam", "gbp", "occlusion"],
        correct=[True, False, True],
    )
    assert j.method.tolist() == [0, 1, 0]
    assert j.worker.tolist() == [1, 0, 1]
    assert j.item.tolist() == [0, 1, 1]
    assert j.method_names == ("gradcam", "gbp", "occlusion")
    sub = j.subset(j.method == 0)
    assert len(sub) == 2
    assert sub.correct.all()
    with pytest.raises(ValueError, match=r"not in method_order: \['gbp'\]"):
        Judgments.from_labels(method=["gbp"], worker=[1], item=[1], method_order=["gradcam"])


def test_item_right_option_is_checked_and_kept_by_subset():
    j = Judgments(method=[0, 0, 0], worker=[0, 1, 2], item=[0, 1, 1], method_names=("a",),
                  item_right_option=[0, 2, 2])  # fmt: skip
    assert j.subset([False, True, True]).item_right_option.tolist() == [2, 2]
    assert Judgments(method=[0], worker=[0], item=[0], method_names=("a",)).item_right_option is None
    assert Judgments(method=[0], worker=[0], item=[0], method_names=("a",), item_right_option=[-1]).item_right_option.tolist() == [-1]
    with pytest.raises(ValueError, match="item_right_option"):
        Judgments(method=[0], worker=[0], item=[0], method_names=("a",), item_right_option=[-2])
    with pytest.raises(ValueError, match="item_right_option"):
        Judgments(method=[0, 0], worker=[0, 1], item=[0, 0], method_names=("a",), item_right_option=[0])
