"""The REST API: uploads by clinicians only, records scoped to the user's teams, token authentication."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import TemporaryUploadedFile
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from patients import api as patients_api
from patients.choices import Role
from patients.ingest import ingest_paths
from patients.models import Membership, Series, Upload
from tests.patients.scans import ct_series, uploaded


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture
def stored(team_a, tmp_path):
    """Two series of one team-A patient, imported from disk."""
    ct_series(tmp_path / "s1", patient_id="ANNA-1", slices=6)
    ct_series(tmp_path / "s2", patient_id="ANNA-1", slices=6, seed=1)
    ingest_paths(team_a, [tmp_path / "s1", tmp_path / "s2"])
    return Series.objects.select_related("study__patient").order_by("id")


def post_upload(api, paths, **fields):
    return api.post("/api/uploads/", {"files": uploaded(paths), **fields}, format="multipart")


def test_a_clinician_uploads_a_series_and_gets_the_report(api, clinician, tmp_path):
    paths = ct_series(tmp_path, patient_id="NEW-1", slices=6)
    api.force_authenticate(clinician)

    response = post_upload(api, paths)

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["team"], body["user"], body["channel"]) == ("team-a", "carl-clinician", "api")
    assert (body["file_count"], body["accepted_count"], body["refused_count"]) == (6, 6, 0)
    [entry] = body["report"]["series"]
    assert (entry["patient"], entry["slices"], entry["status"], entry["created"]) == ("NEW-1", 6, "ready", True)
    assert api.get(f"/api/uploads/{body['id']}/").json()["report"] == body["report"]


def test_a_viewer_may_not_upload(api, viewer, tmp_path):
    paths = ct_series(tmp_path, slices=6)
    api.force_authenticate(viewer)

    response = post_upload(api, paths)

    assert response.status_code == 403
    assert "only clinicians and admins of team-a may upload" in response.json()["detail"]
    assert not Series.objects.exists()
    assert not Upload.objects.exists()


def test_an_outsider_cannot_upload_into_another_team(api, outsider, team_a, tmp_path):
    api.force_authenticate(outsider)

    response = post_upload(api, ct_series(tmp_path, slices=6), team="team-a")

    assert response.status_code == 404
    assert not Series.objects.exists()


def test_a_member_of_several_teams_must_name_one(api, clinician, team_b, tmp_path):
    Membership.objects.create(user=clinician, team=team_b, role=Role.CLINICIAN)
    api.force_authenticate(clinician)
    paths = ct_series(tmp_path, slices=6)

    unnamed = post_upload(api, paths)
    named = post_upload(api, paths, team="team-b", patient_identifier="B-77")

    assert unnamed.status_code == 400
    assert "you belong to several teams (team-a, team-b)" in unnamed.json()["team"][0]
    assert named.status_code == 201
    assert Series.objects.for_team(team_b).get().study.patient.identifier == "B-77"


def test_an_upload_without_files_is_a_clear_400(api, clinician):
    api.force_authenticate(clinician)

    response = api.post("/api/uploads/", {"team": "team-a"}, format="multipart")

    assert response.status_code == 400
    assert "files" in response.json()


def test_a_team_member_lists_patients_studies_and_series(api, colleague, stored, django_assert_max_num_queries):
    api.force_authenticate(colleague)
    patient = stored[0].study.patient

    with django_assert_max_num_queries(4):
        patients = api.get("/api/patients/", {"search": "anna"}).json()
    studies = api.get("/api/studies/", {"patient": patient.pk}).json()
    series = api.get("/api/series/", {"study": stored[1].study_id}).json()

    assert [p["identifier"] for p in patients["results"]] == ["ANNA-1"]
    assert patients["results"][0]["team"] == "team-a"
    assert sorted(s["id"] for s in studies["results"]) == sorted({s.study_id for s in stored})
    assert {s["patient_identifier"] for s in studies["results"]} == {"ANNA-1"}
    assert [s["id"] for s in series["results"]] == [stored[1].pk]
    assert series["results"][0]["slice_count"] == 6
    assert "volume_file" not in series["results"][0]
    assert api.get("/api/patients/", {"search": "nobody"}).json()["count"] == 0


def test_an_outsider_sees_nothing_of_team_a(api, outsider, stored):
    api.force_authenticate(outsider)
    one = stored[0]
    upload = Upload.objects.get()

    for url in (
        f"/api/patients/{one.study.patient_id}/",
        f"/api/studies/{one.study_id}/",
        f"/api/series/{one.pk}/",
        f"/api/uploads/{upload.pk}/",
    ):
        assert api.get(url).status_code == 404, url
    for url in ("/api/patients/", "/api/studies/", "/api/series/", "/api/uploads/"):
        assert api.get(url).json()["count"] == 0, url
    assert api.get("/api/studies/", {"patient": one.study.patient_id}).json()["count"] == 0


def test_a_malformed_filter_is_a_400_that_names_it(api, clinician):
    api.force_authenticate(clinician)

    response = api.get("/api/series/", {"study": "abc"})

    assert response.status_code == 400
    assert response.json() == {"study": ["must be an integer id, got 'abc'"]}


def test_token_authentication_works_and_anonymous_is_refused(api, clinician, stored):
    token = Token.objects.create(user=clinician)

    anonymous = api.get("/api/patients/")
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    with_token = api.get("/api/patients/")

    assert anonymous.status_code in (401, 403)
    assert with_token.status_code == 200
    assert with_token.json()["count"] == 1


def test_uploaded_files_are_streamed_to_disk_not_held_in_memory(api, clinician, tmp_path, monkeypatch):
    seen: list[type] = []
    real = patients_api.ingest_uploaded_files

    def spy(team, files, **kwargs):
        seen.extend(type(f) for f in files)
        return real(team, files, **kwargs)

    monkeypatch.setattr(patients_api, "ingest_uploaded_files", spy)
    api.force_authenticate(clinician)

    response = post_upload(api, ct_series(tmp_path, slices=6))

    assert response.status_code == 201
    assert seen == [TemporaryUploadedFile] * 6
