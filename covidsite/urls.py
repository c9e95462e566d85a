"""URL configuration: pages, the REST API (with its OpenAPI schema) and the admin."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from .api import router
from .health import health

urlpatterns = [
    path("health/", health, name="health"),
    path("admin/", admin.site.urls),
    path("api/", include(router.urls)),
    path("dicomweb/", include("patients.dicomweb")),  # QIDO/WADO/STOW-RS, token or session auth
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("", include("audit.urls")),
    path("", include("frontend.urls")),
]
