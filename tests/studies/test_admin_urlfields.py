"""Admin URL fields: an explicit scheme for bare domains, so Django 5.2 warns nothing and 6.0 changes nothing."""

from __future__ import annotations

import warnings

import pytest
from django.contrib import admin
from django.db import models
from django.test import RequestFactory
from django.utils.deprecation import RemovedInDjango60Warning

pytestmark = pytest.mark.django_db


def _admins_with_url_fields() -> list[admin.ModelAdmin]:
    return [model_admin for model, model_admin in admin.site._registry.items()
            if model._meta.app_label == "studies"
            and any(isinstance(field, models.URLField) for field in model._meta.get_fields())]


def test_every_admin_url_field_keeps_http_for_bare_domains(django_user_model) -> None:  # type: ignore[no-untyped-def]
    request = RequestFactory().get("/admin/")
    request.user = django_user_model.objects.create_superuser("root", "root@example.org", "pw-for-tests-only")
    found = []
    for model_admin in _admins_with_url_fields():
        with warnings.catch_warnings():
            warnings.simplefilter("error", RemovedInDjango60Warning)
            form = model_admin.get_form(request)
        model_fields = {f.name: f for f in model_admin.model._meta.get_fields()}
        for name, field in form.base_fields.items():  # form-only fields (confirm_live_change) are skipped
            if isinstance(model_fields.get(name), models.URLField):
                found.append(f"{model_admin.model.__name__}.{name}")
                assert field.clean("example.org/done?cc=1") == "http://example.org/done?cc=1"
                assert field.clean("https://example.org/done") == "https://example.org/done"
    assert sorted(found) == ["Participant.mturk_submit_to", "Study.prolific_completion_url"]
