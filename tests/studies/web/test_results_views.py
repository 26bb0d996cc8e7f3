"""The staff-only results page, its plots, and their access control and query count."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.urls import reverse

from studies.fixtures.synthetic_responses import synthetic_study_create
from studies.models import EvaluationResult, Study

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def study() -> Study:
    return synthetic_study_create(n_workers=12, simulated_share=0.25, seed=4)


def _urls(study: Study) -> list[str]:
    return [
        reverse("studies:results", args=[study.slug]),
        reverse("studies:results_plot", args=[study.slug, "scores", "png"]),
        reverse("studies:results_export", args=[study.slug, "tidy"]),
        reverse("studies:results_export", args=[study.slug, "payments-mturk"]),
        reverse("studies:results_pack", args=[study.slug]),
    ]


def test_anonymous_and_non_staff_users_are_sent_to_the_login(client, django_user_model, study):
    for url in _urls(study):
        response = client.get(url)
        assert response.status_code == 302, url
        assert "/admin/login/" in response["Location"], url
    user = django_user_model.objects.create_user("worker", password="pw-for-tests-only")
    client.force_login(user)
    for url in _urls(study):
        response = client.get(url)
        assert response.status_code == 302, url
        assert "/admin/login/" in response["Location"], url


def test_page_shows_both_tables_the_exclusions_and_the_simulated_banner(staff_client, study):
    url = reverse("studies:results", args=[study.slug])
    applied = staff_client.get(url)
    assert applied.status_code == 200
    results = applied.context["results"]
    text = applied.content.decode()
    assert "Simulated judgments" in text
    assert "included" in text
    assert 'id="method-table"' in text
    assert "Wilson 95% CI" in text
    assert "Holm" in text
    assert "catch_accuracy_below(threshold=0.75" in text
    row = results.analysis.with_exclusions.rows[0]
    assert f"{100 * row.accuracy:.2f}%" in text
    none = staff_client.get(url + "?exclusions=off&simulated=exclude")
    row_all = none.context["results"].analysis.without_exclusions.rows[0]
    assert none.context["with_exclusions"] is False
    assert none.context["include_simulated"] is False
    assert f"{100 * row_all.accuracy:.2f}%" in none.content.decode()
    assert "left out" in none.content.decode()


def test_page_lists_automatic_evaluation(staff_client, study):
    EvaluationResult.objects.create(study=study, method="gradcam", metric="deletion_auc", values=[0.1, 0.3, None],
                                    summary={"mean": 0.2, "lo": 0.1, "hi": 0.3})
    text = staff_client.get(reverse("studies:results", args=[study.slug])).content.decode()
    assert "deletion_auc" in text
    assert "0.200" in text
    assert "[0.100, 0.300]" in text


def test_query_count_does_not_grow_with_the_judgments(staff_client, django_assert_max_num_queries):
    small = synthetic_study_create(n_workers=4, seed=1)
    large = synthetic_study_create(n_workers=40, seed=2)
    staff_client.get("/admin/")  # warm the session
    counts = []
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for study in (small, large):
        cache.clear()
        with CaptureQueriesContext(connection) as ctx:
            assert staff_client.get(reverse("studies:results", args=[study.slug])).status_code == 200
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1]
    # A small constant: on PostgreSQL the COPY loader adds its SET LOCAL work_mem/jit statements.
    assert counts[1] <= 12


def test_plots_render_png_and_svg(staff_client, study):
    for name in ("scores", "answers", "timeline"):
        png = staff_client.get(reverse("studies:results_plot", args=[study.slug, name, "png"]))
        assert png.status_code == 200
        assert png["Content-Type"] == "image/png"
        assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
        svg = staff_client.get(reverse("studies:results_plot", args=[study.slug, name, "svg"]) + "?download=1")
        assert svg["Content-Type"] == "image/svg+xml"
        assert b"<svg" in svg.content[:2000]
        assert "attachment" in svg["Content-Disposition"]
    assert staff_client.get(reverse("studies:results_plot", args=[study.slug, "nope", "png"])).status_code == 404
    assert staff_client.get(reverse("studies:results_plot", args=[study.slug, "scores", "gif"])).status_code == 404


def test_trust_page_and_plots(staff_client):
    study = synthetic_study_create(kind=Study.Kind.TRUST, quality=(1.2, 0.4), n_workers=10, seed=9)
    text = staff_client.get(reverse("studies:results", args=[study.slug])).content.decode()
    assert f"Mean score (towards model B = {study.model_pair.model_b.name})" in text
    assert "Wilcoxon p" in text
    assert "B clearly" in text
    png = staff_client.get(reverse("studies:results_plot", args=[study.slug, "answers", "png"]))
    assert png.content[:4] == b"\x89PNG"


def test_malformed_rules_give_a_clear_error(staff_client, study):
    study.exclusion_rules = [{"rule": "no_such_rule"}]
    study.save()
    response = staff_client.get(reverse("studies:results", args=[study.slug]))
    assert response.status_code == 400
    assert "unknown rule" in response.content.decode()


def test_study_admin_links_to_the_results(staff_client, study):
    text = staff_client.get(reverse("admin:studies_study_change", args=[study.pk])).content.decode()
    assert reverse("studies:results", args=[study.slug]) in text


def test_plots_module_never_imports_pyplot():
    import subprocess
    import sys

    code = "import sys, studies.web.plots; assert 'matplotlib.pyplot' not in sys.modules; print('ok')"
    env = {"DJANGO_SETTINGS_MODULE": "xaistudy.settings", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", "import django; django.setup(); " + code], env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.stdout.strip() == "ok", out.stderr


def test_page_and_plots_of_a_study_without_judgments(staff_client):
    from studies.models import Response

    study = synthetic_study_create(n_workers=3, seed=1)
    Response.objects.filter(assignment__item__study=study).delete()
    response = staff_client.get(reverse("studies:results", args=[study.slug]))
    assert response.status_code == 200
    assert response.context["results"].n_judgments == 0
    for name in ("scores", "answers", "timeline"):
        png = staff_client.get(reverse("studies:results_plot", args=[study.slug, name, "png"]))
        assert png.content[:4] == b"\x89PNG"
    export = staff_client.get(reverse("studies:results_export", args=[study.slug, "summary"]))
    assert b"".join(export.streaming_content).decode().startswith("analysis,")
