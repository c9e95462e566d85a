"""Page URLs (the REST API lives under /api/, see covidsite/urls.py)."""

from django.contrib.auth import views as auth_views
from django.urls import path

from . import views

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(template_name="frontend/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", views.patient_list, name="patient-list"),
    path("patients/<int:patient_id>/", views.patient_detail, name="patient-detail"),
    path("series/<int:series_id>/", views.series_detail, name="series-detail"),
    path("series/<int:series_id>/status.json", views.series_status, name="series-status"),
    path("runs/<int:run_id>/retry/", views.retry_run, name="run-retry"),
    path("upload/", views.upload, name="upload"),
    path("uploads/<int:upload_id>/", views.upload_detail, name="upload-detail"),
    path("teams/<slug:slug>/settings/", views.team_settings, name="team-settings"),
]
