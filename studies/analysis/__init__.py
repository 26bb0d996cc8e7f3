"""Statistics of study results on numpy arrays; never imports Django.

Public surface (see the modules for formulas and references):

* :class:`Judgments` - columnar container, one array per field.
* :func:`discrimination_analysis` / :func:`discrimination_table`,
  :func:`trust_analysis` / :func:`trust_table` - per-method rows and pairwise comparisons.
* :func:`rules_from_json`, :func:`apply_exclusions`,
  :func:`analyse_both` (a design names the table function;
  :func:`analyse_with_and_without_exclusions` names it by string) - quality control.
* :func:`arm_judgments`, :func:`analyse_by_arm` - any analysis on each between-subject arm.
* :func:`accuracy_ratio`, :func:`accuracy_difference` - between-arm contrasts (utility of
  explanations; human + AI against a reference) with a two-way cluster bootstrap interval.
* :func:`mixed_logit` - optional ``correct ~ method + (1|worker) + (1|item)`` (statsmodels,
  imported lazily).
* :mod:`studies.analysis.stats` - the primitives (Wilson, binomial test, Holm,
  two-way cluster bootstrap, Krippendorff's alpha, majority vote).
"""

from studies.analysis.arms import analyse_by_arm, arm_judgments
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
from studies.analysis.ratio import AccuracyDifference, AccuracyRatio, accuracy_difference, accuracy_ratio
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
    "AccuracyDifference",
    "AccuracyRatio",
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
    "accuracy_difference",
    "accuracy_ratio",
    "analyse_both",
    "analyse_by_arm",
    "analyse_with_and_without_exclusions",
    "apply_exclusions",
    "arm_judgments",
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
