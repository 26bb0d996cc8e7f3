"""Top-level URL configuration."""

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.urls import include, path, re_path
from django.views.static import serve

admin.site.site_url = "/"  # "View site": the landing page, never a study

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("studies.web.urls")),
]

# Database outages answer 503 "try again" (JSON under /api/), never a trace.
handler500 = "studies.web.errors.server_error"

# Uploaded and generated files (weights, images, stimuli) for the admin's previews: staff only,
# whatever DEBUG says. Workers get stimuli through /p/<token>/img/..., never by file name.
@staff_member_required
def media(request: HttpRequest, path: str) -> HttpResponse:
    return serve(request, path, document_root=settings.MEDIA_ROOT)


urlpatterns += [re_path(rf"^{settings.MEDIA_URL.strip('/')}/(?P<path>.*)$", media)]
