"""Train the synthetic world's CNN and its biased twin with the default config; print figures.

    python bench/synthetic_world.py [--threads N] [--seed S]

Prints wall time of each training (scene generation included), the process CPU time of the
whole call (training + evaluation; on a busy machine the CPU time with ``--threads 1`` is the
fairer figure) and top-2 accuracy on held-out scenes without marks (clean), with matched marks
and with swapped marks.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package, not bench/explainers.py

from explainers.worlds import synthetic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = synthetic.TrainConfig()
    print(f"config {config}; torch threads {torch.get_num_threads()}; load average {os.getloadavg()[0]:.1f}")
    print(f"{'model':<10} {'train s':>8} {'CPU s':>7} {'clean':>7} {'matched':>8} {'swapped':>8}")
    total = time.perf_counter()
    for name, biased in (("unbiased", False), ("biased", True)):
        cpu = time.process_time()
        _, metrics = synthetic.train_cnn(biased=biased, seed=args.seed, config=config)
        cpu = time.process_time() - cpu
        print(f"{name:<10} {metrics['train_seconds']:>8.1f} {cpu:>7.1f} {metrics['top2_clean']:>7.3f} "
              f"{metrics['top2_matched']:>8.3f} {metrics['top2_swapped']:>8.3f}")
    print(f"both models, evaluation included: {time.perf_counter() - total:.1f} s")


if __name__ == "__main__":
    main()
