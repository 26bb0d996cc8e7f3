"""Optional mixed-effects logistic model ``correct ~ 0 + method + (1|worker) + (1|item)``.

Fitted by variational Bayes with statsmodels' ``BinomialBayesMixedGLM`` (crossed random
intercepts for workers and items; Gaussian priors, sd ``fe_prior_sd`` on the fixed effects and
a log-normal prior on the random-effect SDs). statsmodels is imported lazily, so the rest of
the analysis does not need it. The cost grows with judgments x (workers + items); use it on
study-sized data (tens of thousands of judgments), not in a request loop.

Reference: statsmodels docs, "Generalized Linear Mixed Effects Models"
(``statsmodels.genmod.bayes_mixed_glm``); lme4's ``glmer`` fits the same model by maximum
likelihood.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike
from scipy import stats as sps

from studies.analysis.judgments import Judgments
from studies.analysis.stats import compact_codes

__all__ = ["MixedLogitResult", "MixedLogitRow", "mixed_logit"]


@dataclass(frozen=True)
class MixedLogitRow:
    """One method: log-odds of a correct answer for a typical worker on a typical item."""

    method: str
    n_judgments: int
    log_odds: float
    sd: float
    low: float
    high: float
    accuracy_typical: float


@dataclass(frozen=True)
class MixedLogitResult:
    """Per-method rows plus the estimated random-effect SDs (log-odds scale)."""

    rows: tuple[MixedLogitRow, ...]
    worker_sd: float
    item_sd: float
    n_judgments: int
    n_workers: int
    n_items: int


def mixed_logit(
    j: Judgments,
    *,
    confidence: float = 0.95,
    exclude_workers: ArrayLike | None = None,
    fe_prior_sd: float = 2.0,
    seed: int = 0,
) -> MixedLogitResult:
    """Fit ``correct ~ 0 + method + (1|worker) + (1|item)`` by variational Bayes.

    Cell-means coding: each method has its own coefficient, the log-odds of a correct answer
    for a worker and an item with random effect 0, so ``accuracy_typical = expit(log_odds)``.
    Intervals are ``mean +- z * posterior sd`` of the (mean-field) variational posterior.
    Methods without judgments get ``nan``. Catch trials are left out.

    Raises:
        ValueError: If ``correct`` is missing or no judgment remains.
    """
    from statsmodels.genmod.bayes_mixed_glm import BinomialBayesMixedGLM

    if j.correct is None:
        raise ValueError("mixed_logit needs Judgments.correct")
    keep = ~j.is_catch
    if exclude_workers is not None and np.size(exclude_workers):
        keep &= ~np.isin(j.worker, np.asarray(exclude_workers))
    if not keep.any():
        raise ValueError("mixed_logit: no judgments left to fit")
    method = j.method[keep]
    used, n_used = compact_codes(method)
    present = np.flatnonzero(np.bincount(method, minlength=len(j.method_names)) > 0)
    worker, n_workers = compact_codes(j.worker[keep])
    item, n_items = compact_codes(j.item[keep])
    n = method.size
    exog = np.zeros((n, n_used))
    exog[np.arange(n), used] = 1.0
    rows = np.arange(n)
    exog_vc = sp.csr_matrix(
        (np.ones(2 * n), (np.concatenate([rows, rows]), np.concatenate([worker, n_workers + item]))),
        shape=(n, n_workers + n_items),
    )
    ident = np.concatenate([np.zeros(n_workers, dtype=int), np.ones(n_items, dtype=int)])
    model = BinomialBayesMixedGLM(
        j.correct[keep].astype(float),
        exog,
        exog_vc,
        ident,
        vcp_p=1.0,
        fe_p=fe_prior_sd,
        fep_names=[j.method_names[m] for m in present],
        vcp_names=["worker", "item"],
    )
    fit = model.fit_vb(rng=np.random.default_rng(seed))
    z = float(sps.norm.ppf(0.5 + confidence / 2.0))
    counts = np.bincount(method, minlength=len(j.method_names))
    by_method = {int(m): k for k, m in enumerate(present)}
    out = []
    for code, name in enumerate(j.method_names):
        k = by_method.get(code)
        mean = float(fit.fe_mean[k]) if k is not None else float("nan")
        sd = float(fit.fe_sd[k]) if k is not None else float("nan")
        out.append(
            MixedLogitRow(
                method=name,
                n_judgments=int(counts[code]),
                log_odds=mean,
                sd=sd,
                low=mean - z * sd,
                high=mean + z * sd,
                accuracy_typical=float(1.0 / (1.0 + np.exp(-mean))),
            )
        )
    return MixedLogitResult(
        rows=tuple(out),
        worker_sd=float(np.exp(fit.vcp_mean[0])),
        item_sd=float(np.exp(fit.vcp_mean[1])),
        n_judgments=int(n),
        n_workers=n_workers,
        n_items=n_items,
    )
