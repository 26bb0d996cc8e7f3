"""Friendly pages under the demo's settings (issue #13): no debug page, no trace, no URL list.

``make demo`` runs ``xaistudy.settings`` with nothing set, so ``DEBUG`` is off unless
``DJANGO_DEBUG=1``; these tests use the same settings (pytest-django keeps ``DEBUG`` off too) and
check what a worker or a passer-by would see.
"""

from __future__ import annotations

import importlib
import os

import pytest
from django.test import Client
from django.urls import path

import xaistudy.urls as project_urls

pytestmark = pytest.mark.django_db

LEAKS = ("Traceback", "urlpatterns", "URLconf", "SECRET_KEY", "DATABASES", "Django tried these URL patterns",
         "studies/web", "site-packages", "DEBUG = True")  # fmt: skip


def _boom(request):  # type: ignore[no-untyped-def]
    raise RuntimeError("forced failure for the error-page test")


urlpatterns = [path("boom/", _boom), *project_urls.urlpatterns]
handler500 = project_urls.handler500


def _assert_clean(body: str) -> None:
    for leak in LEAKS:
        assert leak not in body, leak


def test_debug_is_off_unless_asked_for(monkeypatch):
    import xaistudy.settings as demo_settings

    monkeypatch.delenv("DJANGO_DEBUG", raising=False)
    assert importlib.reload(demo_settings).DEBUG is False
    monkeypatch.setenv("DJANGO_DEBUG", "1")
    assert importlib.reload(demo_settings).DEBUG is True
    monkeypatch.delenv("DJANGO_DEBUG")
    importlib.reload(demo_settings)
    assert os.environ.get("DJANGO_DEBUG") is None


def test_landing_page_says_what_this_is_and_lists_no_study(client):
    from studies.fixtures.builders import make_worker_study

    study = make_worker_study(name="secret-internal-name")
    response = client.get("/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "data-landing" in body
    assert 'href="/admin/"' in body
    assert study.slug not in body
    assert "secret-internal-name" not in body
    _assert_clean(body)


@pytest.mark.parametrize("url", ["/no-such-page", "/s/no-such-study/", "/p/forged-token/", "/results/x/pack.zip/x"])
def test_unknown_urls_get_the_friendly_404(client, url):
    response = client.get(url)
    assert response.status_code == 404
    body = response.content.decode()
    assert "data-error=\"404\"" in body
    assert "open the link you were given" in body
    _assert_clean(body)


def test_a_forced_500_shows_no_trace(settings):
    settings.ROOT_URLCONF = __name__
    client = Client(raise_request_exception=False)
    response = client.get("/boom/")
    assert response.status_code == 500
    body = response.content.decode()
    assert "Something went wrong on our side" in body
    assert "forced failure" not in body
    _assert_clean(body)


def test_static_files_are_served_with_debug_off(client):
    response = client.get("/static/studies/worker.css")
    assert response.status_code == 200
    assert b"".join(response.streaming_content if response.streaming else [response.content])


def test_media_files_are_staff_only(staff_client, settings):
    media = settings.MEDIA_ROOT
    media.mkdir(parents=True, exist_ok=True)
    (media / "x.txt").write_text("stimulus")
    assert Client().get("/media/x.txt").status_code == 302  # anonymous: to the admin login
    response = staff_client.get("/media/x.txt")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"stimulus"


def test_admin_view_site_goes_to_the_landing_page():
    from django.contrib import admin

    assert admin.site.site_url == "/"
