"""Staff-only results pages: tables, plots, CSV exports and the reproducibility pack.

URLs (names in the ``studies`` namespace)::

    results/<slug>/                          results            the page (?exclusions=on|off, ?simulated=include|exclude)
    results/<slug>/plot/<name>.<png|svg>     results_plot       the design's plots (Design.result_plots) | timeline
    results/<slug>/export/<kind>.csv         results_export     see studies.services.exports.EXPORT_KINDS (?bonus=0.50)
    results/<slug>/pack.zip                  results_pack       the reproducibility pack
    results/<slug>/sanity.<png|svg>          results_sanity_plot  cascading-randomization plot per method

Views parse the query, call one service, and present. What differs between study designs (the
per-method table, the score's meaning, the plots and their captions) comes from the study's
design (``studies.designs``): its results partial (``Design.results_template``), its row cells
(``Design.results_row``) and its ``result_plots``.

Rights (:func:`results_access`): anonymous and non-staff users are redirected to the admin
login (302); staff without ``studies.view_study`` get 403. Exports that hold raw platform
worker ids (every export not in :data:`VIEW_ONLY_EXPORTS`: the MTurk batch file and the payment
lists) also need ``studies.export_worker_ids``. The tidy and questionnaire CSVs and the pack hold
the salted worker hash and the keyed session hash, never a raw platform id. Every response is marked
``Cache-Control: private, no-store`` (``never_cache``), so
no shared proxy or browser cache keeps results or worker ids.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from studies.analysis.display import number_text, p_text
from studies.designs import design_for
from studies.lib.arms import arm_methods, arm_names
from studies.models import Study
from studies.pipeline.evaluation import SANITY_METRIC, sanity_figure, study_sanity_list
from studies.selectors.allocation import arm_counts
from studies.services.exports import (
    EXPORT_KINDS,
    RESULTS_EXPORTS,
    bonus_parse,
    csv_lines,
    export_filename,
    export_rows,
    streaming_csv_response,
)
from studies.services.preregistration import study_config_hash
from studies.services.repro_pack import study_repro_pack_write
from studies.services.results import (
    ArmResults,
    StudyResults,
    evaluations_beside_human,
    study_evaluations_list,
    study_results_get,
)
from studies.web import plots

#: Permission for the results page, plots, the tidy/summary exports and the pack.
VIEW_PERMISSION = "studies.view_study"
#: Permission, in addition, for exports holding raw platform worker ids.
WORKER_IDS_PERMISSION = "studies.export_worker_ids"
#: Exports without raw platform worker ids; every other export needs ``WORKER_IDS_PERMISSION``.
VIEW_ONLY_EXPORTS = frozenset({"tidy", "summary", "pairwise", "exclusions", "questionnaire"})
#: The plot every study has, after its design's (``Design.result_plots``).
TIMELINE = "timeline"


def export_permissions(export: str) -> tuple[str, ...]:
    """The permissions a user needs to download the export named ``export``."""
    return (VIEW_PERMISSION,) if export in VIEW_ONLY_EXPORTS else (VIEW_PERMISSION, WORKER_IDS_PERMISSION)


def results_access(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Staff with ``studies.view_study`` only (others: login redirect or 403); never cached."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.has_perm(VIEW_PERMISSION):
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return never_cache(staff_member_required(wrapped))


def _flags(request: HttpRequest) -> tuple[bool, bool]:
    """``(with_exclusions, include_simulated)`` from the query string."""
    return request.GET.get("exclusions", "on") != "off", request.GET.get("simulated", "include") != "exclude"


def _study(slug: str) -> Study:
    return get_object_or_404(Study.objects.select_related("model", "model_pair__model_a", "model_pair__model_b"), slug=slug)


def _notes(methods: list[str]) -> list[dict[str, str]]:
    """The low-by-design notes (:data:`studies.web.plots.LOW_BY_DESIGN`) of the methods on the page."""
    seen = [m for m in dict.fromkeys(methods) if m in plots.LOW_BY_DESIGN]
    return [{"method": m, "label": plots.method_label(m), "note": plots.LOW_BY_DESIGN[m]} for m in seen]


def _plot_names(study: Study) -> tuple[str, ...]:
    """The study's plots, in page order: its design's, then the timeline."""
    return (*design_for(study).result_plots, TIMELINE)


def _plot_caption(study: Study, name: str, model_a: str, model_b: str) -> str:
    if name == TIMELINE:
        return "Judgments over time"
    return design_for(study).result_plots[name][1].format(model_a=model_a, model_b=model_b)


def _display_rows(study: Study, results: StudyResults | ArmResults, with_exclusions: bool) -> list[dict[str, Any]]:
    """The design's cells of each method's row (``Design.results_row``), with the method's label."""
    design = design_for(study)
    return [{**design.results_row(row), "label": plots.method_label(row.method)}
            for row in results.table(with_exclusions=with_exclusions).rows]  # fmt: skip


def _arm_sections(study: Study, results: StudyResults, with_exclusions: bool) -> list[dict[str, Any]]:
    """One section per between-subject arm: the design's table on the arm's participants (empty without arms)."""
    return [{"name": arm.name, "n_judgments": arm.n_judgments, "n_workers": arm.n_workers,
             "rows": _display_rows(study, arm, with_exclusions), "table_id": f"method-table-arm-{arm.name}"}
            for arm in results.arms]  # fmt: skip


def _display_pairs(study: Study, results: StudyResults, with_exclusions: bool) -> list[dict[str, Any]]:
    digits = design_for(study).score_digits
    return [
        {
            "a": plots.method_label(pair.method_a), "b": plots.method_label(pair.method_b),
            "diff": number_text(pair.difference, digits),
            "ci": f"[{number_text(pair.boot_low, digits)}, {number_text(pair.boot_high, digits)}]",
            "p_boot": p_text(pair.p_boot), "p_boot_holm": p_text(pair.p_boot_holm),
            "p_naive": p_text(pair.p_naive), "p_naive_holm": p_text(pair.p_naive_holm),
            "significant": math.isfinite(pair.p_boot_holm) and pair.p_boot_holm < 0.05,
        }
        for pair in results.table(with_exclusions=with_exclusions).pairs
    ]  # fmt: skip


def _arm_rows(study: Study) -> list[dict[str, Any]]:
    """Participants per between-subject arm (empty list for a study without arms; two queries otherwise)."""
    names = arm_names(study.arms)
    if not names:
        return []
    counted, everyone = arm_counts(study=study), arm_counts(study=study, counted_only=False)
    return [{"name": name, "methods": ", ".join(arm_methods(study.arms, name) or ()), "counted": counted.get(name, 0),
             "all": everyone.get(name, 0)} for name in names]  # fmt: skip


@results_access
@require_GET
def results_page(request: HttpRequest, slug: str) -> HttpResponse:
    """The per-method table laid out like the paper's, pairwise comparisons, exclusions, plots."""
    study = _study(slug)
    with_exclusions, include_simulated = _flags(request)
    try:
        results = study_results_get(study=study, include_simulated=include_simulated)
    except ValueError as exc:  # malformed exclusion rules
        return render(request, "studies/results/error.html", {"study": study, "error": str(exc)}, status=400)
    query = f"exclusions={'on' if with_exclusions else 'off'}&simulated={'include' if include_simulated else 'exclude'}"
    report = results.analysis.exclusions
    metrics, evaluation_rows = evaluations_beside_human(
        results=results, evaluations=study_evaluations_list(study=study), with_exclusions=with_exclusions
    )
    for row in evaluation_rows:
        row["cells"] = [row["metrics"].get(metric) for metric in metrics]
        row["label"] = plots.method_label(row["method"])
    design = design_for(study)
    model_a, model_b = design.model_names(study)
    rows = _display_rows(study, results, with_exclusions)
    context = {
        "study": study,
        "results": results,
        "design": design,
        "score_caption": design.score_caption.format(model_a=model_a, model_b=model_b),
        "rows": rows,
        "model_a": model_a,
        "model_b": model_b,
        "notes": _notes([r["method"] for r in rows] + list(study.methods or [])
                        + [r["method"] for r in evaluation_rows]),
        "pairs": _display_pairs(study, results, with_exclusions),
        "arm_rows": _arm_rows(study),
        "arm_sections": _arm_sections(study, results, with_exclusions),
        "table": results.table(with_exclusions=with_exclusions),
        "with_exclusions": with_exclusions,
        "include_simulated": include_simulated,
        "report": report,
        "evaluation_metrics": metrics,
        "evaluation_rows": evaluation_rows,
        # One more query, and only when the evaluation stored sanity cascades.
        "sanity_rows": study_sanity_list(study=study) if any(m.startswith(SANITY_METRIC) for m in metrics) else [],
        "sanity_plot_url": reverse("studies:results_sanity_plot", args=[study.slug, "png"]),
        "query": query,
        "plots": [(name, _plot_caption(study, name, model_a, model_b),
                   reverse("studies:results_plot", args=[study.slug, name, "png"]) + "?" + query,
                   reverse("studies:results_plot", args=[study.slug, name, "svg"]) + "?" + query)
                  for name in _plot_names(study)],  # fmt: skip
        "exports": [(export, reverse("studies:results_export", args=[study.slug, export]) + "?" + query)
                    for export in EXPORT_KINDS if request.user.has_perms(export_permissions(export))],  # fmt: skip
        "pack_url": reverse("studies:results_pack", args=[study.slug]) + "?" + query,
        "title": f"Results: {study.name}",
        "config_hash": study_config_hash(study),  # as in the pre-registration (manage.py preregister)
    }
    return render(request, "studies/results/page.html", context)


@results_access
@require_GET
def results_plot(request: HttpRequest, slug: str, name: str, fmt: str) -> HttpResponse:
    """One plot as PNG or SVG (``?download=1`` saves it as a file): the timeline, or one of the
    study design's plots (``Design.result_plots``: the figure function of :mod:`studies.web.plots`
    and its title)."""
    if fmt not in ("png", "svg"):
        raise Http404("unknown plot")
    study = _study(slug)
    design = design_for(study)
    if name not in _plot_names(study):
        raise Http404("unknown plot")
    with_exclusions, include_simulated = _flags(request)
    results = study_results_get(study=study, include_simulated=include_simulated)
    if name == TIMELINE:
        fig = plots.timeline_figure(results.timeline_edges_ms, results.timeline_counts, title="judgments over time")
    else:
        function, _caption, title = design.result_plots[name]
        model_a, model_b = design.model_names(study)
        label = "with exclusions" if with_exclusions else "all workers"
        fig = getattr(plots, function)(results.table(with_exclusions=with_exclusions).rows,
                                       title=title.format(label=label, model_a=model_a, model_b=model_b),
                                       model_a=model_a, model_b=model_b)  # fmt: skip
    body = plots.figure_bytes(fig, fmt)  # type: ignore[arg-type]
    response = HttpResponse(body, content_type="image/png" if fmt == "png" else "image/svg+xml")
    if request.GET.get("download"):
        response["Content-Disposition"] = f'attachment; filename="study-{study.pk}-{name}.{fmt}"'
    return response


@results_access
@require_GET
def results_sanity_plot(request: HttpRequest, slug: str, fmt: str) -> HttpResponse:
    """The stored sanity cascades (Adebayo et al. 2018) of every method and control, PNG or SVG."""
    if fmt not in ("png", "svg"):
        raise Http404("unknown format")
    study = _study(slug)
    fig = sanity_figure(study_sanity_list(study=study), title=f"cascading randomization: {study.name}")
    body = plots.figure_bytes(fig, fmt)  # type: ignore[arg-type]
    return HttpResponse(body, content_type="image/png" if fmt == "png" else "image/svg+xml")


@results_access
@require_GET
def results_export(request: HttpRequest, slug: str, kind: str) -> HttpResponse:
    """A streamed CSV export (``tidy``, ``summary``, ``mturk``, payment lists, ...); ``kind`` is the
    export's name (the URL's), not the study's kind.

    An unknown export is 404; one with raw worker ids without ``studies.export_worker_ids``
    is 403; a malformed ``?bonus=`` (not a finite amount in range) is 400.
    """
    export = kind
    if export not in EXPORT_KINDS:
        raise Http404(f"unknown export {export!r}")
    if not request.user.has_perms(export_permissions(export)):
        raise PermissionDenied
    study = _study(slug)
    _, include_simulated = _flags(request)
    try:
        bonus = bonus_parse(request.GET.get("bonus"))
        results = (study_results_get(study=study, include_simulated=include_simulated)
                   if export in RESULTS_EXPORTS else None)  # fmt: skip
        header, rows = export_rows(study=study, kind=export, include_simulated=include_simulated,
                                   bonus=bonus, results=results)  # fmt: skip
    except ValueError as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")
    return streaming_csv_response(csv_lines(header, rows), export_filename(study, export))


@results_access
@require_GET
def results_pack(request: HttpRequest, slug: str) -> FileResponse:
    """The reproducibility pack (zip), spooled to a temporary file then streamed."""
    study = _study(slug)
    _, include_simulated = _flags(request)
    spool = tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024)  # noqa: SIM115 - FileResponse closes it
    study_repro_pack_write(study=study, fileobj=spool, include_simulated=include_simulated)
    spool.seek(0)
    return FileResponse(spool, as_attachment=True, filename=f"study-{study.pk}-reproducibility.zip",
                        content_type="application/zip")  # fmt: skip
