"""Statistics of study results on numpy arrays; never imports Django.

Public surface (see the modules for formulas and references):

* :class:`Judgments` - columnar container, one array per field.
* :func:`discrimination_analysis` / :func:`discrimination_table`,
  :func:`trust_analysis` / :func:`trust_table` - per-method rows and pairwise comparisons.
* :func:`rules_from_json`, :func:`apply_exclusions`,
  :func:`analyse_both` (a design names the table function;
  :func:`analyse_with_and_without_exclusions` names it by string) - quality control.
* :func:`mixed_logit` - optional ``correct ~ method + (1|worker) + (1|item)`` (statsmodels,
  imported lazily).
* :mod:`studies.analysis.stats` - the primitives (Wilson, binomial test, Holm,
  two-way cluster bootstrap, Krippendorff's alpha, majority vote).
"""

from studies.analysis.judgments import Judgments, score_towards_model_a
from studies.analysis.mixed import MixedLogitResult, MixedLogitRow, mixed_logit
from studies.analysis.quality import (
    CatchAccuracyBelow,
    ExclusionReport,
    ExclusionRule,
    MedianTrialTimeBelow,
    RuleCount,
    StraightLining,
    TotalTimeBelow,
    apply_exclusions,
    rules_from_json,
    rules_to_json,
)
from studies.analysis.tables import (
    DiscriminationAnalysis,
    DiscriminationRow,
    PairwiseRow,
    StudyAnalysis,
    TrustAnalysis,
    TrustRow,
    analyse_both,
    analyse_with_and_without_exclusions,
    discrimination_analysis,
    discrimination_table,
    rows_as_dicts,
    trust_analysis,
    trust_table,
)

__all__ = [
    "CatchAccuracyBelow",
    "DiscriminationAnalysis",
    "DiscriminationRow",
    "ExclusionReport",
    "ExclusionRule",
    "Judgments",
    "MedianTrialTimeBelow",
    "MixedLogitResult",
    "MixedLogitRow",
    "PairwiseRow",
    "RuleCount",
    "StraightLining",
    "StudyAnalysis",
    "TotalTimeBelow",
    "TrustAnalysis",
    "TrustRow",
    "analyse_both",
    "analyse_with_and_without_exclusions",
    "apply_exclusions",
    "discrimination_analysis",
    "discrimination_table",
    "mixed_logit",
    "rows_as_dicts",
    "rules_from_json",
    "rules_to_json",
    "score_towards_model_a",
    "trust_analysis",
    "trust_table",
]
