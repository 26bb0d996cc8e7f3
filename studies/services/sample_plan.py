"""Sample-size planning of a study (issue #17 item 4): power and expected CI width before paying.

:func:`sample_plan_make` simulates the study's analysis (:mod:`studies.analysis.power`) for each
planned number of workers, with the study's methods, trials per participant and judgments per item.
The effect sizes are either assumed (per-method accuracies) or estimated from a pilot: the study's
own answered main judgments (``study_judgments_load``; catch trials left out, simulated observers
kept out), each method's raw proportion correct. The worker and item standard deviations (logit
scale) are given, default 0.5 each (a moderate spread; a pilot of a few workers cannot estimate
them reliably, so they are not estimated from it).

Only accuracy-scored designs (``Design.score_field == "accuracy"``) are planned for now; the study's
design is read only through :func:`studies.designs.design_for`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from studies.analysis.power import PowerResult, simulate_power
from studies.designs import design_for
from studies.models import Study
from studies.selectors.judgments import study_judgments_load

__all__ = ["SamplePlan", "pilot_accuracies", "sample_plan_make"]


@dataclass(frozen=True)
class SamplePlan:
    """The plan's inputs and, per planned number of workers, what the analysis is expected to give.

    Attributes:
        study_id: The study.
        method_names: The study's methods.
        accuracies: Population-average accuracy per method (assumed or from the pilot).
        source: ``"assumed"`` or ``"pilot"`` (with the pilot's judgments per method in ``pilot_n``).
        pilot_n: Judgments per method of the pilot (empty for assumed accuracies).
        worker_sd, item_sd: Random-effect standard deviations (logit scale).
        trials_per_worker, judgments_per_item: The allocation.
        n_sim, n_boot, seed: The simulation's settings.
        results: One :class:`~studies.analysis.power.PowerResult` per number of workers.
    """

    study_id: int
    method_names: tuple[str, ...]
    accuracies: tuple[float, ...]
    source: str
    pilot_n: tuple[int, ...]
    worker_sd: float
    item_sd: float
    trials_per_worker: int
    judgments_per_item: int
    n_sim: int
    n_boot: int
    seed: int
    results: tuple[PowerResult, ...]

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (pairs as ``"a - b"`` keys)."""
        out = asdict(self)
        out["results"] = [
            {
                "workers": r.workers,
                "trials_per_worker": r.trials_per_worker,
                "judgments_per_item": r.judgments_per_item,
                "n_items_per_method": r.n_items,
                "n_judgments": dict(zip(r.method_names, r.n_judgments, strict=True)),
                "ci_width": dict(zip(r.method_names, r.ci_width, strict=True)),
                "wilson_width": dict(zip(r.method_names, r.wilson_width, strict=True)),
                "power": {f"{a} - {b}": p for (a, b), p in zip(r.pairs, r.power, strict=True)},
                "diff_width": {f"{a} - {b}": w for (a, b), w in zip(r.pairs, r.diff_width, strict=True)},
            }
            for r in self.results
        ]
        return out


def pilot_accuracies(*, study: Study) -> tuple[dict[str, float], dict[str, int]]:
    """Each method's proportion correct among the study's answered main judgments by real workers,
    and its number of judgments. Raises ``ValueError`` if a method has none."""
    j = study_judgments_load(study=study).judgments
    keep = ~j.is_catch & ~j.is_simulated
    if j.correct is None:
        raise ValueError("the pilot's judgments carry no correctness")
    m = len(j.method_names)
    n = np.bincount(j.method[keep], minlength=m)
    k = np.bincount(j.method[keep], weights=j.correct[keep], minlength=m)
    missing = [name for name, count in zip(j.method_names, n, strict=True) if count == 0]
    if missing:
        raise ValueError(f"the pilot has no answered main judgment of {', '.join(missing)}: give --accuracy")
    # keep the estimate off 0 and 1 (a logit intercept must be finite): add half a success and failure
    acc = {name: float((k[g] + 0.5) / (n[g] + 1.0)) for g, name in enumerate(j.method_names)}
    return acc, {name: int(n[g]) for g, name in enumerate(j.method_names)}


def sample_plan_make(
    *,
    study: Study,
    workers: int | Sequence[int],
    judgments_per_item: int | None = None,
    accuracies: Mapping[str, float] | None = None,
    worker_sd: float = 0.5,
    item_sd: float = 0.5,
    n_sim: int = 200,
    n_boot: int = 200,
    seed: int = 0,
) -> SamplePlan:
    """Simulate the study's analysis for each number of ``workers``.

    Args:
        study: The study (its methods, ``trials_per_participant`` and, by default, ``judgments_per_item``).
        workers: Number(s) of workers to plan for.
        judgments_per_item: Workers per item (default: the study's).
        accuracies: Assumed population-average accuracy per method (every study method, no other);
            ``None``: estimated from the study's answered judgments (a pilot).
        worker_sd, item_sd: Random-effect standard deviations on the logit scale.
        n_sim, n_boot, seed: Simulated studies, bootstrap replicates per study, seed.

    Raises:
        ValueError: For a design not scored by accuracy, a study with between-subject arms, accuracies
            that do not name exactly the study's methods, or a pilot without judgments of a method.
    """
    design = design_for(study)
    if design.score_field != "accuracy":
        raise ValueError(
            f"sample planning: only accuracy-scored designs are planned for now; {design.name!r} is scored "
            f"by {design.score_field!r}"
        )
    if study.arms:
        raise ValueError("sample planning: studies with between-subject arms are not planned for now")
    worker_counts = (workers,) if isinstance(workers, int) else tuple(int(w) for w in workers)
    if not worker_counts or min(worker_counts) < 1:
        raise ValueError(f"workers must be positive, got {workers!r}")
    pilot_n: dict[str, int] = {}
    if accuracies is None:
        given, pilot_n = pilot_accuracies(study=study)
        source = "pilot"
        names = tuple(given)
    else:
        given = {str(k): float(v) for k, v in accuracies.items()}
        source = "assumed"
        names = tuple(str(m) for m in (study.methods or []))
        missing = [m for m in names if m not in given]
        extra = [m for m in given if m not in names]
        if missing or extra:
            raise ValueError(
                f"accuracies must name every method of the study ({', '.join(names)}); "
                f"missing: {missing or 'none'}, unknown: {extra or 'none'}"
            )
    acc = tuple(given[m] for m in names)
    jpi = int(judgments_per_item if judgments_per_item is not None else study.judgments_per_item)
    results = tuple(
        simulate_power(
            method_names=names,
            accuracies=acc,
            workers=w,
            trials_per_worker=study.trials_per_participant,
            judgments_per_item=jpi,
            worker_sd=worker_sd,
            item_sd=item_sd,
            n_sim=n_sim,
            n_boot=n_boot,
            seed=seed,
        )  # fmt: skip
        for w in worker_counts
    )
    return SamplePlan(
        study_id=study.pk,
        method_names=names,
        accuracies=acc,
        source=source,
        pilot_n=tuple(pilot_n.get(m, 0) for m in names) if pilot_n else (),
        worker_sd=float(worker_sd),
        item_sd=float(item_sd),
        trials_per_worker=int(study.trials_per_participant),
        judgments_per_item=jpi,
        n_sim=int(n_sim),
        n_boot=int(n_boot),
        seed=int(seed),
        results=results,
    )
