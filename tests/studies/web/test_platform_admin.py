"""The platform admin action (approve and reject by the payment decisions, issue #17) and the
read-only ledger admin. Nothing here reaches a platform: the service the task calls is patched."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from studies import tasks
from studies.fixtures.builders import make_worker_study
from studies.models import Participant, PlatformAction, Study
from studies.services import mturk

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:studies_study_changelist"


@pytest.fixture
def study() -> Study:
    study = make_worker_study(platform=Study.Platform.MTURK, with_files=False)
    for n, status in enumerate([Participant.Status.COMPLETED, Participant.Status.COMPLETED, Participant.Status.IN_PROGRESS]):
        Participant.objects.create(study=study, platform="mturk", platform_worker_id=f"W{n}", worker_hash=f"h{n}",
                                   session_key=f"A{n}", mturk_assignment_id=f"A{n}", status=status,
                                   completion_code="CODE" if status == Participant.Status.COMPLETED else "")  # fmt: skip
    return study


@pytest.fixture
def recorded(monkeypatch) -> list[dict]:
    calls: list[dict] = []
    monkeypatch.setattr(mturk, "assignments_decide", lambda **kwargs: calls.append(kwargs) or {"approve": [], "reject": []})
    return calls


def _post(client, study: Study, **extra: str):  # type: ignore[no-untyped-def]
    data = {"action": "platform_decide", "_selected_action": [study.pk], "index": "0", **extra}
    return client.post(reverse(CHANGELIST), data)


def test_the_confirmation_page_states_the_counts_and_enqueues_nothing(admin_client, study, recorded,
                                                                      django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = _post(admin_client, study)
    assert response.status_code == 200
    assert response.templates[0].name == "admin/studies/study/platform_confirm.html"
    rows = response.context["rows"]
    assert [(r["study"].pk, r["approve"], r["reject"], r["left"]) for r in rows] == [(study.pk, 2, 0, 1)]
    page = response.content.decode()
    assert "Amazon Mechanical Turk" in page
    assert 'name="confirm" value="yes"' in page
    assert "no reward field" in page  # the amount is not stated, and the page says why
    assert not callbacks
    assert not recorded


def test_confirming_enqueues_the_task_which_calls_the_service(admin_client, study, recorded,
                                                            django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = _post(admin_client, study, confirm="yes")
    assert response.status_code == 302
    assert len(callbacks) == 1
    assert [call["study"].pk for call in recorded] == [study.pk]  # eager: the task ran mturk.assignments_decide
    messages = [str(m) for m in response.wsgi_request._messages]
    assert any("queued" in m for m in messages)


def test_the_confirmation_form_posts_back_to_the_action(admin_client, study, recorded,
                                                       django_capture_on_commit_callbacks):
    """The page's form (no ``index``, as Django's own delete confirmation) runs the action again."""
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse(CHANGELIST), {"action": "platform_decide",
                                                           "_selected_action": [study.pk], "confirm": "yes"})  # fmt: skip
    assert response.status_code == 302
    assert len(recorded) == 1


def test_a_plain_link_study_is_refused_without_a_page(admin_client, recorded, django_capture_on_commit_callbacks):
    study = make_worker_study(platform=Study.Platform.LINK, with_files=False)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = _post(admin_client, study, confirm="yes")
    assert response.status_code == 302
    assert not callbacks
    assert not recorded


def test_view_only_staff_cannot_run_it(client, django_user_model, study, recorded, django_capture_on_commit_callbacks):
    user = django_user_model.objects.create_user("viewer", "v@example.org", "pw-for-tests-only", is_staff=True)
    user.user_permissions.add(Permission.objects.get(content_type__app_label="studies", codename="view_study"))
    client.force_login(user)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = _post(client, study, confirm="yes")
    assert response.status_code == 302  # "no action selected": the action is not offered
    assert not callbacks
    assert not recorded


def test_the_task_dispatches_by_platform(study, monkeypatch):
    from studies.services import prolific

    assert tasks.platform_payments_decide.acks_late
    assert not tasks.platform_payments_decide.name.split(".")[-1].startswith("gpu_")
    monkeypatch.setattr(mturk, "assignments_decide", lambda **kwargs: {"approve": [1, 2], "reject": [3]})
    assert tasks.platform_payments_decide(study.pk) == {"approve": 2, "reject": 1}
    approved, rejected = [], []
    monkeypatch.setattr(prolific, "submission_approve", lambda **kw: approved.append(kw["participant"].pk) or
                        PlatformAction(pk=7))  # fmt: skip
    monkeypatch.setattr(prolific, "submission_reject", lambda **kw: rejected.append(kw) or PlatformAction(pk=8))
    Study.objects.filter(pk=study.pk).update(platform=Study.Platform.PROLIFIC)
    Participant.objects.filter(study=study).update(platform="prolific")
    assert tasks.platform_payments_decide(study.pk) == {"approve": 2, "reject": 0}
    assert len(approved) == 2
    assert not rejected


def test_the_ledger_admin_is_read_only(admin_client, study):
    from django.contrib import admin as django_admin

    model_admin = django_admin.site._registry[PlatformAction]
    row = PlatformAction.objects.create(study=study, platform="mturk", action="approve", idempotency_key="k1",
                                        status=PlatformAction.Status.CONFIRMED)  # fmt: skip
    request = admin_client.get("/").wsgi_request
    from django.contrib.auth import get_user_model

    request.user = get_user_model().objects.get(username="admin")
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request, row)
    assert not model_admin.has_delete_permission(request, row)
    assert model_admin.has_view_permission(request, row)
    assert model_admin.list_display == ("platform", "action", "status", "amount_cents", "idempotency_key",
                                        "participant", "updated_at")  # fmt: skip
    page = admin_client.get(reverse("admin:studies_platformaction_changelist")).content.decode()
    assert "k1" in page
    assert admin_client.get(reverse("admin:studies_platformaction_add")).status_code == 403
