"""Coverage and width of the between-arm intervals (``accuracy_ratio``, ``accuracy_difference``), simulated.

Each simulated study has two arms of ``W`` workers; a pool of ``I`` items is drawn afresh and each
worker judges ``min(I, --per-worker)`` of them, at random. ``P(correct) = base[arm] + u_worker +
v_item`` with ``u ~ U(+-sqrt(3) sw)`` and ``v ~ U(+-sqrt(3) si)`` (additive, so each arm's true
accuracy over new workers and items is exactly ``base[arm]``; the defaults never leave [0, 1]).
The reference of ``accuracy_difference`` (e.g. the AI alone) is right on each item with probability
``--ref``, so the true difference of arm ``expl`` is ``base[0] - ref``.

Prints, per (workers per arm, items), how often the 95% percentile intervals of the two-way
cluster bootstrap (workers within arm x items) contain the truth, and their mean widths: figures,
no pass/fail. Expect coverage above 95% where the judgment-level noise dominates (few judgments
per worker and per item: the pigeonhole bootstrap counts it up to three times) and close to 95%
where worker effects dominate.

Usage:
    python bench/ratio_coverage.py [--studies 200] [--n-boot 1000] [--workers 10,30,100] [--items 10,40,100]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studies.analysis import Judgments, accuracy_difference, accuracy_ratio


def simulate(rng: np.random.Generator, *, workers: int, items: int, per_worker: int, base: tuple[float, float],
             sw: float, si: float, ref: float) -> tuple[Judgments, np.ndarray]:  # fmt: skip
    """One study's judgments and the reference's accuracy per item."""
    n = 2 * workers
    k = min(items, per_worker)
    arm = np.repeat([0, 1], workers)
    u = rng.uniform(-np.sqrt(3) * sw, np.sqrt(3) * sw, n)
    v = rng.uniform(-np.sqrt(3) * si, np.sqrt(3) * si, items)
    item = np.argsort(rng.random((n, items)), axis=1)[:, :k]  # k distinct items per worker
    p = np.asarray(base)[arm][:, None] + u[:, None] + v[item]
    correct = rng.random((n, k)) < p
    j = Judgments(method=np.zeros(n * k, np.intp), worker=np.repeat(np.arange(n), k), item=item.ravel(),
                  method_names=("m",), correct=correct.ravel(), arm=np.repeat(arm, k),
                  arm_names=("expl", "control"))  # fmt: skip
    return j, (rng.random(items) < ref).astype(float)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--workers", default="10,30,100", help="workers per arm, comma-separated")
    parser.add_argument("--items", default="10,40,100", help="items in the pool, comma-separated")
    parser.add_argument("--per-worker", type=int, default=40, help="items judged by each worker (at most)")
    parser.add_argument("--base", default="0.7,0.5", help="true accuracy of arm expl, of arm control")
    parser.add_argument("--sw", type=float, default=0.1, help="SD of the worker effects (probability scale)")
    parser.add_argument("--si", type=float, default=0.05, help="SD of the item effects (probability scale)")
    parser.add_argument("--ref", type=float, default=0.6, help="the reference's accuracy (accuracy_difference)")
    args = parser.parse_args()
    base = tuple(float(x) for x in args.base.split(","))
    true_ratio, true_diff = base[0] / base[1], base[0] - args.ref
    print(f"true ratio {true_ratio:.3f}, true difference {true_diff:+.3f}; {args.studies} studies, "
          f"{args.n_boot} replicates, worker sd {args.sw}, item sd {args.si}, <= {args.per_worker} items per worker")
    print(f"{'workers/arm':>11} {'items':>5} {'judgments':>9} | {'ratio cover':>11} {'width':>6} | "
          f"{'diff cover':>10} {'width':>6} | {'s/study':>7}")  # fmt: skip
    rng = np.random.default_rng(0)
    for workers in (int(x) for x in args.workers.split(",")):
        for items in (int(x) for x in args.items.split(",")):
            start = time.perf_counter()
            hits, widths, n = np.zeros(2), np.zeros(2), 0
            for study in range(args.studies):
                j, reference = simulate(rng, workers=workers, items=items, per_worker=args.per_worker, base=base,
                                        sw=args.sw, si=args.si, ref=args.ref)  # fmt: skip
                r = accuracy_ratio(j, numerator_arm="expl", denominator_arm="control", n_boot=args.n_boot, seed=study)
                # the reference's truth is its population accuracy: the items' draws are part of the noise
                d = accuracy_difference(j, reference=reference, arm="expl", n_boot=args.n_boot, seed=study)
                for k, (low, high, truth) in enumerate(((r.boot_low, r.boot_high, true_ratio),
                                                        (d.boot_low, d.boot_high, true_diff))):  # fmt: skip
                    hits[k] += low <= truth <= high
                    widths[k] += high - low
                n = len(j)
            seconds = (time.perf_counter() - start) / args.studies
            cover, width = hits / args.studies, widths / args.studies
            print(f"{workers:>11} {items:>5} {n:>9} | {cover[0]:>11.3f} {width[0]:>6.3f} | "
                  f"{cover[1]:>10.3f} {width[1]:>6.3f} | {seconds:>7.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
