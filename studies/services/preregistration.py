"""A pre-registration of a study, generated from its configuration: Markdown and OSF-ready JSON.

``study_config_hash(study)`` is the SHA-256 of a canonical JSON (sorted keys) of what defines what
runs: the fields the reproducibility pack writes to ``study.json``
(``repro_pack.STUDY_CONFIG_FIELDS``) less the study's identity and lifecycle (name, public title and
description, slug, status, lease length), plus its arms, its model(s) (architecture, weights SHA-256,
preprocessing, classes) and its image set (the images' SHA-256). The results page shows the same
hash, so a reader can check that the study analysed is the one pre-registered.

``preregistration_make(study=..., hypotheses=..., sample_plan=...)`` fills the sections of OSF's
"OSF Preregistration" template as far as the study can: no branch on the kind, everything that
differs is read from the study's design (``design_for(study)``).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from studies.designs.registry import design_for
from studies.models import ClassifierModel, Image, Item, Study
from studies.services.repro_pack import STUDY_CONFIG_FIELDS

__all__ = ["CONFIG_HASH_FIELDS", "Preregistration", "preregistration_make", "study_config", "study_config_hash"]

#: fields of the pack's configuration that name or schedule the study without changing what runs
NOT_HASHED = frozenset({"name", "public_title", "public_description", "slug", "status", "lease_seconds"})
#: the ``Study`` fields the configuration hash covers (besides arms, models and images)
CONFIG_HASH_FIELDS = tuple(name for name in STUDY_CONFIG_FIELDS if name not in NOT_HASHED) + ("arms",)

TO_BE_WRITTEN = "To be written by the researcher."
NOT_COMPUTED = "Not computed."


def _model(model: ClassifierModel) -> dict[str, Any]:
    return {"arch": model.arch, "weights_sha256": model.weights_sha256, "target_layer": model.target_layer,
            "input_size": model.input_size, "mean": model.mean, "std": model.std,
            "class_names": list(model.class_names or [])}  # fmt: skip


def study_config(study: Study) -> dict[str, Any]:
    """The hashed configuration of ``study`` (JSON-serialisable)."""
    config: dict[str, Any] = {name: getattr(study, name) for name in CONFIG_HASH_FIELDS}
    models = []
    if study.model_id:
        models.append(_model(study.model))
    if study.model_pair_id:
        pair = study.model_pair
        models += [_model(pair.model_a), _model(pair.model_b)]
        config["model_pair_relation"] = pair.relation
    config["models"] = models
    config["images_sha256"] = list(
        Image.objects.filter(image_set_id=study.image_set_id).order_by("sha256").values_list("sha256", flat=True)
    )
    return config


def study_config_hash(study: Study) -> str:
    """SHA-256 (hex) of the canonical JSON of :func:`study_config`."""
    text = json.dumps(study_config(study), sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


RULE_WORDS = {
    "catch_accuracy_below": "a worker whose catch-trial accuracy is below {threshold} is excluded "
                            "(workers with fewer than {min_catch_trials} catch trials are not judged)",
    "median_trial_time_below": "a worker whose median response time over all trials is below {seconds} s is excluded",
    "total_time_below": "a worker whose trial times sum to less than {seconds} s is excluded",
    "straight_lining": "a worker who clicks the same screen position in more than {max_share_same_option} of "
                       "their trials is excluded (judged from {min_trials} trials on)",
}  # fmt: skip
RULE_DEFAULTS = {"catch_accuracy_below": {"min_catch_trials": 1}, "straight_lining": {"min_trials": 10}}


def exclusion_rule_text(rule: dict[str, Any]) -> str:
    """One stored exclusion rule in words (its JSON when the rule is unknown)."""
    name = rule.get("rule", "")
    params = {**RULE_DEFAULTS.get(name, {}), **{k: v for k, v in rule.items() if k != "rule"}}
    try:
        return RULE_WORDS[name].format(**params)
    except KeyError:
        return json.dumps(rule, sort_keys=True)


RANDOMIZATION = [
    "Item allocation: each next trial is the main item with the fewest judgments (answered or leased) "
    "that the participant has not seen; ties are broken by a rank drawn once from the study seed "
    "(`Item.tie_rank`); an item stops being offered once it has its judgments per item.",
    "Per participant and trial, the option order and the side of each map (Robot A left or right, "
    "where the design shows two) are drawn with a generator keyed by HMAC-SHA256 of "
    "`seed:participant token:label` under a server-side key, and stored with the assignment.",
    "Catch trials are placed in slots drawn with the same keyed generator, never as the first trial.",
    "Arm assignment (between-subject arms only): each new participant gets the arm with the fewest "
    "participants so far that neither declined nor were screened out; ties are drawn with the keyed "
    "generator (label `arm`).",
]


@dataclass(frozen=True)
class Preregistration:
    """A study's pre-registration, as OSF sections; :meth:`markdown` and :meth:`osf_json` render it."""

    study_name: str
    config_hash: str
    sections: dict[str, Any] = field(default_factory=dict)

    def osf_json(self) -> dict[str, Any]:
        """The OSF Preregistration sections as a JSON-serialisable dict, with the configuration hash."""
        return {"template": "OSF Preregistration", "title": self.study_name, "config_hash": self.config_hash,
                **self.sections}  # fmt: skip

    def markdown(self) -> str:
        """The pre-registration as Markdown: one ``##`` heading per section."""
        lines = [f"# Pre-registration: {self.study_name}", "",
                 f"Configuration hash (SHA-256): `{self.config_hash}`", ""]  # fmt: skip
        for title, body in self.sections.items():
            lines += [f"## {title.replace('_', ' ').capitalize()}", ""]
            lines += _markdown_body(body)
            lines.append("")
        return "\n".join(lines)


def _markdown_body(body: Any) -> list[str]:
    if isinstance(body, str):
        return [body]
    if isinstance(body, list):
        return [f"- {item}" for item in body] or ["- none"]
    out = []
    for key, value in body.items():
        label = key.replace("_", " ").capitalize()
        if isinstance(value, list):
            out.append(f"- {label}:" + ("" if value else " none"))
            out += [f"  - {v}" for v in value]
        elif isinstance(value, dict):
            out.append(f"- {label}: `{json.dumps(value, sort_keys=True)}`")
        else:
            out.append(f"- {label}: {value}")
    return out


def preregistration_make(*, study: Study, hypotheses: str = "", sample_plan: dict | None = None) -> Preregistration:
    """Fill OSF's "OSF Preregistration" sections from ``study`` and its design.

    Args:
        study: The study.
        hypotheses: The researcher's hypotheses (empty: the export says they are to be written).
        sample_plan: Optional sample-size justification: ``{"justification": str, ...}``; any other
            keys are listed as given.
    """
    design = design_for(study)
    arms = list(study.arms or [])
    n_main = Item.objects.filter(study_id=study.pk, role=Item.Role.MAIN).count()
    planned = n_main * study.judgments_per_item
    min_workers = math.ceil(planned / study.trials_per_participant) if study.trials_per_participant else 0
    models = [m.name for m in design.study_models(study)] if not design.config_errors(study) else []
    rules = [exclusion_rule_text(r) for r in (study.exclusion_rules or [])]
    a, b = design.model_names(study)
    plan = dict(sample_plan or {})
    sections: dict[str, Any] = {
        "hypotheses": hypotheses.strip() or TO_BE_WRITTEN,
        "design": {
            "design": design.label or design.name,
            "kind": design.name,
            "question": study.question or design.default_question,
            "trial_shows": f"{len(design.sides)} image slot(s) ({', '.join(design.sides)}): explanations of "
                           f"{'model A and model B' if design.models_from == 'pair' else 'one model'}"
                           f" ({', '.join(models) or 'not set'}), methods {', '.join(study.methods or [])}",
            "answer": design.trial_schema().get("answer", ""),
            "assignment": ("between-subject: each participant is assigned one arm and sees only its methods "
                           "(catch and practice items are shared)") if arms
                          else "within-subject: every participant may see every method",
            "arms": [f"{arm.get('name')}: {', '.join(arm.get('methods', []))}" for arm in arms],
            "practice": f"{study.practice_trials} practice trial(s), pass fraction {study.practice_pass_fraction}, "
                        f"{study.practice_attempts} attempt(s)",
            "catch_trials_per_participant": study.catch_trials,
            "platform": study.platform,
            "consent_version": study.consent_version,
        },
        "randomization": RANDOMIZATION + [f"Study seed: {study.seed}."],
        "sampling_plan": {
            "main_items": n_main,
            "judgments_per_item": study.judgments_per_item,
            "trials_per_participant": study.trials_per_participant,
            "planned_judgments": planned,
            "minimum_workers": min_workers,
            "stopping_rule": "data collection stops when every main item has its judgments per item",
            "sample_size_justification": plan.pop("justification", "") or NOT_COMPUTED,
            **plan,
        },
        "variables": {
            "manipulated": f"explanation method ({', '.join(study.methods or [])})"
                           + (", between-subject arms" if arms else ""),
            "measured": design.trial_schema().get("answer", ""),
            "score": design.score_caption.format(model_a=a or "A", model_b=b or "B"),
            "score_field": design.score_field,
            "indices": f"{design.analysis_name}: per method, from the design's analysis",
        },
        "exclusion_rules": rules or ["none: every worker is analysed"],
        "analysis_plan": {
            "analysis": f"{design.analysis_name} (`studies.analysis.{design.analysis_table}`) per method, "
                        "on every worker and without the excluded workers",
            "intervals": "95% two-way cluster bootstrap percentile intervals (workers x items), seeded "
                         "by the study seed; with arms, workers are resampled within their arm",
            "comparisons": "pairwise method differences with bootstrap intervals and Wald p-values from the "
                           "bootstrap SD, Holm-adjusted over all pairs (p_boot_holm reported)",
            "catch_trials": "catch trials feed the exclusion rules only, never the statistics",
        },
        "configuration_hash": study_config_hash(study),
    }
    return Preregistration(study_name=study.public_title or study.name, config_hash=sections["configuration_hash"],
                           sections=sections)  # fmt: skip
