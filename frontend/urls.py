"""Page URLs (the REST API lives under /api/, see covidsite/urls.py)."""

from django.contrib.auth import views as auth_views
from django.urls import path, reverse_lazy

from audit.forms import LockoutAuthenticationForm

from . import account_views, cohort_views, deidentify_views, export_views, report_views, viewer_views, views

urlpatterns = [
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="frontend/login.html", authentication_form=LockoutAuthenticationForm
        ),
        name="login",
    ),
    path("account/", account_views.account, name="account"),
    path("account/token/", account_views.create_token, name="account-token-create"),
    path("account/token/revoke/", account_views.revoke_token, name="account-token-revoke"),
    path(
        "account/password/",
        auth_views.PasswordChangeView.as_view(
            template_name="frontend/password_change.html", success_url=reverse_lazy("account")
        ),
        name="password-change",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", views.patient_list, name="patient-list"),
    path("patients/<int:patient_id>/", views.patient_detail, name="patient-detail"),
    path("series/<int:series_id>/", views.series_detail, name="series-detail"),
    path("series/<int:series_id>/status.json", views.series_status, name="series-status"),
    path(
        "series/<int:series_id>/deidentified.zip",
        deidentify_views.deidentified_series,
        name="series-deidentified",
    ),
    path("series/<int:series_id>/viewer/", viewer_views.viewer_page, name="series-viewer"),
    path("series/<int:series_id>/instances/<int:index>/", viewer_views.instance_file, name="viewer-instance"),
    path("series/<int:series_id>/overlays/<int:index>.png", viewer_views.overlay, name="viewer-overlay"),
    path("series/<int:series_id>/surfaces.json", viewer_views.surfaces, name="viewer-surfaces"),
    path("runs/<int:run_id>/retry/", views.retry_run, name="run-retry"),
    path("runs/<int:run_id>/export/<slug:kind>/", export_views.run_export, name="run-export"),
    path("runs/<int:run_id>/send-to-pacs/", export_views.run_send_to_pacs, name="run-send-to-pacs"),
    path("upload/", views.upload, name="upload"),
    path("uploads/<int:upload_id>/", views.upload_detail, name="upload-detail"),
    path("teams/<slug:slug>/settings/", views.team_settings, name="team-settings"),
    path("teams/<slug:slug>/lexicon/", report_views.lexicon, name="report-lexicon"),
    path("reports/import/", report_views.report_import, name="report-import"),
    path("studies/<int:study_id>/reports/", report_views.add_report, name="study-report-add"),
    path("agreement/", report_views.agreement, name="agreement"),
    path("cohorts/", cohort_views.cohort_list, name="cohort-list"),
    path("cohorts/new/", cohort_views.cohort_create, name="cohort-create"),
    path("cohorts/<int:cohort_id>/", cohort_views.cohort_detail, name="cohort-detail"),
    path("cohorts/<int:cohort_id>/members/", cohort_views.cohort_members, name="cohort-members"),
    path("cohorts/<int:cohort_id>/severity/", cohort_views.cohort_labels, name="cohort-labels"),
    path("cohorts/<int:cohort_id>/severity/import/", cohort_views.cohort_import, name="cohort-import"),
    path("cohorts/<int:cohort_id>/fit/", cohort_views.cohort_fit, name="cohort-fit"),
    path("cohorts/<int:cohort_id>/export.csv", cohort_views.cohort_export, name="cohort-export"),
    path(
        "severity-models/<int:model_id>/activate/",
        cohort_views.severity_model_activate,
        name="severity-model-activate",
    ),
]
