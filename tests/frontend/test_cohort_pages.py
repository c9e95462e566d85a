"""Cohort pages: who may see, create, label, fit and activate; what the cohort and series pages show."""

from __future__ import annotations

import csv
import html
import io
from datetime import date

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from analysis.choices import SeverityLabel
from analysis.models import ClinicalSeverity, SeverityModel
from analysis.severity import activate, fit_cohort
from patients.models import Cohort
from tests.analysis.severity_cohort import build_cohort
from tests.conftest import PASSWORD

from .records import make_patient, make_run, make_series, make_study


@pytest.fixture
def as_user(client):
    def login(user):
        assert client.login(username=user.username, password=PASSWORD)
        return client

    return login


@pytest.fixture
def cohort(team_a):
    return build_cohort(team_a)


@pytest.fixture
def fitted(cohort, team_admin):
    return fit_cohort(cohort, team_admin).models


def test_cohort_list_shows_only_the_users_teams_cohorts(as_user, cohort, team_b, viewer):
    Cohort.objects.create(team=team_b, name="Team B secret cohort")
    page = as_user(viewer).get(reverse("cohort-list"))
    assert page.status_code == 200
    assert "ICU 2026" in page.content.decode()
    assert "Team B secret cohort" not in page.content.decode()
    assert reverse("cohort-create") not in page.content.decode()  # a viewer creates nothing


def test_another_teams_cohort_and_its_actions_are_404(as_user, cohort, fitted, outsider):
    client = as_user(outsider)
    assert client.get(reverse("cohort-detail", args=[cohort.pk])).status_code == 404
    assert client.get(reverse("cohort-export", args=[cohort.pk])).status_code == 404
    assert client.post(reverse("cohort-fit", args=[cohort.pk])).status_code == 404
    assert client.post(reverse("cohort-labels", args=[cohort.pk])).status_code == 404
    assert client.post(reverse("severity-model-activate", args=[fitted[0].pk])).status_code == 404


@pytest.mark.parametrize("actor", ["viewer", "clinician"])
def test_only_team_admins_fit_and_activate_models(actor, request, as_user, cohort, fitted):
    client = as_user(request.getfixturevalue(actor))
    assert client.post(reverse("cohort-fit", args=[cohort.pk])).status_code == 403
    assert client.post(reverse("severity-model-activate", args=[fitted[0].pk])).status_code == 403
    assert SeverityModel.objects.count() == len(fitted)
    assert not SeverityModel.objects.filter(is_active=True).exists()
    page = client.get(reverse("cohort-detail", args=[cohort.pk])).content.decode()
    assert 'id="fit"' not in page
    assert "Make active" not in page


def test_a_viewer_cannot_record_severity(as_user, cohort, viewer):
    study_id = cohort.patients.first().studies.first().pk
    response = as_user(viewer).post(reverse("cohort-labels", args=[cohort.pk]), {f"severity-{study_id}": "unknown"})
    assert response.status_code == 403
    assert ClinicalSeverity.objects.get(study_id=study_id).label != SeverityLabel.UNKNOWN


def test_admin_fits_then_activates_and_the_page_shows_table_2(as_user, cohort, team_admin):
    client = as_user(team_admin)
    page = client.get(reverse("cohort-detail", args=[cohort.pk])).content.decode()
    assert "No active severity model" in page
    assert "not fitted yet" in page

    response = client.post(reverse("cohort-fit", args=[cohort.pk]), follow=True)
    page = response.content.decode()
    assert "3 severity models fitted" in page
    assert "Corona score was not fitted: only 0 of 24 scans have Corona score" in page
    assert 'id="table-2"' in page
    assert "POI \u2265 " in page
    assert 'data-figure="roc-data"' in page
    assert 'id="box-poi-data"' in page
    assert "Mann\\u2013Whitney p" in page  # inside the box plot's JSON

    poi = SeverityModel.objects.get(cohort=cohort, features=["poi"])
    response = client.post(reverse("severity-model-activate", args=[poi.pk]), follow=True)
    assert SeverityModel.objects.get(is_active=True) == poi
    assert "is now Team A's active severity model" in html.unescape(response.content.decode())
    assert "No active severity model" not in response.content.decode()


def test_fitting_a_too_small_cohort_says_why(as_user, team_a, team_admin):
    small = build_cohort(team_a, name="Pilot", n_per_class=3, prefix="P")
    response = as_user(team_admin).post(reverse("cohort-fit", args=[small.pk]), follow=True)
    assert "No model was fitted: too few scans: 3 severe and 3 non-severe; at least 5 of each class are needed." in (
        response.content.decode()
    )
    assert not SeverityModel.objects.exists()


def test_series_page_shows_p_severe_and_its_model_or_that_there_is_none(as_user, team_a, cohort, fitted, viewer):
    run = make_run(make_series(make_study(make_patient(team_a, "NEW-1"), date(2026, 6, 1))), poi=0.42, ihu=-500.0)
    client = as_user(viewer)
    page = client.get(reverse("series-detail", args=[run.series_id])).content.decode()
    assert "No active severity model for this team" in page
    activate(fitted[0])
    page = client.get(reverse("series-detail", args=[run.series_id])).content.decode()
    assert "P(severe) " in page
    assert "from ICU 2026: POI, fitted " in page


def test_clinician_records_severity_in_the_browser_form(as_user, cohort, clinician):
    study_id = cohort.patients.get(identifier="S-001").studies.first().pk
    url = reverse("cohort-labels", args=[cohort.pk])
    response = as_user(clinician).post(url, {f"severity-{study_id}": "non_severe"}, follow=True)
    assert "Clinical severity saved (1 changed)." in response.content.decode()
    assert ClinicalSeverity.objects.get(study_id=study_id).label == SeverityLabel.NON_SEVERE
    response = as_user(clinician).post(url, {f"severity-{study_id}": "critical"}, follow=True)
    assert "Nothing was saved: unknown severity label(s): critical" in response.content.decode()


def test_severity_csv_import_lists_unmatched_rows(as_user, cohort, clinician):
    text = b"patient,accession,severity\nS-001,ACC-S-001,non-severe\nS-002,ACC-WRONG,severe\n"
    upload = SimpleUploadedFile("labels.csv", text, content_type="text/csv")
    response = as_user(clinician).post(reverse("cohort-import", args=[cohort.pk]), {"file": upload})
    page = response.content.decode()
    assert response.status_code == 200
    assert "<strong>1</strong> label stored" in page
    assert "patient S-002 has no study with accession number ACC-WRONG" in page


def test_admin_creates_a_cohort_by_list_filter_and_pick(as_user, team_a, team_b, team_admin):
    for identifier in ("ICU-1", "ICU-2", "WARD-1", "WARD-2"):
        make_patient(team_a, identifier)
    theirs = make_patient(team_b, "ICU-9")
    picked = make_patient(team_a, "OTHER-1")
    client = as_user(team_admin)
    data = {
        "team": team_a.pk,
        "name": "Wards",
        "identifiers": "identifier\nWARD-1\nWARD-2, NOPE-1\nICU-9",
        "contains": "ICU-",
        "patients": [picked.pk],
    }
    refused = client.post(reverse("cohort-create"), data)
    page = refused.content.decode()
    assert refused.status_code == 400
    assert "NOPE-1: no patient with this identifier in Team A." in page
    assert "ICU-9: no patient with this identifier in Team A." in page  # team B's patient is not found
    assert "WARD-1\nWARD-2, NOPE-1" in page  # the input is kept
    assert not Cohort.objects.exists()

    data["identifiers"] = "WARD-1\nWARD-2"
    created = client.post(reverse("cohort-create"), data)
    cohort = Cohort.objects.get(name="Wards")
    assert created.status_code == 302
    assert sorted(cohort.patients.values_list("identifier", flat=True)) == [
        "ICU-1",
        "ICU-2",
        "OTHER-1",
        "WARD-1",
        "WARD-2",
    ]
    assert theirs not in cohort.patients.all()
    again = client.post(reverse("cohort-create"), data)
    assert "Team A already has a cohort called “Wards”." in again.content.decode()


def test_creating_a_cohort_from_a_csv_file_of_identifiers(as_user, team_a, team_admin):
    make_patient(team_a, "A-1")
    make_patient(team_a, "A-2")
    upload = SimpleUploadedFile("ids.csv", b"\xef\xbb\xbfpatient_id,age\nA-1,70\nA-2,64\n", content_type="text/csv")
    response = as_user(team_admin).post(
        reverse("cohort-create"), {"team": team_a.pk, "name": "CSV", "identifiers_file": upload}
    )
    assert response.status_code == 302
    assert Cohort.objects.get(name="CSV").patients.count() == 2


@pytest.mark.parametrize("actor", ["viewer", "clinician"])
def test_only_team_admins_create_cohorts(actor, request, as_user, team_a):
    client = as_user(request.getfixturevalue(actor))
    assert client.get(reverse("cohort-create")).status_code == 403
    assert client.post(reverse("cohort-create"), {"team": team_a.pk, "name": "X"}).status_code == 403


def test_export_csv_holds_every_studys_bio_markers(as_user, cohort, viewer):
    response = as_user(viewer).get(reverse("cohort-export", args=[cohort.pk]))
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="icu-2026-biomarkers.csv"'
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 24
    assert {r["clinical_severity"] for r in rows} == {"severe", "non_severe"}
    assert all(0 < float(r["poi"]) < 1 for r in rows)


def test_cohort_page_costs_the_same_queries_for_few_or_many_members(
    as_user, team_a, team_admin, django_assert_num_queries
):
    client = as_user(team_admin)
    small = build_cohort(team_a, name="Small", n_per_class=5, prefix="A")
    fit_cohort(small, team_admin)
    client.get(reverse("cohort-detail", args=[small.pk]))  # session and first-request work out of the way
    large = build_cohort(team_a, name="Large", n_per_class=15, prefix="B")
    fit_cohort(large, team_admin)
    with CaptureQueriesContext(connection) as few:
        assert client.get(reverse("cohort-detail", args=[small.pk])).status_code == 200
    with django_assert_num_queries(len(few.captured_queries)):
        assert client.get(reverse("cohort-detail", args=[large.pk])).status_code == 200


def test_admin_adds_patients_to_a_cohort_and_unknown_identifiers_add_nothing(as_user, cohort, team_a, team_admin):
    make_patient(team_a, "LATE-1")
    make_patient(team_a, "LATE-2")
    url = reverse("cohort-members", args=[cohort.pk])
    refused = as_user(team_admin).post(url, {"identifiers": "LATE-1\nNOPE-3"}, follow=True)
    assert "Nothing was added: NOPE-3: no patient with this identifier in Team A." in refused.content.decode()
    assert not cohort.patients.filter(identifier="LATE-1").exists()
    added = as_user(team_admin).post(url, {"identifiers": "LATE-1, LATE-2, S-001"}, follow=True)
    assert "2 patients added to “ICU 2026”." in added.content.decode()
    assert cohort.patients.count() == 26


@pytest.mark.parametrize("actor", ["viewer", "clinician"])
def test_only_team_admins_add_patients(actor, request, as_user, cohort, team_a):
    make_patient(team_a, "LATE-1")
    response = as_user(request.getfixturevalue(actor)).post(
        reverse("cohort-members", args=[cohort.pk]), {"identifiers": "LATE-1"}
    )
    assert response.status_code == 403
    assert cohort.patients.count() == 24
