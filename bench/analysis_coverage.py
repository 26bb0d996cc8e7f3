"""Coverage of the 95% intervals under crossed worker and item effects (a simulation).

Each replicate study: ``--workers`` workers x ``--items`` items, ``--n`` judgments of one
method, correctness ~ Bernoulli(expit(mu + u_worker + v_item)) with ``u ~ N(0, sw)``,
``v ~ N(0, si)``. The target is the population accuracy E[expit(mu + u + v)] over new workers
and items (computed by Monte Carlo). Prints how often the Wilson interval and the two-way
cluster (pigeonhole) bootstrap interval contain it, and their mean widths.

Usage:
    python bench/analysis_coverage.py [--studies 200] [--n-boot 400] [--sw 1.0] [--si 0.7]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studies.analysis.stats import (
    percentile_interval,
    two_way_cluster_bootstrap_means,
    wilson_interval,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--n-boot", type=int, default=400)
    parser.add_argument("--n", type=int, default=1500)
    parser.add_argument("--workers", type=int, default=40)
    parser.add_argument("--items", type=int, default=30)
    parser.add_argument("--mu", type=float, default=0.4)
    parser.add_argument("--sw", type=float, default=1.0, help="SD of worker effects (logit)")
    parser.add_argument("--si", type=float, default=0.7, help="SD of item effects (logit)")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    start = time.perf_counter()
    z = rng.normal(size=(2_000_000, 2))
    truth = float(np.mean(1 / (1 + np.exp(-(args.mu + args.sw * z[:, 0] + args.si * z[:, 1])))))
    hits = {"wilson": 0, "bootstrap": 0}
    widths = {"wilson": 0.0, "bootstrap": 0.0}
    group = np.zeros(args.n, dtype=int)
    for study in range(args.studies):
        worker = rng.integers(0, args.workers, args.n)
        item = rng.integers(0, args.items, args.n)
        logit = (
            args.mu + rng.normal(0, args.sw, args.workers)[worker] + rng.normal(0, args.si, args.items)[item]
        )
        correct = rng.random(args.n) < 1 / (1 + np.exp(-logit))
        reps = two_way_cluster_bootstrap_means(
            correct, group, worker, item, n_groups=1, n_boot=args.n_boot, seed=study
        )
        intervals = {
            "bootstrap": tuple(float(x[0]) for x in percentile_interval(reps, 0.95, axis=1)),
            "wilson": tuple(float(x) for x in wilson_interval(correct.sum(), args.n)),
        }
        for name, (low, high) in intervals.items():
            hits[name] += low <= truth <= high
            widths[name] += high - low
    print(
        f"{args.studies} simulated studies: {args.n} judgments, {args.workers} workers, "
        f"{args.items} items, worker SD {args.sw}, item SD {args.si} (logit); "
        f"population accuracy {truth:.4f}"
    )
    for name in ("wilson", "bootstrap"):
        print(
            f"  {name:<10s} 95% interval: coverage {hits[name] / args.studies:.3f}, "
            f"mean width {widths[name] / args.studies:.3f}"
        )
    print(f"  ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
