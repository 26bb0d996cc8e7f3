"""Automatic evaluation of a study's explanations, stored beside the human scores.

:func:`study_evaluate` computes, for every method of the study and three control "methods"
(``control:random``, ``control:sobel``, ``control:gaussian``: maps that know nothing about
the model, so every metric is read against them), the metrics of
:mod:`studies.pipeline.gpu.evaluation_runner` (deletion/insertion AUC, rank correlation with the
occlusion map, WSL localization error, pointing game, energy in the object's mask or box) and a
cascading sanity check per method, and writes one ``EvaluationResult`` per (method, metric):

* ``values``: one value per *unit* (an image and one explained class), JSON ``null`` = skipped;
* ``summary``: ``mean``, ``low``, ``high`` (95 % percentile bootstrap over **images**: the units
  of one image are averaged first, then images are resampled, 2000 resamples, seeded by the
  study's seed), ``n`` (images with a value), ``n_values``, ``units`` (``[image_id, class]`` in
  the order of ``values``), ``model``, ``higher_is_better`` and the settings used.

Units. The study's main items decide what is evaluated, so the metrics describe exactly the
maps that people judged: one unit per distinct (image, target class) of the main items
(discrimination: each image with each of its two categories; trust: each image with the true
class both models predicted). Before preparation (no items) every image is evaluated with
each of its categories.

Trust studies show two models: each model is evaluated on the same units and its metrics are
stored as ``<metric>:A`` and ``<metric>:B`` (the pair's model A and B), so a method's row holds
both models' numbers beside its trust score.

Sanity check (Adebayo et al. 2018): metric ``sanity_similarity`` holds, per unit of the
first ``sanity_units`` units, the Spearman correlation of ``|map|`` between the trained model
and the model with every layer randomized (cascading from the top); ``summary["cascade"]``
holds the per-step mean and quartiles (``steps``, ``mean``, ``low``, ``high``) and
``summary["verdict"]`` the pass/fail of :func:`explainers.metrics.sanity_verdict`. Lower is
better: a faithful map changes when the weights do.

Settings come from ``Study.explainer_options["evaluation"]`` (``steps``, ``baseline``,
``score``, ``sanity_units``, ``sanity_steps``, ``max_images``, ``batch_size``) over the
defaults of :class:`~studies.pipeline.gpu.evaluation_runner.EvaluationSettings`; the score
defaults to ``sigmoid`` for the multi-label synthetic CNN and ``softmax`` otherwise.

Idempotent: rows are ``update_or_create``'d by (study, method, metric) and rows of this study
that the run did not produce (a removed method) are deleted in the same transaction. This
module never imports torch at import time; the work happens in the runner, imported inside
:func:`study_evaluate`.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from studies.designs import design_for
from studies.designs.options import EVALUATION_KEYS, StudyOptions
from studies.lib.rendering import is_map
from studies.lib.scenes import PrepareInputError, class_index
from studies.models import ClassifierModel, EvaluationResult, Image, Item, Job, Study
from studies.pipeline import jobs
from studies.pipeline.plan import study_options

logger = logging.getLogger(__name__)

EVALUATE_ATTEMPT_KEY = "evaluate"  # the whole evaluation is one unit in Job.chunk_attempts
SANITY_METRIC = "sanity_similarity"
SETTING_KEYS = tuple(k for k in EVALUATION_KEYS if k != "max_images")


class EvaluationRefused(ValueError):
    """The study cannot be evaluated (no methods, no images); the message says why."""


@dataclass(frozen=True)
class EvaluationReport:
    """What one :func:`study_evaluate` call wrote."""

    rows: int
    deleted: int
    units: int
    images: int
    seconds: float


def _units(study: Study, model: ClassifierModel, max_images: int | None,
           options: StudyOptions) -> list[tuple[Image, int, str]]:
    """``(image, class, category)`` to evaluate: the main items' pairs, else every image x category."""
    items = (Item.objects.filter(study=study, role=Item.Role.MAIN).select_related("image")
             .order_by("image_id", "target_class"))  # fmt: skip
    found: dict[tuple[int, int], tuple[Image, int, str]] = {}
    for item in items:
        found.setdefault((item.image_id, item.target_class), (item.image, item.target_class, item.target_label))
    if not found:
        for image in study.image_set.images.order_by("pk"):
            for category in dict.fromkeys(image.categories or []):
                cls = class_index(model, category, class_map=options.class_map, image=image)
                found.setdefault((image.pk, cls), (image, cls, category))
    units = list(found.values())
    if max_images:
        keep = list(dict.fromkeys(u[0].pk for u in units))[: int(max_images)]
        units = [u for u in units if u[0].pk in set(keep)]
    return units


def _settings(study: Study, model: ClassifierModel, overrides: dict[str, Any], options: StudyOptions) -> Any:
    """``options.evaluation`` (keys checked when the options are parsed) under the overrides."""
    from studies.pipeline.gpu.evaluation_runner import EvaluationSettings

    configured = dict(options.evaluation)
    configured.update({k: v for k, v in overrides.items() if v is not None})
    kwargs = {k: configured[k] for k in SETTING_KEYS if k in configured}
    kwargs.setdefault("score", "sigmoid" if model.arch == "synthetic_cnn" else "softmax")
    return EvaluationSettings(seed=study.seed % 2**32, occlusion=options.method_options("occlusion") or None,
                              **kwargs)


def _json_values(values: Any) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in values.tolist()]


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def study_evaluate(
    *,
    study_id: int,
    job_id: int | None = None,
    steps: int | None = None,
    sanity_units: int | None = None,
    max_images: int | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> EvaluationReport:
    """Compute and store every automatic metric of the study's methods and the controls.

    Args:
        study_id: The study.
        job_id: A ``Job`` (kind ``evaluate``) whose ``stage``/``done``/``total`` are updated.
        steps, sanity_units, max_images: Override ``explainer_options["evaluation"]``.
        on_progress: ``fn(stage, done, total)`` after each piece of work (the demo's bar).

    Raises:
        EvaluationRefused: no methods or no images.
        PrepareInputError: bad input (unreadable image, unknown category, bad weights, a bad
            ``explainer_options`` value), naming it.
    """
    from explainers.metrics.directions import HIGHER_IS_BETTER, SANITY_SIMILARITY_HIGHER_IS_BETTER
    from studies.pipeline.gpu import evaluation_runner as runner

    started = time.perf_counter()
    study = Study.objects.select_related("model", "model_pair__model_a", "model_pair__model_b", "image_set").get(pk=study_id)
    evaluated = map_methods(study)
    if not evaluated:
        raise EvaluationRefused(f"study {study.name!r} has no attribution map methods to evaluate")
    design = design_for(study)
    options = study_options(study)
    models = design.study_models(study)
    sides = design.model_labels
    overrides = {"steps": steps, "sanity_units": sanity_units}
    units = _units(study, models[0], max_images or options.evaluation.get("max_images"), options)
    if not units:
        raise EvaluationRefused(f"image set {study.image_set.name!r} of study {study.name!r} has no image with a category")
    n_images = len({u[0].pk for u in units})
    n_sanity = len(evaluated) + len(runner.EvaluationSettings().controls)
    per_model = math.ceil(n_images / runner.EvaluationSettings().explain_batch) + 1 + n_sanity
    total, done = per_model * len(models) + 1, 0

    def progress(stage: str) -> None:
        nonlocal done
        done = min(done + 1, total - 1)
        if job_id is not None:
            Job.objects.filter(pk=job_id).update(stage=stage[:64], done=done, total=total, updated_at=timezone.now())
        if on_progress is not None:
            on_progress(stage, done, total)

    rows: dict[tuple[str, str], tuple[list[float | None], dict[str, Any]]] = {}
    for model, side in zip(models, sides, strict=True):
        settings = _settings(study, model, overrides, options)
        model_units = [runner.Unit(image, target, category) for image, target, category in units]
        method_options = {m: options.method_options(m) for m in evaluated if m in options.methods}
        result = runner.model_evaluate(model, model_units, evaluated, options=method_options, settings=settings,
                                       progress=lambda stage, s=side: progress(f"{s + ': ' if s else ''}{stage}"))
        image_ids = [image_id for image_id, _ in result.units]
        common = {"model": model.name, "weights_sha256": model.weights_sha256, "side": side or None,
                  "units": [list(u) for u in result.units],
                  "settings": {k: getattr(settings, k) for k in SETTING_KEYS}, "level": 0.95}  # fmt: skip
        suffix = f":{side}" if side else ""
        for method, metrics in result.values.items():
            for metric, values in metrics.items():
                summary = runner.summary_interval(values, image_ids, seed=settings.seed)
                rows[(method, metric + suffix)] = (_json_values(values), {
                    **summary, **common, "higher_is_better": HIGHER_IS_BETTER.get(metric)})  # fmt: skip
        for method, sanity in result.sanity.items():
            n = len(sanity["final"])
            summary = runner.summary_interval(sanity["final"], image_ids[:n], seed=settings.seed)
            rows[(method, SANITY_METRIC + suffix)] = (_json_values(sanity["final"]), {
                **summary, **common, "units": common["units"][:n], "higher_is_better": SANITY_SIMILARITY_HIGHER_IS_BETTER,
                "cascade": sanity["cascade"], "signed_mean": sanity["signed_mean"], "verdict": sanity["verdict"]})  # fmt: skip
    written, deleted = _store(study, rows)
    progress("stored")
    return EvaluationReport(rows=written, deleted=deleted, units=len(units), images=n_images,
                            seconds=time.perf_counter() - started)


def _store(study: Study, rows: dict[tuple[str, str], tuple[list[float | None], dict[str, Any]]]) -> tuple[int, int]:
    with transaction.atomic():
        keep = []
        for (method, metric), (values, summary) in rows.items():
            row, _ = EvaluationResult.objects.update_or_create(
                study=study, method=method, metric=metric, defaults={"values": values, "summary": _plain(summary)}
            )
            keep.append(row.pk)
        deleted, _ = EvaluationResult.objects.filter(study=study).exclude(pk__in=keep).delete()
    return len(keep), deleted


def map_methods(study: Study) -> list[str]:
    """The study's methods that give attribution maps, the ones the metrics evaluate (stimuli that
    show no map, ``studies.lib.rendering.NON_MAP_METHODS``, have no metric)."""
    return [m for m in study.methods or [] if is_map(m)]


def study_evaluation_current(*, study: Study) -> bool:
    """Whether the study has stored results for every method, made with its models' current weights."""
    stored = {(method, (summary or {}).get("model"), (summary or {}).get("weights_sha256"))
              for method, summary in EvaluationResult.objects.filter(study=study).values_list("method", "summary")}  # fmt: skip
    models = design_for(study).study_models(study)
    wanted = {(method, model.name, model.weights_sha256) for method in map_methods(study) for model in models}
    return bool(stored) and wanted <= stored


# --- the job (admin action, command, Celery task) -------------------------------------------


def study_evaluation_start(*, study_id: int, enqueue: bool = True) -> Job:
    """Open an ``evaluate`` job for the study (or return the active one) and enqueue the gpu task."""
    with transaction.atomic():
        study = Study.objects.select_for_update().get(pk=study_id)
        if not study.methods:
            raise EvaluationRefused(f"study {study.name!r} has no methods")
        job, opened = jobs.job_open(study=study, kind=Job.Kind.EVALUATE)
        if opened and enqueue:
            transaction.on_commit(functools.partial(_enqueue, job.pk))
    return job


def _enqueue(job_id: int) -> None:
    from studies.tasks import gpu_evaluate_study

    gpu_evaluate_study.delay(job_id)


def evaluation_job_run(*, job_id: int, **overrides: Any) -> Job:
    """Run an evaluate job in this process: running -> done, or failed with the cause (study untouched)."""
    job = Job.objects.get(pk=job_id)
    if job.kind != Job.Kind.EVALUATE:
        raise EvaluationRefused(f"job {job_id} is a {job.kind} job, not an evaluate job")
    if job.status not in jobs.ACTIVE:
        return job
    attempts = jobs.job_attempt_start(job_id=job_id, key=EVALUATE_ATTEMPT_KEY)  # committed before the work
    if attempts is None:
        return Job.objects.get(pk=job_id)
    limit = jobs.chunk_max_attempts()
    if attempts > limit:
        jobs.job_fail(job_id=job_id, stage="failed", message=(
            f"the evaluation of study {job.study_id} was started {attempts - 1} times and never finished "
            "(its worker died each time, e.g. out of memory); not run again.\n"
            f"Given up after XAISTUDY_CHUNK_MAX_ATTEMPTS={limit}. Evaluate fewer images or give the gpu worker "
            "more memory, then start the evaluation again."
        ))  # fmt: skip
        return Job.objects.get(pk=job_id)
    jobs.job_start(job_id=job_id, stage="start")
    try:
        report = study_evaluate(study_id=job.study_id, job_id=job_id, **overrides)
    except (EvaluationRefused, PrepareInputError) as exc:
        jobs.job_fail(job_id=job_id, stage="failed", message=str(exc))
    except Exception as exc:
        jobs.job_fail(job_id=job_id, stage="failed", message=jobs.job_error_text(exc))
        logger.exception("evaluate job %s failed", job_id)
    else:
        jobs.job_finish(job_id=job_id, stage=f"done: {report.rows} results, {report.images} images")
    return Job.objects.get(pk=job_id)


def evaluation_inline(*, study_id: int, **overrides: Any) -> Job:
    """Open and run an evaluate job in this process (``manage.py evaluate_study``, the demo)."""
    job = study_evaluation_start(study_id=study_id, enqueue=False)
    return evaluation_job_run(job_id=job.pk, **overrides)


# --- reads for the results page (no torch) --------------------------------------------------


@dataclass(frozen=True)
class SanityRow:
    """One method's stored cascade: plot data and verdict."""

    method: str
    metric: str
    steps: list[str]
    mean: list[float | None]
    low: list[float | None]
    high: list[float | None]
    passed: bool | None
    final: float | None
    rule: str


def study_sanity_list(*, study: Study) -> list[SanityRow]:
    """The study's sanity cascades (methods first, then controls), from the stored summaries."""
    out = []
    for row in EvaluationResult.objects.filter(study=study, metric__startswith=SANITY_METRIC).order_by("metric", "method"):
        summary = row.summary or {}
        cascade = summary.get("cascade") or {}
        verdict = summary.get("verdict") or {}
        out.append(SanityRow(method=row.method, metric=row.metric, steps=list(cascade.get("steps", [])),
                             mean=list(cascade.get("mean", [])), low=list(cascade.get("low", [])),
                             high=list(cascade.get("high", [])), passed=verdict.get("passed"),
                             final=verdict.get("final"), rule=str(verdict.get("rule", ""))))  # fmt: skip
    out.sort(key=lambda r: (r.metric, r.method.startswith("control:"), r.method))
    return out


def sanity_figure(rows: list[SanityRow], *, title: str = "") -> Any:
    """Matplotlib ``Figure`` (object API, Agg; no pyplot): mean similarity per step with quartiles."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.2), layout="constrained")
    ax = fig.add_subplot()
    labels: list[str] = []
    for row in rows:
        x = list(range(len(row.steps)))
        mean = [math.nan if v is None else v for v in row.mean]
        style = "--" if row.method.startswith("control:") else "-"
        verdict = "" if row.passed is None else (" pass" if row.passed else " fail")
        side = row.metric[len(SANITY_METRIC):]
        ax.plot(x, mean, style, marker="o", markersize=3, label=f"{row.method}{side}{verdict}")
        ax.fill_between(x, [math.nan if v is None else v for v in row.low],
                        [math.nan if v is None else v for v in row.high], alpha=0.12)  # fmt: skip
        if len(row.steps) > len(labels):
            labels = row.steps
    if not rows:
        ax.text(0.5, 0.5, "no sanity check yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks(range(len(labels)), labels, rotation=40, ha="right", fontsize=7)
    ax.set_ylim(-1.05, 1.05)
    ax.axhline(0.0, color="gray", linewidth=0.5)
    ax.set_ylabel("Spearman |map| vs trained model")
    ax.set_xlabel("layers randomized (cumulative from the top)")
    ax.set_title(title or "cascading randomization (Adebayo et al. 2018)", fontsize=10)
    if rows:  # beside the axes, never over the curves
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def evaluation_table_lines(*, study: Study, width: int = 24) -> list[str]:
    """The stored metrics as text: one line per method, ``mean [low, high]`` per metric, then sanity verdicts."""
    rows = EvaluationResult.objects.filter(study=study).exclude(metric__startswith=SANITY_METRIC)
    by_method: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows.order_by("method", "metric"):
        by_method.setdefault(row.method, {})[row.metric] = row.summary or {}
    metrics = sorted({m for cells in by_method.values() for m in cells})
    methods = [m for m in study.methods if m in by_method] + sorted(m for m in by_method if m not in study.methods)

    def cell(summary: dict[str, Any]) -> str:
        mean, low, high = summary.get("mean"), summary.get("low"), summary.get("high")
        return "n/a" if mean is None else f"{mean:.3f} [{low:.3f},{high:.3f}]"

    lines = [f"{'method':<22}" + "".join(f"{m:>{width}}" for m in metrics)]
    lines += [f"{method:<22}" + "".join(f"{cell(by_method[method].get(m, {})):>{width}}" for m in metrics)
              for method in methods]  # fmt: skip
    for sanity in study_sanity_list(study=study):
        verdict = "pass" if sanity.passed else "fail"
        final = "n/a" if sanity.final is None else f"{sanity.final:.3f}"
        lines.append(f"sanity{sanity.metric[len(SANITY_METRIC):]} {sanity.method:<22} {verdict} "
                     f"(similarity after all layers random {final})")  # fmt: skip
    return lines
