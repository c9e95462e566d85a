from django.urls import path

from . import views

urlpatterns = [
    path("teams/<slug:slug>/audit/", views.audit_log, name="audit-log"),
    path("teams/<slug:slug>/audit.csv", views.audit_log_csv, name="audit-log-csv"),
]
