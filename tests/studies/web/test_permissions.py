"""Who may do what: every results URL and every custom admin action, for each kind of user.

Roles (``ROLES``): anonymous; staff without permissions; view-only staff (``view_study`` and
``view_job``); view-only staff who may also export raw worker ids (``export_worker_ids``);
staff who may change studies and jobs; a superuser. ``RESULTS`` and ``ACTIONS`` are the
tables of what each role gets; the tests walk every URL and action against them.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from studies.fixtures.synthetic_responses import synthetic_study_create
from studies.models import Job, Study
from studies.services.exports import EXPORT_KINDS
from studies.web import plots

pytestmark = pytest.mark.django_db

ROLES = ("anonymous", "staff", "view", "view_ids", "change", "superuser")
PERMISSIONS = {
    "anonymous": (),
    "staff": (),
    "view": ("studies.view_study", "studies.view_job"),
    "view_ids": ("studies.view_study", "studies.view_job", "studies.export_worker_ids"),
    "change": ("studies.view_study", "studies.change_study", "studies.view_job", "studies.change_job"),
    "superuser": (),
}
#: Exports with raw platform worker ids (need ``studies.export_worker_ids`` besides ``view_study``).
WORKER_ID_EXPORTS = {"mturk", "payments-mturk", "payments-prolific"}

LOGIN = "login"  # 302 to the admin login
DENIED = 403
OK = 200

#: Results URLs by group -> what each role gets.
RESULTS: dict[str, dict[str, object]] = {
    "page":        {"anonymous": LOGIN, "staff": DENIED, "view": OK,     "view_ids": OK, "change": OK,     "superuser": OK},
    "plot":        {"anonymous": LOGIN, "staff": DENIED, "view": OK,     "view_ids": OK, "change": OK,     "superuser": OK},
    "export":      {"anonymous": LOGIN, "staff": DENIED, "view": OK,     "view_ids": OK, "change": OK,     "superuser": OK},
    "export_ids":  {"anonymous": LOGIN, "staff": DENIED, "view": DENIED, "view_ids": OK, "change": DENIED, "superuser": OK},
    "pack":        {"anonymous": LOGIN, "staff": DENIED, "view": OK,     "view_ids": OK, "change": OK,     "superuser": OK},
}  # fmt: skip


def _user(role: str, django_user_model):  # type: ignore[no-untyped-def]
    if role == "anonymous":
        return None
    if role == "superuser":
        return django_user_model.objects.create_superuser(role, f"{role}@example.org", "pw-for-tests-only")
    user = django_user_model.objects.create_user(role, f"{role}@example.org", "pw-for-tests-only", is_staff=True)
    for dotted in PERMISSIONS[role]:
        app_label, codename = dotted.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return user


@pytest.fixture
def login(client, django_user_model) -> Callable[[str], object]:
    def as_role(role: str):  # type: ignore[no-untyped-def]
        user = _user(role, django_user_model)
        if user is not None:
            client.force_login(user)
        return client

    return as_role


@pytest.fixture
def study() -> Study:
    return synthetic_study_create(n_workers=6, trials_per_worker=6, n_images=6, seed=11)


def results_urls(study: Study) -> list[tuple[str, str]]:
    """Every results URL of ``study`` with its group in ``RESULTS``."""
    slug = study.slug
    urls = [("page", reverse("studies:results", args=[slug]))]
    urls += [("plot", reverse("studies:results_plot", args=[slug, name, fmt]))
             for name in plots.PLOT_NAMES for fmt in ("png", "svg")]  # fmt: skip
    urls += [("plot", reverse("studies:results_sanity_plot", args=[slug, fmt])) for fmt in ("png", "svg")]
    urls += [("export_ids" if kind in WORKER_ID_EXPORTS else "export", reverse("studies:results_export", args=[slug, kind]))
             for kind in EXPORT_KINDS]  # fmt: skip
    urls += [("pack", reverse("studies:results_pack", args=[slug]))]
    return urls


def test_the_table_covers_every_results_url_and_export(study):
    groups = {group for group, _ in results_urls(study)}
    assert groups == set(RESULTS)
    assert {url.rsplit("/", 1)[1] for group, url in results_urls(study) if group.startswith("export")} == {
        f"{kind}.csv" for kind in EXPORT_KINDS
    }
    # The view's own list of exports without worker ids agrees with this table.
    from studies.web.results import VIEW_ONLY_EXPORTS

    assert set(EXPORT_KINDS) - VIEW_ONLY_EXPORTS == WORKER_ID_EXPORTS


@pytest.mark.parametrize("role", ROLES)
def test_results_urls(role, login, study):
    client = login(role)
    for group, url in results_urls(study):
        expected = RESULTS[group][role]
        response = client.get(url)
        if expected == LOGIN:
            assert response.status_code == 302, url
            assert response["Location"].startswith("/admin/login/"), url
            continue
        assert response.status_code == expected, (url, response.status_code)
        if expected == OK:
            cache_control = response["Cache-Control"]
            assert "no-store" in cache_control, url
            assert "private" in cache_control, url
            if response.streaming:  # read it all (the test client then closes it)
                b"".join(response.streaming_content)


@pytest.mark.parametrize("role", ["view", "view_ids"])
def test_results_page_lists_only_the_exports_the_user_may_download(role, login, study):
    text = login(role).get(reverse("studies:results", args=[study.slug])).content.decode()
    for kind in EXPORT_KINDS:
        link = reverse("studies:results_export", args=[study.slug, kind])
        assert (link in text) == (kind not in WORKER_ID_EXPORTS or role == "view_ids"), kind


def test_worker_id_exports_hold_raw_ids_and_the_others_do_not(login, study):
    client = login("superuser")
    raw_ids = list(study.participants.values_list("platform_worker_id", flat=True))
    assert raw_ids
    for kind in EXPORT_KINDS:
        response = client.get(reverse("studies:results_export", args=[study.slug, kind]))
        body = b"".join(response.streaming_content).decode()
        holds_ids = any(worker_id in body for worker_id in raw_ids)
        assert holds_ids == (kind in {"mturk", "payments-mturk"}), kind  # the study recruits on MTurk
    import io
    import zipfile

    pack = client.get(reverse("studies:results_pack", args=[study.slug]))
    archive = zipfile.ZipFile(io.BytesIO(b"".join(pack.streaming_content)))
    text = "".join(archive.read(name).decode("utf-8", "replace") for name in archive.namelist())
    assert not any(worker_id in text for worker_id in raw_ids)


# --- admin actions -------------------------------------------------------------------------

RAN = "ran"  # the action called its service (or returned the CSV)
REFUSED = "refused"  # not offered to this user: the changelist answers, nothing is called

#: (changelist, action) -> what each role gets.
ACTIONS: dict[tuple[str, str], dict[str, object]] = {
    ("study", "export_tidy_csv"):       {"anonymous": LOGIN, "staff": DENIED, "view": RAN,     "view_ids": RAN,     "change": RAN, "superuser": RAN},
    ("study", "prepare_stimuli"):       {"anonymous": LOGIN, "staff": DENIED, "view": REFUSED, "view_ids": REFUSED, "change": RAN, "superuser": RAN},
    ("study", "publish_study"):         {"anonymous": LOGIN, "staff": DENIED, "view": REFUSED, "view_ids": REFUSED, "change": RAN, "superuser": RAN},
    ("study", "pause_study"):           {"anonymous": LOGIN, "staff": DENIED, "view": REFUSED, "view_ids": REFUSED, "change": RAN, "superuser": RAN},
    ("study", "close_study"):           {"anonymous": LOGIN, "staff": DENIED, "view": REFUSED, "view_ids": REFUSED, "change": RAN, "superuser": RAN},
    ("study", "pilot_simulated"):       {"anonymous": LOGIN, "staff": DENIED, "view": REFUSED, "view_ids": REFUSED, "change": RAN, "superuser": RAN},
    ("study", "evaluate_explanations"): {"anonymous": LOGIN, "staff": DENIED, "view": REFUSED, "view_ids": REFUSED, "change": RAN, "superuser": RAN},
    ("study", "cancel_preparation"):    {"anonymous": LOGIN, "staff": DENIED, "view": REFUSED, "view_ids": REFUSED, "change": RAN, "superuser": RAN},
    ("study", "resume_preparation"):    {"anonymous": LOGIN, "staff": DENIED, "view": REFUSED, "view_ids": REFUSED, "change": RAN, "superuser": RAN},
    ("study", "audit_validity"):        {"anonymous": LOGIN, "staff": DENIED, "view": REFUSED, "view_ids": REFUSED, "change": RAN, "superuser": RAN},
    ("study", "platform_decide"):       {"anonymous": LOGIN, "staff": DENIED, "view": REFUSED, "view_ids": REFUSED, "change": RAN, "superuser": RAN},
    ("job", "cancel_jobs"):             {"anonymous": LOGIN, "staff": DENIED, "view": REFUSED, "view_ids": REFUSED, "change": RAN, "superuser": RAN},
    ("job", "resume_jobs"):             {"anonymous": LOGIN, "staff": DENIED, "view": REFUSED, "view_ids": REFUSED, "change": RAN, "superuser": RAN},
}  # fmt: skip

#: The service each action calls (patched to record the call instead of doing the work).
SERVICES = {
    "prepare_stimuli": ("studies.pipeline.prepare", "study_prepare"),
    "publish_study": ("studies.services.lifecycle", "study_publish"),
    "pause_study": ("studies.services.lifecycle", "study_pause"),
    "close_study": ("studies.services.lifecycle", "study_close"),
    "pilot_simulated": ("studies.fixtures.simulation.pilot", "pilot_run"),
    "evaluate_explanations": ("studies.pipeline.evaluation", "study_evaluation_start"),
    "cancel_preparation": ("studies.pipeline.prepare", "job_cancel"),
    "resume_preparation": ("studies.pipeline.prepare", "job_resume"),
    "audit_validity": ("studies.services.validity", "study_validity_audit"),
    "platform_decide": ("studies.tasks", "platform_payments_decide_enqueue"),  # after its confirmation page
    "cancel_jobs": ("studies.pipeline.prepare", "job_cancel"),
    "resume_jobs": ("studies.pipeline.prepare", "job_resume"),
}


def test_the_action_table_covers_every_custom_action():
    from django.contrib import admin as django_admin

    declared = set()
    for model, name in (("study", Study), ("job", Job)):
        model_admin = django_admin.site._registry[name]
        for action in model_admin.actions:
            declared.add((model, action))
            function = getattr(model_admin, action)
            assert getattr(function, "allowed_permissions", None), f"{action} declares no allowed_permissions"
            expected = {"view"} if action == "export_tidy_csv" else {"change"}
            assert set(function.allowed_permissions) == expected, action
    assert declared == set(ACTIONS)


@pytest.mark.parametrize(("changelist", "action"), list(ACTIONS))
@pytest.mark.parametrize("role", ROLES)
def test_admin_actions(role, changelist, action, login, study, monkeypatch):
    job = Job.objects.create(study=study, kind=Job.Kind.PREPARE, status=Job.Status.RUNNING, total=4, done=1)
    calls: list[dict] = []
    if action in SERVICES:
        module_name, function = SERVICES[action]
        module = __import__(module_name, fromlist=[function])

        def record(*args, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(kwargs)
            if function == "pilot_run":
                return ["pilot", "done"]
            if function == "study_validity_audit":
                from types import SimpleNamespace

                return SimpleNamespace(passed=True, summary=lambda: "passed")
            return job

        monkeypatch.setattr(module, function, record)
    client = login(role)
    selected = job.pk if changelist == "job" else study.pk
    url = reverse(f"admin:studies_{changelist}_changelist")
    response = client.post(url, {"action": action, "_selected_action": [selected], "index": "0",
                                 "confirm": "yes"})  # fmt: skip
    expected = ACTIONS[(changelist, action)][role]
    if expected == LOGIN:
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")
        assert not calls
    elif expected == DENIED:
        assert response.status_code == 403
        assert not calls
    elif expected == REFUSED:
        # Not among the user's actions: "No action selected" (302 back), or, where the user has
        # no action at all on that changelist, the plain changelist (200).
        assert response.status_code in (200, 302)
        if response.status_code == 302:
            assert response["Location"].startswith(url)
        assert not calls
    elif action == "export_tidy_csv":
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/csv")
        assert study.slug in b"".join(response.streaming_content).decode()
    else:
        assert response.status_code == 302
        assert calls, f"{action} did not call its service"
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING  # the services were patched: nothing else changed it


@pytest.mark.parametrize("step", ["prepare", "publish", "pause", "close"])
@pytest.mark.parametrize(("role", "expected"), [("anonymous", LOGIN), ("staff", DENIED), ("view", DENIED),
                                                ("change", RAN), ("superuser", RAN)])  # fmt: skip
def test_lifecycle_buttons_need_change_permission(role, expected, step, login, study, monkeypatch):
    """The change page's Prepare / Publish / Pause / Close buttons (POST to a custom admin URL)."""
    from studies.services import lifecycle as prepare

    calls: list[dict] = []
    service = {"prepare": "study_prepare", "publish": "study_publish", "pause": "study_pause", "close": "study_close"}
    job = Job.objects.create(study=study, kind=Job.Kind.PREPARE, status=Job.Status.PENDING)
    monkeypatch.setattr(prepare, service[step], lambda **kwargs: calls.append(kwargs) or job)
    response = login(role).post(reverse("admin:studies_study_lifecycle", args=[study.pk, step]))
    if expected == LOGIN:
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")
    elif expected == DENIED:
        assert response.status_code == 403
    else:
        assert response.status_code == 302
        assert response["Location"] == reverse("admin:studies_study_change", args=[study.pk])
    assert bool(calls) == (expected == RAN)


@pytest.mark.parametrize(("role", "expected"), [("anonymous", LOGIN), ("staff", DENIED), ("view", DENIED),
                                                ("change", DENIED), ("superuser", OK)])  # fmt: skip
def test_image_set_zip_import_needs_add_permission(role, expected, login):
    response = login(role).get(reverse("admin:studies_imageset_import_zip"))
    if expected == LOGIN:
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")
    else:
        assert response.status_code == expected


# --- the participant admin ----------------------------------------------------------------


@pytest.mark.parametrize(("extra", "sees_raw_ids"), [((), False), (("studies.export_worker_ids",), True)])
def test_participant_admin_never_shows_secrets_and_raw_ids_only_with_the_permission(
    extra, sees_raw_ids, client, django_user_model, study
):
    user = django_user_model.objects.create_user("clerk", "clerk@example.org", "pw-for-tests-only", is_staff=True)
    for dotted in ("studies.view_participant", "studies.change_participant", *extra):
        app_label, codename = dotted.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    client.force_login(user)
    participant = study.participants.exclude(mturk_assignment_id="").first()
    page = client.get(reverse("admin:studies_participant_change", args=[participant.pk])).content.decode()
    assert participant.worker_hash in page
    assert participant.token not in page
    assert 'name="session_key"' not in page  # for MTurk it is the assignment id, shown below only with the permission
    if not sees_raw_ids:
        assert participant.session_key not in page
    assert (participant.platform_worker_id in page) == sees_raw_ids
    assert (participant.mturk_assignment_id in page) == sees_raw_ids
    changelist = reverse("admin:studies_participant_changelist")
    found = client.get(changelist, {"q": participant.platform_worker_id}).context["cl"].result_count
    assert (found >= 1) == sees_raw_ids


# --- exclusion groups: the CSV import (a custom admin URL) ------------------------------------


@pytest.mark.parametrize(("role", "expected"), [("anonymous", LOGIN), ("staff", DENIED), ("group_view", DENIED),
                                                ("group_change", OK), ("superuser", OK)])  # fmt: skip
def test_exclusion_group_import_needs_change_permission(role, expected, client, django_user_model):
    from studies.models import ExclusionGroup, ExclusionGroupWorker

    group = ExclusionGroup.objects.create(name="pool")
    if role in ("group_view", "group_change"):
        user = django_user_model.objects.create_user(role, f"{role}@example.org", "pw-for-tests-only", is_staff=True)
        codenames = ["view_exclusiongroup"] + (["change_exclusiongroup"] if role == "group_change" else [])
        user.user_permissions.add(*Permission.objects.filter(content_type__app_label="studies", codename__in=codenames))
        client.force_login(user)
    else:
        login = _user(role, django_user_model)
        if login is not None:
            client.force_login(login)
    url = reverse("admin:studies_exclusiongroup_import_ids", args=[group.pk])
    response = client.post(url, {"text": "A1WORKER\n  a2worker \n", "platform": "mturk", "reason": "pilot"})
    if expected == LOGIN:
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")
    elif expected == DENIED:
        assert response.status_code == 403
    else:
        assert response.status_code == 302
        assert response["Location"] == reverse("admin:studies_exclusiongroup_change", args=[group.pk])
    listed = sorted(ExclusionGroupWorker.objects.filter(group=group).values_list("platform_worker_id", flat=True))
    assert listed == (["A1WORKER", "A2WORKER"] if expected == OK else [])


def test_exclusion_group_import_reports_bad_rows_and_adds_nothing(staff_client):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from studies.models import ExclusionGroup

    group = ExclusionGroup.objects.create(name="pool")
    url = reverse("admin:studies_exclusiongroup_import_ids", args=[group.pk])
    csv_file = SimpleUploadedFile("batch.csv", b"WorkerId,Answer\nA1WORKER,x\n=cmd|x,y\n", content_type="text/csv")
    response = staff_client.post(url, {"csv_file": csv_file, "platform": "mturk"})
    assert response.status_code == 200
    assert "Nothing was added" in response.content.decode()
    assert "line 3" in response.content.decode()
    assert not group.workers.exists()
    page = staff_client.get(reverse("admin:studies_exclusiongroup_change", args=[group.pk])).content.decode()
    assert url in page
