"""URLs of the studies app: health check, worker pages and API are added by their modules."""

from django.urls import path

from . import views

app_name = "studies"

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
]
