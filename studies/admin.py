"""Django admin: where researchers configure models, pairs, image sets and studies.

Admin classes only present and dispatch; every write goes through a service.

Rights: every custom action declares the model permission it needs (``@admin.action(permissions=...)``):
``change`` for what starts or stops work or writes a report (prepare, pilot, evaluate, validity audit,
cancel, resume), ``view`` for the tidy CSV (hashed worker ids only, no raw platform worker ids). The study's
status is read-only in its form: Prepare, Publish, Pause and Close (actions and buttons) call
``services.lifecycle``; Publish refuses unless the study is prepared, has enough items and its
validity audit passed or was acknowledged. The form checks the configuration
(``services.study_checks``) and guards live studies (``StudyAdminForm``). The image-set zip import
view needs ``add``. Results, plots and exports (``studies/web/results.py``) need
``studies.view_study``, and raw worker ids also ``studies.export_worker_ids``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from django import forms
from django.contrib import admin, messages
from django.db import models as db_models
from django.db.models import Count, Q, QuerySet, Sum
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from studies import models
from studies.services.importers import (
    ImportRejected,
    image_set_import,
    records_from_folder,
    zip_extract,
)

#: URL form fields keep Django 5's scheme for bare domains ("example.org/x" -> "http://example.org/x")
#: stated explicitly, which silences RemovedInDjango60Warning (Django 6 would assume https).
URL_FIELD_OVERRIDES: dict[type, dict[str, object]] = {db_models.URLField: {"assume_scheme": "http"}}


@admin.register(models.ClassifierModel)
class ClassifierModelAdmin(admin.ModelAdmin):
    list_display = ("name", "arch", "n_classes", "target_layer", "input_size", "short_sha", "created_at")
    search_fields = ("name", "arch", "description")
    list_filter = ("arch",)
    readonly_fields = ("created_at",)

    @admin.display(description="classes")
    def n_classes(self, obj: models.ClassifierModel) -> int:
        return len(obj.class_names or [])

    @admin.display(description="weights sha256")
    def short_sha(self, obj: models.ClassifierModel) -> str:
        return obj.weights_sha256[:12] if obj.weights_sha256 else "(shipped)"


@admin.register(models.ModelPair)
class ModelPairAdmin(admin.ModelAdmin):
    list_display = ("name", "model_a", "model_b", "relation")
    list_filter = ("relation",)
    search_fields = ("name", "description", "model_a__name", "model_b__name")
    autocomplete_fields = ("model_a", "model_b")


class ZipImportForm(forms.Form):
    name = forms.SlugField(help_text="name of the new image set")
    archive = forms.FileField(help_text="zip of an image folder with manifest.csv, or a PASCAL VOC folder")
    only_two_categories = forms.BooleanField(
        required=False, initial=True, help_text="keep only images with exactly two categories"
    )
    categories = forms.CharField(
        required=False, help_text="allowed categories, separated by ';' (empty = take them from the input)"
    )


@admin.register(models.ImageSet)
class ImageSetAdmin(admin.ModelAdmin):
    list_display = ("name", "source", "n_images", "n_categories", "created_at")
    list_filter = ("source",)
    search_fields = ("name", "description")
    readonly_fields = ("created_at",)
    change_list_template = "admin/studies/imageset/change_list.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[models.ImageSet]:
        return super().get_queryset(request).annotate(image_count=Count("images"))

    @admin.display(description="images", ordering="image_count")
    def n_images(self, obj: models.ImageSet) -> int:
        return obj.image_count

    @admin.display(description="categories")
    def n_categories(self, obj: models.ImageSet) -> int:
        return len(obj.categories or [])

    def get_urls(self):  # type: ignore[no-untyped-def]
        extra = [
            path(
                "import-zip/",
                self.admin_site.admin_view(self.import_zip_view),
                name="studies_imageset_import_zip",
            )
        ]
        return extra + super().get_urls()

    def import_zip_view(self, request: HttpRequest) -> HttpResponse:
        """Upload a zip, import it through the importer service, report every problem."""
        if not self.has_add_permission(request):
            return HttpResponse(status=403)
        form = ZipImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["archive"]
            categories_text = form.cleaned_data["categories"].strip()
            categories = [c.strip() for c in categories_text.split(";") if c.strip()] or None
            try:
                if upload.size > _max_upload():
                    raise ImportRejected([f"upload is {upload.size:,} bytes, over the limit of {_max_upload():,} bytes"])
                with tempfile.TemporaryDirectory(prefix="xaistudy-import-") as tmp:
                    folder = zip_extract(data=upload.read(), destination=Path(tmp))
                    records, source = records_from_folder(folder=folder)
                    image_set = image_set_import(
                        name=form.cleaned_data["name"],
                        records=records,
                        source=source,
                        categories=categories,
                        require_categories=2 if form.cleaned_data["only_two_categories"] else None,
                    )
            except ImportRejected as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Imported {image_set.images.count()} images into {image_set.name}.")
                return HttpResponseRedirect(reverse("admin:studies_imageset_change", args=[image_set.pk]))
        context = {**self.admin_site.each_context(request), "form": form, "title": "Import images from a zip", "opts": self.model._meta}
        return TemplateResponse(request, "admin/studies/imageset/import_zip.html", context)


def _max_upload() -> int:
    from django.conf import settings

    return settings.XAISTUDY_MAX_UPLOAD_BYTES


@admin.register(models.Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ("original_name", "image_set", "categories", "width", "height", "short_sha")
    list_filter = ("image_set",)
    search_fields = ("original_name", "sha256")
    list_select_related = ("image_set",)
    readonly_fields = ("sha256", "width", "height", "preview")

    @admin.display(description="sha256")
    def short_sha(self, obj: models.Image) -> str:
        return obj.sha256[:12]

    @admin.display(description="preview")
    def preview(self, obj: models.Image) -> str:
        if not obj.file:
            return "-"
        return format_html('<img src="{}" style="max-width:320px;max-height:320px">', obj.file.url)


class JobInline(admin.TabularInline):
    model = models.Job
    extra = 0
    can_delete = False
    fields = ("kind", "status", "stage", "job_progress", "error", "created_at", "finished_at")
    readonly_fields = fields
    show_change_link = True

    @admin.display(description="progress (done/total, rate, ETA)")
    def job_progress(self, obj: models.Job) -> str:
        return _job_progress_text(obj)

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class ExcludedWorkerInline(admin.TabularInline):
    model = models.ExcludedWorker
    extra = 0


class ExclusionGroupWorkerInline(admin.TabularInline):
    model = models.ExclusionGroupWorker
    extra = 0
    fields = ("platform_worker_id", "reason")


class ExclusionImportForm(forms.Form):
    """Platform ids for an exclusion group: a CSV file (MTurk's or Prolific's export) or pasted text."""

    MAX_BYTES = 5 * 1024 * 1024

    csv_file = forms.FileField(required=False, help_text="a CSV with a WorkerId / participant_id column, or one id per line")
    text = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 8}), help_text="or paste the ids, one per line")
    platform = forms.ChoiceField(
        required=False,
        choices=[("", "either (matched case-insensitively)"), ("mturk", "MTurk"), ("prolific", "Prolific")],
    )
    reason = forms.CharField(required=False, max_length=200, help_text="e.g. took the pilot")

    def clean(self) -> dict:  # type: ignore[type-arg]
        cleaned = super().clean()
        upload = cleaned.get("csv_file")
        text = cleaned.get("text") or ""
        if upload is not None:
            if upload.size > self.MAX_BYTES:
                raise forms.ValidationError(f"the file is {upload.size:,} bytes, over the limit of {self.MAX_BYTES:,}")
            try:
                text = upload.read().decode("utf-8-sig")
            except UnicodeDecodeError:
                raise forms.ValidationError("the file is not UTF-8 text") from None
        if not text.strip():
            raise forms.ValidationError("choose a CSV file or paste some ids")
        cleaned["csv_text"] = text
        return cleaned


@admin.register(models.ExclusionGroup)
class ExclusionGroupAdmin(admin.ModelAdmin):
    """Related studies sharing one pool of workers; their list is imported from a CSV (change permission)."""

    list_display = ("name", "n_workers", "n_studies", "created_at")
    search_fields = ("name", "description")
    readonly_fields = ("created_at",)
    inlines = (ExclusionGroupWorkerInline,)
    change_form_template = "admin/studies/exclusiongroup/change_form.html"  # adds "Import ids"

    def get_queryset(self, request: HttpRequest) -> QuerySet[models.ExclusionGroup]:
        return super().get_queryset(request).annotate(
            worker_count=Count("workers", distinct=True), study_count=Count("studies", distinct=True)
        )

    @admin.display(description="listed ids", ordering="worker_count")
    def n_workers(self, obj: models.ExclusionGroup) -> int:
        return obj.worker_count

    @admin.display(description="studies", ordering="study_count")
    def n_studies(self, obj: models.ExclusionGroup) -> int:
        return obj.study_count

    def get_urls(self):  # type: ignore[no-untyped-def]
        extra = [
            path(
                "<int:group_id>/import-ids/",
                self.admin_site.admin_view(self.import_ids_view),
                name="studies_exclusiongroup_import_ids",
            )
        ]
        return extra + super().get_urls()

    def import_ids_view(self, request: HttpRequest, group_id: int) -> HttpResponse:
        """Add the platform ids of a CSV to the group's list (nothing is added if any row is bad)."""
        from django.shortcuts import get_object_or_404

        from studies.services.exclusion import exclusion_group_import

        group = get_object_or_404(models.ExclusionGroup, pk=group_id)
        if not self.has_change_permission(request, group):
            return HttpResponse(status=403)
        form = ExclusionImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            result = exclusion_group_import(group=group, csv_text=form.cleaned_data["csv_text"],
                                            reason=form.cleaned_data["reason"], platform=form.cleaned_data["platform"])  # fmt: skip
            if result.errors:
                shown = result.errors[:20] + ([f"... and {len(result.errors) - 20} more"] if len(result.errors) > 20 else [])
                form.add_error(None, "Nothing was added: " + "; ".join(shown))
            else:
                messages.success(request, f"{group.name}: {result.added} id(s) added, {result.already} already listed.")
                return HttpResponseRedirect(reverse("admin:studies_exclusiongroup_change", args=[group.pk]))
        context = {**self.admin_site.each_context(request), "form": form, "group": group, "opts": self.model._meta,
                   "title": f"Import platform ids into {group.name}"}  # fmt: skip
        return TemplateResponse(request, "admin/studies/exclusiongroup/import_ids.html", context)


class MethodsField(forms.MultipleChoiceField):
    """The study's explanation methods as a checkbox list (``method_choices()``: name and one-line
    description), stored as the JSON list. Any name is accepted here so that an unknown one gets
    :func:`study_config_errors`'s message (which lists the known ones), not a generic "not a valid
    choice"; a posted JSON list (``'["gradcam"]'``, what scripts posted before) is read as the list."""

    widget = forms.CheckboxSelectMultiple

    def to_python(self, value: object) -> list[str]:
        if isinstance(value, (list, tuple)) and len(value) == 1 and str(value[0]).lstrip().startswith("["):
            value = value[0]
        if isinstance(value, str) and value.lstrip().startswith("["):
            import json

            try:
                value = json.loads(value)
            except ValueError:
                raise forms.ValidationError("not a list of methods") from None
        return super().to_python(value)

    def valid_value(self, value: str) -> bool:
        return True


#: Fields whose change would make a live (or paused) study's stimuli wrong: always refused
#: (close the study and make a new one).
STIMULI_FIELDS = ("kind", "methods", "model", "model_pair", "image_set")
#: Fields fixed once participants may have entered, besides the stimuli: the between-subject arms
#: (a participant's stored arm must stay one of the study's, with the methods it was shown).
DESIGN_FIELDS = ("arms",)
#: Fields that change what participants see or how they are paid: refused on a study with
#: participants unless ``confirm_live_change`` is ticked.
CONFIRM_FIELDS = ("platform", "completion_code", "prolific_completion_url", "question", "wording", "public_title",
                  "public_description", "consent_text", "consent_version", "instructions", "questionnaire",
                  "trials_per_participant", "catch_trials", "practice_trials", "practice_pass_fraction")


class StudyAdminForm(forms.ModelForm):
    """The study form (the admin builds its Meta from the fieldsets).

    ``clean`` attaches every error of :func:`study_config_errors` to its field (the same rules as
    ``study_publish`` and the commands), so a bad method, a wording the page cannot fill or more
    trials than main items is a form error and nothing is saved. The status is read-only: it
    changes only through the lifecycle actions (Prepare, Publish, Pause, Close). On a live
    study, or a paused one with participants, the fields in ``STIMULI_FIELDS`` cannot change and
    those in ``CONFIRM_FIELDS`` need ``confirm_live_change``, the error naming who is affected.
    """

    methods = MethodsField(choices=(), help_text="the explanation methods compared in this study")
    confirm_live_change = forms.BooleanField(
        required=False, label="Confirm change to a live study",
        help_text="tick to save changes to the wording, platform or quotas of a study that participants have "
                  "already entered (their data were collected under the old settings)",
    )

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        if "methods" in self.fields:
            from studies.services.study_checks import method_choices

            choices = method_choices()
            known = {name for name, _ in choices}
            stored = [m for m in (self.instance.methods or []) if isinstance(m, str) and m not in known]
            self.fields["methods"].choices = choices + [(m, f"{m}: not a known method") for m in stored]

    def clean_arms(self) -> object:
        """An emptied arms box means no arms (``[]``), not a missing value."""
        value = self.cleaned_data.get("arms")
        return [] if value in (None, "") else value

    def clean(self) -> dict:  # type: ignore[type-arg]
        cleaned = super().clean()
        self._config_errors()
        self._live_change_guard()
        return cleaned

    def _probe(self) -> models.Study:
        """The study as it would be saved (the instance itself is changed only after ``clean``)."""
        import copy

        from django.forms.models import construct_instance

        return construct_instance(self, copy.copy(self.instance), self._meta.fields, self._meta.exclude)

    def _config_errors(self) -> None:
        from studies.services.study_checks import study_config_errors

        for field, found in study_config_errors(study=self._probe()).items():
            if field in self.errors:  # the field's own validation already failed; its value is the old one
                continue
            for message in found:
                if field in self.fields:
                    self.add_error(field, message)
                else:
                    self.add_error(None, f"{field}: {message}")

    def _changed_from(self, stored: models.Study) -> list[str]:
        """The form's fields whose cleaned value differs from the stored row (``changed_data``
        is not used: fields with callable defaults count as changed when the hidden initial
        value is not posted)."""
        changed = []
        for field in (*STIMULI_FIELDS, *DESIGN_FIELDS, *CONFIRM_FIELDS):
            if field not in self.cleaned_data:
                continue
            new, old = self.cleaned_data[field], getattr(stored, field)
            if isinstance(new, db_models.Model) or isinstance(old, db_models.Model):
                new, old = getattr(new, "pk", None), getattr(old, "pk", None)
            if new != old:
                changed.append(field)
        return changed

    def _live_change_guard(self) -> None:
        study = self.instance
        if study.pk is None:
            return
        stored = models.Study.objects.filter(pk=study.pk).first()
        if stored is None:
            return
        entered = study.participants.filter(is_simulated=False)
        n_entered = entered.count()
        if stored.status != models.Study.Status.LIVE and n_entered == 0:
            return
        state = "live" if stored.status == models.Study.Status.LIVE else "paused"
        who = f"{n_entered} participant(s) already entered"
        changed = self._changed_from(stored)
        for field in changed:
            if field in DESIGN_FIELDS and field in self.fields:
                self.add_error(field, f"the study is {state} ({who}) and participants were assigned to these "
                                      "arms; close it and make a new study to change them")
            elif field in STIMULI_FIELDS and field in self.fields:
                self.add_error(field, f"the study is {state} ({who}) and its stimuli are prepared for this "
                                      f"{field.replace('_', ' ')}; close it and make a new study to change it")
        if self.cleaned_data.get("confirm_live_change"):
            return
        for field in changed:
            if field not in CONFIRM_FIELDS or field not in self.fields or field in self.errors:
                continue
            if field == "platform":
                by_platform = dict(entered.values_list("platform").annotate(n=Count("id")))
                label = models.Study.Platform(study.platform).label
                effect = (f"{by_platform.get(study.platform, 0)} participant(s) already entered through {label}; "
                          f"those still working would meet a study on another platform")
            else:
                effect = (f"{who} under the current {field.replace('_', ' ')}; their answers and later ones "
                          f"would no longer be comparable")
            self.add_error(field, f"the study is {state}: {effect}. Tick 'Confirm change to a live study' "
                                  f"to save anyway")


@admin.register(models.Study)
class StudyAdmin(admin.ModelAdmin):
    form = StudyAdminForm
    formfield_overrides = URL_FIELD_OVERRIDES
    list_display = ("name", "kind", "status", "platform", "n_methods", "progress", "created_at")
    list_filter = ("kind", "status", "platform")
    search_fields = ("name", "slug")
    readonly_fields = ("slug", "status", "created_at", "item_summary", "platform_setup", "validity_panel")
    autocomplete_fields = ("model", "model_pair")
    inlines = (JobInline, ExcludedWorkerInline)
    change_form_template = "admin/studies/study/change_form.html"  # Results link, lifecycle buttons
    actions = ("export_tidy_csv", "prepare_stimuli", "publish_study", "pause_study", "close_study",
               "cancel_preparation", "resume_preparation", "pilot_simulated", "evaluate_explanations",
               "audit_validity", "platform_decide")
    #: The lifecycle steps of the change page's buttons (POST ``<id>/lifecycle/<step>/``, change permission).
    LIFECYCLE_STEPS = ("prepare", "publish", "pause", "close")
    fieldsets = (
        (None, {"fields": ("name", "slug", "kind", "status", "methods", "arms", "model", "model_pair", "image_set"),
                "description": "The status changes only through Prepare, Publish, Pause and Close (buttons above, "
                               "or the actions of the study list)."}),
        ("Quotas", {"fields": ("judgments_per_item", "trials_per_participant", "catch_trials", "practice_trials",
                               "practice_pass_fraction", "lease_seconds", "require_both_correct")}),
        ("Wording", {"fields": ("public_title", "public_description", "question", "wording", "consent_text",
                                "consent_version", "instructions", "questionnaire")}),
        ("Recruiting", {"fields": ("platform", "completion_code", "prolific_completion_url", "seed", "platform_setup",
                                   "exclusion_group", "require_invitation", "entries_per_client", "entry_rate_limit",
                                   "min_viewport_width", "min_viewport_height")}),
        ("Analysis and explainers", {"fields": ("explainer_options", "exclusion_rules")}),
        ("Changing a live study", {"fields": ("confirm_live_change",),
                                   "description": "Methods, kind, model, model pair and image set of a study that "
                                                  "participants entered cannot change (its stimuli are prepared). "
                                                  "Platform, wording and quotas can, after confirming here."}),
        ("Items and progress", {"fields": ("item_summary", "created_at")}),
        ("Validity audit (before launch)", {
            "fields": ("validity_panel", "validity_acknowledged"),
            "description": "Can a worker answer from anything but the explanation? Publishing (status live) needs "
                           "the latest audit to pass, or its failures acknowledged here after reading them.",
        }),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[models.Study]:
        return super().get_queryset(request).annotate(
            answered=Sum("items__n_answered", filter=Q(items__role="main")),
            main_items=Count("items", filter=Q(items__role="main")),
        )

    # The tidy CSV holds hashed worker ids and platform assignment/session ids, no raw worker ids.
    @admin.action(description="Download tidy CSV of the judgments (one row per judgment)", permissions=["view"])
    def export_tidy_csv(self, request: HttpRequest, queryset: QuerySet[models.Study]) -> HttpResponse:
        from studies.services.exports import streaming_csv_response, tidy_lines_for_studies

        studies = list(queryset.order_by("pk"))
        name = f"study-{studies[0].pk}-tidy.csv" if len(studies) == 1 else "studies-tidy.csv"
        return streaming_csv_response(tidy_lines_for_studies(studies), name)

    @admin.action(description="Pilot with simulated workers (5 heatmap_reader participants, flagged simulated)",
                  permissions=["change"])
    def pilot_simulated(self, request: HttpRequest, queryset: QuerySet[models.Study]) -> None:
        from studies.fixtures.simulation.pilot import pilot_run

        for study in queryset:
            try:
                lines = pilot_run(study_id=study.pk)
            except ValueError as exc:
                self.message_user(request, str(exc), messages.ERROR)
                continue
            self.message_user(request, f"{study.name}: " + " | ".join(lines[:2] + lines[-1:]), messages.INFO)

    @admin.action(description="Evaluate explanations automatically (metrics, controls, sanity check; gpu queue)",
                  permissions=["change"])
    def evaluate_explanations(self, request: HttpRequest, queryset: QuerySet[models.Study]) -> None:
        from studies.pipeline.evaluation import EvaluationRefused, study_evaluation_start

        for study in queryset:
            try:
                job = study_evaluation_start(study_id=study.pk)
            except EvaluationRefused as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(request, f"{study.name}: evaluate job {job.public_id} {job.status}.")

    @admin.action(description="Run the validity audit (stimulus format, layout, catch trials, Robot A side)",
                  permissions=["change"])
    def audit_validity(self, request: HttpRequest, queryset: QuerySet[models.Study]) -> None:
        from studies.services.validity import study_validity_audit

        for study in queryset:
            report = study_validity_audit(study_id=study.pk)
            level = messages.SUCCESS if report.passed else messages.WARNING
            self.message_user(request, f"{study.name}: validity audit {report.summary()}", level)

    @admin.action(description="Prepare stimuli (predict, plan items, render heatmaps on the gpu queue)",
                  permissions=["change"])
    def prepare_stimuli(self, request: HttpRequest, queryset: QuerySet[models.Study]) -> None:
        for study in queryset:
            self._lifecycle(request, study, "prepare")

    @admin.action(description="Publish (set live: needs prepared stimuli, enough items, the validity audit)",
                  permissions=["change"])
    def publish_study(self, request: HttpRequest, queryset: QuerySet[models.Study]) -> None:
        for study in queryset:
            self._lifecycle(request, study, "publish")

    @admin.action(description="Pause (no new entries; participants already working may finish)",
                  permissions=["change"])
    def pause_study(self, request: HttpRequest, queryset: QuerySet[models.Study]) -> None:
        for study in queryset:
            self._lifecycle(request, study, "pause")

    @admin.action(description="Close (for good: no new entries, results kept)", permissions=["change"])
    def close_study(self, request: HttpRequest, queryset: QuerySet[models.Study]) -> None:
        for study in queryset:
            self._lifecycle(request, study, "close")

    @admin.action(description="Approve and reject on the platform (by the payment decisions)", permissions=["change"])
    def platform_decide(self, request: HttpRequest, queryset: QuerySet[models.Study]) -> HttpResponse | None:
        """First a confirmation page (platform, how many approved and rejected per study); on a POST
        with ``confirm=yes``, ``platform_payments_decide`` is enqueued per study after the commit.
        The study has no reward field, so the page states the counts only, not an amount."""
        from studies.services.exports import exclusion_flags_compute, payment_decisions
        from studies.tasks import platform_payments_decide_enqueue

        studies = list(queryset.order_by("pk"))
        on_platform = [s for s in studies if s.platform in (models.Study.Platform.MTURK, models.Study.Platform.PROLIFIC)]
        for study in studies:
            if study not in on_platform:
                self.message_user(request, f"{study.name}: recruits by plain link, nothing to approve or reject "
                                           "on a platform.", messages.WARNING)  # fmt: skip
        if not on_platform:
            return None
        if request.POST.get("confirm") == "yes":
            for study in on_platform:
                platform_payments_decide_enqueue(study_id=study.pk)
                self.message_user(request, f"{study.name}: approving and rejecting on "
                                           f"{study.get_platform_display()} (queued).", messages.SUCCESS)  # fmt: skip
            return None
        rows = []
        for study in on_platform:
            decisions = payment_decisions(study=study, flags=exclusion_flags_compute(study=study))
            counts = {"approve": 0, "reject": 0, "review": 0, "screened_out": 0}
            for decision in decisions:
                counts[decision.action] = counts.get(decision.action, 0) + 1
            rows.append({"study": study, "platform": study.get_platform_display(), **counts,
                         "left": counts["review"] + counts["screened_out"]})  # fmt: skip
        context = {
            **self.admin_site.each_context(request),
            "title": "Approve and reject on the platform",
            "opts": self.model._meta,
            "rows": rows,
            "selected": [s.pk for s in studies],
            "action": "platform_decide",
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/studies/study/platform_confirm.html", context)

    def _lifecycle(self, request: HttpRequest, study: models.Study, step: str) -> bool:
        """Run one lifecycle step through its service and say what happened (or why not)."""
        from studies.services import lifecycle

        try:
            if step == "prepare":
                from studies.services.study_checks import study_config_errors

                errors = study_config_errors(study=study)
                errors.pop("trials_per_participant", None)  # the items are made again: checked at publish
                if errors:
                    raise lifecycle.PrepareRefused(f"{study.name}: fix the study first: " + "; ".join(
                        f"{field}: {message}" for field, found in errors.items() for message in found))
                job = lifecycle.study_prepare(study_id=study.pk, background=True)
                self.message_user(request, f"{study.name}: preparation started (job {job.public_id}); its progress "
                                           f"shows under Jobs on the study page.")
            elif step == "publish":
                lifecycle.study_publish(study_id=study.pk)
                self.message_user(request, f"{study.name} is live: the worker link accepts participants.",
                                  messages.SUCCESS)
            elif step == "pause":
                lifecycle.study_pause(study_id=study.pk)
                self.message_user(request, f"{study.name} is paused: new entries are refused (\"not open\"); "
                                           f"participants already working may finish. Publish opens it again.")
            elif step == "close":
                lifecycle.study_close(study_id=study.pk)
                self.message_user(request, f"{study.name} is closed: no new entries; results and exports stay.")
            else:  # pragma: no cover - the URL pattern and the actions name only known steps
                raise ValueError(step)
        except lifecycle.PrepareRefused as exc:
            self.message_user(request, f"{step.capitalize()} refused: {exc}", messages.ERROR)
            return False
        return True

    def get_urls(self):  # type: ignore[no-untyped-def]
        extra = [
            path("<int:study_id>/lifecycle/<str:step>/", self.admin_site.admin_view(self.lifecycle_view),
                 name="studies_study_lifecycle"),
        ]
        return extra + super().get_urls()

    def lifecycle_view(self, request: HttpRequest, study_id: int, step: str) -> HttpResponse:
        """The change page's Prepare / Publish / Pause / Close buttons (POST, change permission)."""
        from django.shortcuts import get_object_or_404

        study = get_object_or_404(models.Study, pk=study_id)
        if step not in self.LIFECYCLE_STEPS:
            return HttpResponse(status=404)
        if request.method != "POST":
            return HttpResponse(status=405)
        if not self.has_change_permission(request, study):
            return HttpResponse(status=403)
        self._lifecycle(request, study, step)
        return HttpResponseRedirect(reverse("admin:studies_study_change", args=[study.pk]))

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):  # type: ignore[no-untyped-def]
        if obj is not None and obj.pk:
            from studies.pipeline.jobs import ACTIVE

            active = obj.jobs.filter(kind=models.Job.Kind.PREPARE, status__in=ACTIVE)
            job = active.order_by("-created_at").first()
            context.update({
                "lifecycle_steps": self._lifecycle_steps(obj) if self.has_change_permission(request, obj) else [],
                "active_job": job,
                "active_job_progress": _job_progress_text(job) if job else "",
            })  # fmt: skip
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    @staticmethod
    def _lifecycle_steps(study: models.Study) -> list[tuple[str, str]]:
        """The buttons the study's status offers: ``(step, label)``."""
        status = models.Study.Status
        offered = {
            status.DRAFT: [("prepare", "Prepare"), ("close", "Close")],
            status.FAILED: [("prepare", "Prepare again"), ("close", "Close")],
            status.PREPARING: [],
            status.READY: [("publish", "Publish"), ("prepare", "Prepare again"), ("close", "Close")],
            status.LIVE: [("pause", "Pause"), ("close", "Close")],
            status.CLOSED: [],
        }
        return offered.get(study.status, [])

    def save_model(self, request: HttpRequest, obj: models.Study, form: forms.ModelForm, change: bool) -> None:
        """A ready study whose stimuli fields changed (no participants: the form allows it) needs
        preparing again: it returns to draft, so Publish asks for a new preparation."""
        stored = models.Study.objects.filter(pk=obj.pk).first() if change else None
        stale = (stored is not None and stored.status == models.Study.Status.READY and isinstance(form, StudyAdminForm)
                 and any(f in STIMULI_FIELDS for f in form._changed_from(stored)))
        if stale:
            obj.status = models.Study.Status.DRAFT
        super().save_model(request, obj, form, change)
        if stale:
            self.message_user(request, f"{obj.name}: the methods, model or images changed; prepare it again before "
                                       f"publishing.", messages.WARNING)

    @admin.action(description="Cancel stimulus preparation", permissions=["change"])
    def cancel_preparation(self, request: HttpRequest, queryset: QuerySet[models.Study]) -> None:
        from studies.pipeline.jobs import ACTIVE
        from studies.pipeline.prepare import job_cancel

        for job in models.Job.objects.filter(study__in=queryset, kind=models.Job.Kind.PREPARE, status__in=ACTIVE):
            job_cancel(job_id=job.pk)
            self.message_user(request, f"{job.study.name}: preparation cancelled at {job.done}/{job.total}.")

    @admin.action(description="Resume stimulus preparation (re-enqueues what is missing)", permissions=["change"])
    def resume_preparation(self, request: HttpRequest, queryset: QuerySet[models.Study]) -> None:
        from studies.pipeline.prepare import PrepareRefused, job_resume

        for study in queryset:
            job = study.jobs.filter(kind=models.Job.Kind.PREPARE).order_by("-created_at").first()
            if job is None:
                self.message_user(request, f"{study.name}: no prepare job to resume", messages.WARNING)
                continue
            try:
                job_resume(job_id=job.pk, background=True)
            except PrepareRefused as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(request, f"{study.name}: preparation resumed ({job.done}/{job.total} done).")

    @admin.display(description="methods")
    def n_methods(self, obj: models.Study) -> int:
        return len(obj.methods or [])

    @admin.display(description="judgments")
    def progress(self, obj: models.Study) -> str:
        wanted = (obj.main_items or 0) * obj.judgments_per_item
        return f"{obj.answered or 0} / {wanted}"

    @admin.display(description="what to paste into the platform")
    def platform_setup(self, obj: models.Study) -> str:
        """Only the chosen platform's set-up (``selectors.participation.platform_setup``), with a
        warning while ``XAISTUDY_PUBLIC_URL`` is not set (the links would name no real host)."""
        if obj.pk is None:
            return "-"
        from django.conf import settings

        from studies.selectors.participation import platform_setup

        public_url = getattr(settings, "XAISTUDY_PUBLIC_URL", "") or ""
        setup = platform_setup(study=obj, base_url=public_url or "https://YOUR-HOST")
        labels = {
            "title": "Title (public: use it as the HIT's / Prolific study's title)",
            "description": "Description (public)",
            "link": "Study link",
            "mturk_external_question": "MTurk: ExternalQuestion (HTTPS; FrameHeight 0 = full height)",
            "prolific_study_url": "Prolific: study URL (URL parameters)",
            "prolific_completion_url": "Prolific: completion URL",
            "completion_code": "Prolific: completion code",
        }
        rows = [(labels[key], setup[key] or "-") for key in labels if key in setup]
        notes = {
            models.Study.Platform.MTURK: "Each worker gets an own completion code; the page submits the HIT.",
            models.Study.Platform.PROLIFIC: "Paste the study URL and the completion code into Prolific.",
        }
        body = format_html(
            "<p>Platform: <b>{}</b>. {}</p>", setup["platform"],
            notes.get(obj.platform, "Share the link; each participant is shown an own completion code at the end."),
        )
        body += format_html(
            "".join("<p><b>{}</b></p><pre style='white-space:pre-wrap'>{}</pre>" for _ in rows),
            *[part for row in rows for part in row],
        )
        if not public_url:
            body = format_html(
                "<p class='errornote' id='public-url-warning'>XAISTUDY_PUBLIC_URL is not set: these links name "
                "no real host. Set it to the server's public HTTPS address before pasting them.</p>{}", body)
        return body

    @admin.display(description="latest audit")
    def validity_panel(self, obj: models.Study) -> str:
        """The stored validity report: each check with what was measured, the figure and the threshold."""
        from django.template.loader import render_to_string

        from studies.services.validity import ValidityReport, study_fingerprint

        report = ValidityReport.from_dict(obj.validity_report or {}) if obj.pk else None
        stale = report is not None and report.fingerprint != study_fingerprint(study=obj)
        return render_to_string("admin/studies/study/validity_panel.html",
                                {"report": report, "stale": stale, "study": obj})  # fmt: skip

    @admin.display(description="items")
    def item_summary(self, obj: models.Study) -> str:
        if obj.pk is None:
            return "-"
        rows = (
            obj.items.values("role", "method")
            .annotate(n=Count("id"), answered=Sum("n_answered"), leased=Sum("n_leased"))
            .order_by("role", "method")
        )
        if not rows:
            return "no items yet (prepare the study)"
        header = "<tr><th>role</th><th>method</th><th>items</th><th>answered</th><th>open leases</th></tr>"
        body = "".join(
            format_html(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                row["role"], row["method"], row["n"], row["answered"] or 0, row["leased"] or 0,
            )
            for row in rows
        )
        return format_html("<table>{}{}</table>", mark_safe(header), mark_safe(body))  # header is a literal; body rows are escaped by format_html


@admin.register(models.Stimulus)
class StimulusAdmin(admin.ModelAdmin):
    list_display = ("method", "image", "model", "target_class", "short_sha", "created_at")
    list_filter = ("method", "model")
    search_fields = ("sha256", "image__original_name")
    list_select_related = ("image", "model")
    readonly_fields = ("preview",)

    @admin.display(description="sha256")
    def short_sha(self, obj: models.Stimulus) -> str:
        return obj.sha256[:12]

    @admin.display(description="preview")
    def preview(self, obj: models.Stimulus) -> str:
        return format_html('<img src="{}" style="max-width:320px">', obj.file.url) if obj.file else "-"


@admin.register(models.Item)
class ItemAdmin(admin.ModelAdmin):
    list_display = ("study", "role", "method", "image", "target_label", "n_answered", "n_leased")
    list_filter = ("role", "method", "study")
    search_fields = ("public_id", "image__original_name", "target_label")
    list_select_related = ("study", "image")
    raw_id_fields = ("image", "stimulus_a", "stimulus_b")


@admin.register(models.Participant)
class ParticipantAdmin(admin.ModelAdmin):
    """Participants as the worker flow made them.

    Never shown: the participant token and the session key, either of which (the session key
    with the public worker id) lets its holder act as the worker. The raw platform ids (worker
    id, MTurk assignment, Prolific session) are shown and searchable only with
    ``studies.export_worker_ids``; everyone else sees the salted worker hash.
    """

    formfield_overrides = URL_FIELD_OVERRIDES
    list_display = ("study", "platform", "worker_hash_short", "status", "is_simulated", "started_at", "completed_at")
    list_filter = ("platform", "status", "is_simulated", "study")
    search_fields = ("platform_worker_id", "worker_hash", "mturk_assignment_id", "prolific_session_id")
    list_select_related = ("study",)
    readonly_fields = ("worker_hash", "arm", "started_at", "completed_at")
    #: Fields never in the form (``token`` is not editable, so it is not in the form either).
    SECRET_FIELDS = ("session_key",)
    #: Fields that only users with ``studies.export_worker_ids`` see and search.
    RAW_ID_FIELDS = ("platform_worker_id", "mturk_assignment_id", "prolific_session_id")

    def _sees_raw_ids(self, request: HttpRequest) -> bool:
        return request.user.has_perm("studies.export_worker_ids")

    def get_exclude(self, request: HttpRequest, obj: models.Participant | None = None) -> list[str]:
        hidden = [*(super().get_exclude(request, obj) or ()), *self.SECRET_FIELDS]
        if not self._sees_raw_ids(request):
            hidden += self.RAW_ID_FIELDS
        return hidden

    def get_search_fields(self, request: HttpRequest) -> tuple[str, ...]:
        fields = tuple(super().get_search_fields(request))
        return fields if self._sees_raw_ids(request) else tuple(f for f in fields if f not in self.RAW_ID_FIELDS)

    @admin.display(description="worker")
    def worker_hash_short(self, obj: models.Participant) -> str:
        return obj.worker_hash[:12]


@admin.register(models.Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("study", "kind", "status", "stage", "job_progress", "short_error", "created_at", "finished_at")
    list_filter = ("kind", "status")
    list_select_related = ("study",)
    readonly_fields = ("public_id", "job_progress", "chunk_attempts", "created_at", "started_at", "updated_at",
                       "finished_at")
    actions = ("cancel_jobs", "resume_jobs")

    @admin.display(description="progress (done/total, rate, ETA)")
    def job_progress(self, obj: models.Job) -> str:
        return _job_progress_text(obj)

    @admin.display(description="error")
    def short_error(self, obj: models.Job) -> str:
        return (obj.error.splitlines() or [""])[0][:160]

    @admin.action(description="Cancel the selected jobs", permissions=["change"])
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[models.Job]) -> None:
        from studies.pipeline.prepare import job_cancel

        for job in queryset:
            job_cancel(job_id=job.pk)
        self.message_user(request, f"Cancelled {queryset.count()} job(s).")

    @admin.action(description="Resume the selected prepare jobs", permissions=["change"])
    def resume_jobs(self, request: HttpRequest, queryset: QuerySet[models.Job]) -> None:
        from studies.pipeline.prepare import PrepareRefused, job_resume

        for job in queryset:
            try:
                job_resume(job_id=job.pk, background=True)
            except PrepareRefused as exc:
                self.message_user(request, str(exc), messages.ERROR)
        self.message_user(request, "Resumed; progress updates as chunks finish.")


def _job_progress_text(job: models.Job) -> str:
    from studies.pipeline.jobs import job_progress

    return job_progress(job).describe()


@admin.register(models.Response)
class ResponseAdmin(admin.ModelAdmin):
    list_display = ("assignment", "chosen_option", "correct", "score_model_a", "client_response_ms", "created_at")
    list_filter = ("correct",)
    raw_id_fields = ("assignment",)


@admin.register(models.EvaluationResult)
class EvaluationResultAdmin(admin.ModelAdmin):
    list_display = ("study", "method", "metric", "created_at")
    list_filter = ("metric", "method")


@admin.register(models.PlatformAction)
class PlatformActionAdmin(admin.ModelAdmin):
    """The payment ledger, read-only: rows are written only by ``services.ledger`` (view permission)."""

    list_display = ("platform", "action", "status", "amount_cents", "idempotency_key", "participant", "updated_at")
    list_filter = ("platform", "action", "status")
    search_fields = ("idempotency_key",)
    raw_id_fields = ("study", "participant")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
