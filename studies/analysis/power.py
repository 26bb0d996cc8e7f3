"""Sample-size planning by simulation: power and expected interval width (numpy + scipy, no Django).

The generative model of an accuracy-scored study (one judgment = one worker answers one item
under one method, right or wrong)::

    logit P(correct) = mu_m + u_w + v_i,   u_w ~ N(0, worker_sd^2),   v_i ~ N(0, item_sd^2)

``mu_m`` is chosen so that the *population-average* accuracy of method ``m``
(``E[expit(mu_m + u + v)]``) equals the accuracy given: what a pilot's raw proportion estimates.
``v_i`` is the item's (image x category, the *unit*) difficulty, shared by the unit's items under
every method, as the platform's items are (the same image and category shown with each method).

Allocation is balanced as the platform's is: ``workers * trials_per_worker`` judgments, each item
(unit x method) judged by ``judgments_per_item`` distinct workers, each worker's trials cycling
over the units' items so that methods are balanced within a worker and no worker sees an item twice.

Every simulated study is analysed as the study will be: per method the two-way cluster bootstrap
(:func:`studies.analysis.stats.two_way_cluster_bootstrap_means`) and its percentile interval, and
per pair of methods the percentile interval of the replicate differences (as
:func:`studies.analysis.tables.discrimination_analysis` computes its pairwise rows). The power of a
pair is the share of simulated studies whose difference interval excludes 0; the expected width is
the mean interval width over the simulations. The Wilson width (judgments treated as independent)
is reported beside it: the pigeonhole bootstrap is conservative (up to sqrt(3) wider with no
worker or item effects, see its docstring).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, special

from studies.analysis.stats import percentile_interval, two_way_cluster_bootstrap_means, wilson_interval

__all__ = ["Allocation", "PowerResult", "allocation", "intercepts_for", "simulate_power"]

_HERMITE_X, _HERMITE_W = np.polynomial.hermite_e.hermegauss(61)
_HERMITE_W = _HERMITE_W / _HERMITE_W.sum()


def intercepts_for(accuracies: Sequence[float], sd: float) -> NDArray[np.float64]:
    """Logit intercepts ``mu`` with ``E[expit(mu + sd * Z)] = accuracy`` (Z standard normal).

    With ``sd = 0`` this is ``logit(accuracy)``. Accuracies must lie strictly in (0, 1).
    """
    acc = np.asarray(accuracies, dtype=np.float64)
    if acc.size and ((acc <= 0) | (acc >= 1)).any():
        raise ValueError(f"accuracies must lie strictly between 0 and 1, got {acc.tolist()}")
    if sd < 0:
        raise ValueError(f"sd must be >= 0, got {sd}")
    if sd == 0:
        return special.logit(acc)

    def mean_acc(mu: float) -> float:
        return float(np.dot(_HERMITE_W, special.expit(mu + sd * _HERMITE_X)))

    return np.array([optimize.brentq(lambda mu, p=p: mean_acc(mu) - p, -40.0, 40.0) for p in acc])


@dataclass(frozen=True)
class Allocation:
    """Who judges what in a balanced study (one element per judgment, shared by the simulations)."""

    method: NDArray[np.intp]
    worker: NDArray[np.intp]
    unit: NDArray[np.intp]
    n_units: int
    trials_per_worker: int


def allocation(
    *, n_methods: int, workers: int, trials_per_worker: int, judgments_per_item: int
) -> Allocation:
    """The balanced allocation: ``ceil(workers * trials / judgments_per_item)`` items (rounded up to
    whole units of ``n_methods`` items), slot ``s`` of the study (worker ``s // trials``) judging item
    ``s mod n_items``; item ``i`` is unit ``i // n_methods`` under method ``i mod n_methods``. Each item
    gets ``judgments_per_item`` judgments (the last ones one fewer where the numbers do not divide).
    A worker's trials are capped at the number of items (no worker sees an item twice)."""
    for name, value in (("n_methods", n_methods), ("workers", workers), ("trials_per_worker", trials_per_worker),
                        ("judgments_per_item", judgments_per_item)):  # fmt: skip
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    total = workers * trials_per_worker
    n_units = max(1, -(-total // (judgments_per_item * n_methods)))
    n_items = n_units * n_methods
    trials = min(trials_per_worker, n_items)
    slots = np.arange(workers * trials, dtype=np.intp)
    item = slots % n_items
    return Allocation(method=item % n_methods, worker=slots // trials, unit=item // n_methods, n_units=n_units,
                      trials_per_worker=trials)  # fmt: skip


@dataclass(frozen=True)
class PowerResult:
    """What one planned sample is expected to give.

    Attributes:
        method_names: The methods, in the order of the per-method arrays.
        accuracies: Population-average accuracy assumed per method.
        workers, trials_per_worker, judgments_per_item: The planned sample.
        n_judgments: Judgments per method in each simulated study.
        n_items: Items (units) per method.
        ci_width: Mean width of the method's cluster-bootstrap interval over the simulations.
        wilson_width: Mean width of the method's Wilson interval (judgments as independent).
        pairs: ``(method_a, method_b)`` per comparison (the order of the analysis's pairwise rows).
        power: Share of simulations whose interval of ``acc_a - acc_b`` excludes 0, per pair.
        diff_width: Mean width of the difference's interval, per pair.
        n_sim, n_boot, confidence: The simulation's settings.
    """

    method_names: tuple[str, ...]
    accuracies: tuple[float, ...]
    workers: int
    trials_per_worker: int
    judgments_per_item: int
    n_judgments: tuple[int, ...]
    n_items: int
    ci_width: tuple[float, ...]
    wilson_width: tuple[float, ...]
    pairs: tuple[tuple[str, str], ...]
    power: tuple[float, ...]
    diff_width: tuple[float, ...]
    n_sim: int
    n_boot: int
    confidence: float


def simulate_power(
    *,
    method_names: Sequence[str],
    accuracies: Sequence[float],
    workers: int,
    trials_per_worker: int,
    judgments_per_item: int,
    worker_sd: float = 0.5,
    item_sd: float = 0.5,
    n_sim: int = 200,
    n_boot: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> PowerResult:
    """Simulate ``n_sim`` studies of the planned size and analyse each as the study will be.

    All judgments of all simulations are drawn at once; the bootstrap runs once per simulation.
    A fixed ``seed`` gives the same result.
    """
    names = tuple(str(m) for m in method_names)
    if len(names) != len(accuracies) or not names:
        raise ValueError(
            f"one accuracy per method needed: {len(names)} methods, {len(accuracies)} accuracies"
        )
    if n_sim < 1 or n_boot < 2:
        raise ValueError(f"n_sim must be >= 1 and n_boot >= 2, got {n_sim}, {n_boot}")
    m = len(names)
    alloc = allocation(n_methods=m, workers=workers, trials_per_worker=trials_per_worker,
                       judgments_per_item=judgments_per_item)  # fmt: skip
    mu = intercepts_for(accuracies, float(np.hypot(worker_sd, item_sd)))
    rng = np.random.default_rng(seed)
    u = rng.normal(0.0, worker_sd, size=(n_sim, workers)) if worker_sd > 0 else np.zeros((n_sim, workers))
    v = (
        rng.normal(0.0, item_sd, size=(n_sim, alloc.n_units))
        if item_sd > 0
        else np.zeros((n_sim, alloc.n_units))
    )
    eta = mu[alloc.method][None, :] + u[:, alloc.worker] + v[:, alloc.unit]
    correct = rng.random(eta.shape) < special.expit(eta)  # (n_sim, n_judgments)

    n = np.bincount(alloc.method, minlength=m)
    k = np.stack([np.bincount(alloc.method, weights=row, minlength=m) for row in correct])  # (n_sim, m)
    w_low, w_high = wilson_interval(k, np.broadcast_to(n, k.shape), confidence)
    a_idx, b_idx = np.triu_indices(m, k=1)
    widths = np.empty((n_sim, m))
    diff_widths = np.empty((n_sim, a_idx.size))
    excludes = np.zeros((n_sim, a_idx.size), dtype=bool)
    boot_seeds = rng.integers(0, 2**63 - 1, size=n_sim)
    for s in range(n_sim):
        reps = two_way_cluster_bootstrap_means(correct[s], alloc.method, alloc.worker, alloc.unit, n_groups=m,
                                               n_boot=n_boot, seed=int(boot_seeds[s]))  # fmt: skip
        low, high = percentile_interval(reps, confidence, axis=1)
        widths[s] = high - low
        if a_idx.size:
            d_low, d_high = percentile_interval(reps[a_idx] - reps[b_idx], confidence, axis=1)
            diff_widths[s] = d_high - d_low
            excludes[s] = (d_low > 0) | (d_high < 0)
    return PowerResult(
        method_names=names,
        accuracies=tuple(float(a) for a in accuracies),
        workers=int(workers),
        trials_per_worker=alloc.trials_per_worker,
        judgments_per_item=int(judgments_per_item),
        n_judgments=tuple(int(x) for x in n),
        n_items=alloc.n_units,
        ci_width=tuple(float(x) for x in np.nanmean(widths, axis=0)),
        wilson_width=tuple(float(x) for x in np.nanmean(w_high - w_low, axis=0)),
        pairs=tuple((names[a], names[b]) for a, b in zip(a_idx.tolist(), b_idx.tolist(), strict=True)),
        power=tuple(float(x) for x in excludes.mean(axis=0)),
        diff_width=tuple(float(x) for x in np.nanmean(diff_widths, axis=0)) if a_idx.size else (),
        n_sim=int(n_sim),
        n_boot=int(n_boot),
        confidence=float(confidence),
    )
