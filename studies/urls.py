"""URLs of the studies app: health check, worker pages and API are added by their modules."""

from django.urls import path

from . import views, views_results

app_name = "studies"

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    # Staff-only results, plots, exports and the reproducibility pack (studies/views_results.py).
    path("results/<str:slug>/", views_results.results_page, name="results"),
    path("results/<str:slug>/plot/<str:name>.<str:fmt>", views_results.results_plot, name="results_plot"),
    path("results/<str:slug>/export/<str:kind>.csv", views_results.results_export, name="results_export"),
    path("results/<str:slug>/pack.zip", views_results.results_pack, name="results_pack"),
]
