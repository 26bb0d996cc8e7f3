"""URLs of the studies app: health check, the worker pages and the worker JSON API.

Worker URLs carry only the study slug (entry) or the participant's opaque token; no
sequential ids. The API is documented by the OpenAPI schema at ``/api/v1/openapi.json``.
"""

from django.urls import path

from . import api, health, pages, results

app_name = "studies"

urlpatterns = [
    path("", health.landing, name="landing"),
    path("healthz", health.healthz, name="healthz"),
    # Staff-only results, plots, exports and the reproducibility pack (studies/web/results.py).
    path("results/<str:slug>/", results.results_page, name="results"),
    path("results/<str:slug>/plot/<str:name>.<str:fmt>", results.results_plot, name="results_plot"),
    path("results/<str:slug>/export/<str:kind>.csv", results.results_export, name="results_export"),
    path("results/<str:slug>/pack.zip", results.results_pack, name="results_pack"),
    path("results/<str:slug>/sanity.<str:fmt>", results.results_sanity_plot, name="results_sanity_plot"),
    # Worker pages (frameable by MTurk).
    path("s/<str:slug>/", pages.entry, name="worker-entry"),
    path("s/<str:slug>/example/<str:public_id>/<str:side>", pages.example_stimulus, name="worker-example-stimulus"),
    path("p/<str:token>/", pages.home, name="worker-home"),
    path("p/<str:token>/consent", pages.consent, name="worker-consent"),
    path("p/<str:token>/practice", pages.practice, name="worker-practice"),
    path("p/<str:token>/answer", pages.answer, name="worker-answer"),
    path("p/<str:token>/questionnaire", pages.questionnaire, name="worker-questionnaire"),
    path("p/<str:token>/complete", pages.complete, name="worker-complete"),
    path("p/<str:token>/done", pages.done, name="worker-done"),
    path("p/<str:token>/img/<str:assignment_token>/<str:side>", pages.stimulus, name="worker-stimulus"),
    path("p/<str:token>/practice-img/<str:public_id>/<str:side>", pages.practice_stimulus, name="worker-practice-stimulus"),
    # JSON API (participant token in the X-Participant-Token header).
    path("api/v1/openapi.json", api.openapi, name="api-openapi"),
    path("api/v1/studies/<str:slug>/enter", api.enter, name="api-enter"),
    path("api/v1/participant", api.participant, name="api-participant"),
    path("api/v1/participant/consent", api.consent, name="api-consent"),
    path("api/v1/participant/practice", api.practice, name="api-practice"),
    path("api/v1/participant/trial", api.trial, name="api-trial"),
    path("api/v1/participant/questionnaire", api.questionnaire, name="api-questionnaire"),
    path("api/v1/participant/complete", api.complete, name="api-complete"),
]
