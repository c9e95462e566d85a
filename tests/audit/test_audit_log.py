"""The audit log: each class of action leaves an event; events cannot be changed; admins read and export them."""

from __future__ import annotations

import csv
import io
from datetime import date

import pytest
from django.urls import reverse

from audit.choices import AuditAction
from audit.models import AppendOnlyError, AuditEvent
from tests.conftest import PASSWORD
from tests.frontend.records import add_results, make_patient, make_run, make_series, make_study
from tests.patients.scans import ct_series, uploaded


@pytest.fixture
def anna(team_a):
    patient = make_patient(team_a, "A-0001")
    series = make_series(make_study(patient, date(2026, 1, 3)))
    add_results(make_run(series, poi=0.1, ihu=-600.0))
    return patient


def _events(**filters) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(**filters).order_by("id"))


def test_opening_a_patient_and_a_series_is_recorded_with_user_patient_and_address(client, clinician, anna):
    client.force_login(clinician)
    series = anna.studies.get().series.get()
    assert client.get(reverse("patient-detail", args=[anna.pk]), REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get(reverse("series-detail", args=[series.pk])).status_code == 200
    views = _events(action=AuditAction.VIEW)
    assert [(e.object_type, e.patient_identifier, e.username, e.team_id) for e in views] == [
        ("patient", "A-0001", clinician.username, anna.team_id),
        ("series", "A-0001", clinician.username, anna.team_id),
    ]
    assert views[0].ip_address == "10.1.2.3"
    assert views[0].path == f"/patients/{anna.pk}/"


def test_an_api_read_with_a_token_is_recorded_for_the_token_user(client, clinician, anna):
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=clinician)
    response = client.get(f"/api/patients/{anna.pk}/", HTTP_AUTHORIZATION=f"Token {token.key}")
    assert response.status_code == 200
    (event,) = _events(action=AuditAction.VIEW)
    assert (event.username, event.object_type, event.patient_id) == (clinician.username, "patient", anna.pk)


def test_an_upload_a_retry_and_a_settings_change_are_recorded(client, team_admin, team_a, tmp_path, anna):
    from analysis.choices import RunStatus

    client.force_login(team_admin)
    files = uploaded(ct_series(tmp_path / "scan", slices=6))
    response = client.post(reverse("upload"), {"team": team_a.pk, "files": files})
    assert response.status_code == 302
    failed = make_run(make_series(anna.studies.get()), RunStatus.FAILED, error="lungs not found")
    client.post(reverse("run-retry", args=[failed.pk]))
    client.post(reverse("team-settings", args=[team_a.slug]), {"suspected_ratio_threshold": "0.3"})
    upload, retry, settings_change = _events(action__in=[AuditAction.UPLOAD, AuditAction.CHANGE])
    assert upload.action == AuditAction.UPLOAD
    assert "6 files accepted" in upload.summary
    assert upload.team_id == team_a.pk
    assert (retry.action, retry.object_type, retry.patient_identifier) == (AuditAction.CHANGE, "analysisrun", "A-0001")
    assert settings_change.summary == "team settings: suspected_ratio_threshold=0.3"


def test_logins_failed_logins_and_logouts_are_recorded(client, clinician):
    client.post(reverse("login"), {"username": clinician.username, "password": "wrong password"})
    client.post(reverse("login"), {"username": clinician.username, "password": PASSWORD})
    client.post(reverse("logout"))
    assert [e.action for e in _events()] == [AuditAction.LOGIN_FAILED, AuditAction.LOGIN, AuditAction.LOGOUT]
    assert {e.username for e in _events()} == {clinician.username}


def test_events_cannot_be_changed_or_deleted(clinician, anna):
    from audit.log import record

    event = record(None, AuditAction.VIEW, anna, user=clinician)
    event.summary = "nothing happened"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.update(summary="")
    assert AuditEvent.objects.get().summary == ""


def test_forwarded_addresses_are_believed_only_behind_the_configured_proxies(rf, settings):
    from audit.log import client_address

    request = rf.get("/", REMOTE_ADDR="10.0.0.9", HTTP_X_FORWARDED_FOR="6.6.6.6, 192.0.2.44")
    settings.AUDIT_TRUSTED_PROXIES = 0
    assert client_address(request) == "10.0.0.9"  # a client may send any X-Forwarded-For it likes
    settings.AUDIT_TRUSTED_PROXIES = 1
    assert client_address(request) == "192.0.2.44"  # the address our one proxy saw


def test_a_team_admin_filters_the_log_and_downloads_it(client, team_admin, clinician, viewer, anna, outsider):
    from audit.log import record

    record(None, AuditAction.VIEW, anna, user=clinician)
    record(None, AuditAction.EXPORT, anna, user=viewer, summary="CSV of bio-markers")
    other = make_patient(outsider.memberships.get().team, "B-0001")
    record(None, AuditAction.VIEW, other, user=outsider)

    client.force_login(team_admin)
    page = client.get(reverse("audit-log", args=["team-a"]))
    assert page.status_code == 200
    assert "B-0001" not in page.content.decode()  # another team's events are not shown
    filtered = client.get(reverse("audit-log", args=["team-a"]), {"user": "vera", "action": "export"})
    assert list(filtered.context["page"]) == _events(username=viewer.username)

    download = client.get(reverse("audit-log-csv", args=["team-a"]), {"patient": "A-0001"})
    assert download["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(download.streaming_content).decode())))
    assert [(r["user"], r["action"]) for r in rows] == [(viewer.username, "export"), (clinician.username, "view")]
    # The download itself is audited.
    assert AuditEvent.objects.filter(action=AuditAction.EXPORT, username=team_admin.username).exists()


@pytest.mark.parametrize("who", ["clinician", "viewer"])
def test_only_team_admins_read_the_log(client, request, who, team_a):
    client.force_login(request.getfixturevalue(who))
    assert client.get(reverse("audit-log", args=["team-a"])).status_code == 403
    assert client.get(reverse("audit-log-csv", args=["team-a"])).status_code == 403


def test_another_teams_log_does_not_exist_for_an_outsider(client, outsider, team_a):
    client.force_login(outsider)
    assert client.get(reverse("audit-log", args=["team-a"])).status_code == 404


def test_opening_the_viewer_is_one_event_not_one_per_slice(client, viewer, tmp_path, team_a):
    from tests.analysis.exported import series_with_run

    series, _run, _volume = series_with_run(team_a, tmp_path / "scan", patient_id="A-VIEW-1")
    client.force_login(viewer)
    assert client.get(reverse("series-viewer", args=[series.pk])).status_code == 200
    for index in range(series.slice_count):
        assert client.get(reverse("viewer-instance", args=[series.pk, index])).status_code == 200
    (event,) = _events(action=AuditAction.VIEW)
    assert (event.object_type, event.summary, event.patient_identifier) == ("series", "slice viewer", "A-VIEW-1")
