"""Benchmark of the analysis core (numpy/scipy only, no database).

Synthetic study: 1,000,000 judgments, 10 methods, 5,000 workers, 2,000 items, each judgment
carrying both a correctness flag and a trust answer (so both tables run on 1M judgments),
5% catch trials, worker and item random effects. Prints wall-clock and process CPU seconds per stage (CPU time is the steadier figure on a
shared machine).

Usage:
    python bench/analysis_core.py [--n 1000000] [--methods 10] [--workers 5000]
                                  [--items 2000] [--n-boot 1000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studies.analysis import (
    Judgments,
    analyse_with_and_without_exclusions,
    apply_exclusions,
    discrimination_analysis,
    rules_from_json,
    trust_analysis,
)

RULES = [
    {"rule": "catch_accuracy_below", "threshold": 0.8},
    {"rule": "median_trial_time_below", "seconds": 1.0},
    {"rule": "total_time_below", "seconds": 60},
    {"rule": "straight_lining", "max_share_same_option": 0.9, "min_trials": 10},
]


def synthetic(n: int, n_methods: int, n_workers: int, n_items: int, seed: int = 0) -> Judgments:
    """Random crossed judgments with worker and item effects on the logit / score scale."""
    rng = np.random.default_rng(seed)
    method = rng.integers(0, n_methods, n)
    worker = rng.integers(0, n_workers, n)
    item = rng.integers(0, n_items, n)
    logit = (
        np.linspace(-0.3, 0.8, n_methods)[method]
        + rng.normal(0, 0.5, n_workers)[worker]
        + rng.normal(0, 0.7, n_items)[item]
    )
    is_catch = rng.random(n) < 0.05
    correct = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    correct[is_catch] = rng.random(int(is_catch.sum())) < 0.95  # catch trials are easy
    latent = -(np.linspace(0.2, 1.3, n_methods)[method] + rng.normal(0, 0.5, n_workers)[worker])
    score_a = np.clip(np.rint(latent + rng.normal(0, 1.0, n)), -2, 2).astype(np.int8)
    return Judgments(
        method=method,
        worker=worker,
        item=item,
        method_names=tuple(f"method_{m}" for m in range(n_methods)),
        correct=correct,
        score_towards_a=score_a,
        is_catch=is_catch,
        response_ms=rng.gamma(2.0, 1500.0, n),
        option_position=rng.integers(0, 2, n),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--methods", type=int, default=10)
    parser.add_argument("--workers", type=int, default=5_000)
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument("--n-boot", type=int, default=1_000)
    args = parser.parse_args()

    t0 = time.perf_counter()
    j = synthetic(args.n, args.methods, args.workers, args.items)
    print(
        f"synthetic data: {len(j):,} judgments, {args.methods} methods, "
        f"{args.workers:,} workers, {args.items:,} items "
        f"({time.perf_counter() - t0:.2f} s, not counted)"
    )
    kw = {"n_boot": args.n_boot, "seed": 0}
    stages: list[tuple[str, float, float]] = []
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, load average {load}")
    print(f"  {'stage':<44s} {'wall':>7s}   {'cpu':>7s}")

    def timed(label: str, fn):
        start, cpu = time.perf_counter(), time.process_time()
        result = fn()
        stages.append((label, time.perf_counter() - start, time.process_time() - cpu))
        print(f"  {label:<44s} {stages[-1][1]:7.2f} s {stages[-1][2]:7.2f} s", flush=True)
        return result

    rules = rules_from_json(RULES)
    report = timed("exclusions (4 rules)", lambda: apply_exclusions(j, rules))
    timed("discrimination table, all workers", lambda: discrimination_analysis(j, **kw))
    timed(
        "discrimination table, with exclusions",
        lambda: discrimination_analysis(j, exclude_workers=report.excluded_workers, **kw),
    )
    timed("trust table, all workers", lambda: trust_analysis(j, **kw))
    timed(
        "trust table, with exclusions",
        lambda: trust_analysis(j, exclude_workers=report.excluded_workers, **kw),
    )
    wall, cpu = sum(s[1] for s in stages), sum(s[2] for s in stages)
    print(f"  {'TOTAL (both kinds, with and without)':<44s} {wall:7.2f} s {cpu:7.2f} s")
    start = time.perf_counter()
    both = analyse_with_and_without_exclusions(j, rules, kind="discrimination", **kw)
    print(f"  {'analyse_with_and_without_exclusions (discr.)':<44s} {time.perf_counter() - start:7.2f} s")
    print(
        f"n_boot={args.n_boot}; excluded {report.n_workers_excluded:,} of "
        f"{report.n_workers_total:,} workers; first row: "
        f"{both.without_exclusions.rows[0].method} acc="
        f"{both.without_exclusions.rows[0].accuracy:.4f} "
        f"boot=[{both.without_exclusions.rows[0].boot_low:.4f}, "
        f"{both.without_exclusions.rows[0].boot_high:.4f}]"
    )


if __name__ == "__main__":
    main()
