"""Uploading scans through the upload page: JSON for the progress-bar client, redirect without JavaScript."""

from __future__ import annotations

import io
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from analysis.choices import RunStatus
from analysis.models import AnalysisRun
from patients.models import Series, Upload
from tests.conftest import PASSWORD

from .scans import write_phantom_series


@pytest.fixture
def scan_files(tmp_path):
    paths = write_phantom_series(tmp_path / "scan")
    files = [SimpleUploadedFile(p.name, p.read_bytes(), content_type="application/dicom") for p in paths]
    files.append(SimpleUploadedFile("notes.txt", b"not an image at all", content_type="text/plain"))
    return files


def test_clinician_uploads_a_series_and_sees_what_was_created_and_refused(
    client, clinician, team_a, scan_files, django_capture_on_commit_callbacks
):
    client.login(username=clinician.username, password=PASSWORD)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("upload"),
            {"team": team_a.pk, "patient_identifier": "", "files": scan_files},
            HTTP_X_REQUESTED_WITH="XMLHttpRequest",
        )
    assert response.status_code == 201, response.content
    body = response.json()
    upload = Upload.objects.get(pk=body["upload_id"])
    assert body["url"] == reverse("upload-detail", args=[upload.pk])
    assert upload.team == team_a
    assert upload.user == clinician
    series = Series.objects.get(study__patient__identifier="UP-0001")
    assert series.slice_count == 27
    assert series.study.patient.team == team_a
    # The ready series was queued for analysis.
    assert AnalysisRun.objects.get(series=series).status == RunStatus.QUEUED

    page = client.get(body["url"]).content.decode()
    assert reverse("series-detail", args=[series.pk]) in page
    assert "Upload test 10 mm" in page
    assert "notes.txt" in page
    refused = upload.report["refused"]
    assert [r["file"] for r in refused] == ["notes.txt"]
    assert refused[0]["reason"] in page
    assert "Queued" in page


def test_upload_of_a_zip_without_javascript_redirects_to_the_result(client, clinician, team_a, tmp_path):
    paths = write_phantom_series(tmp_path / "scan", patient_id="ZIP-0001")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for path in paths:
            zf.write(path, f"study/series/{path.name}")
    client.login(username=clinician.username, password=PASSWORD)
    response = client.post(
        reverse("upload"),
        {
            "team": team_a.pk,
            "patient_identifier": "MRN-777",
            "files": [SimpleUploadedFile("study.zip", archive.getvalue(), content_type="application/zip")],
        },
    )
    assert response.status_code == 302
    upload = Upload.objects.get()
    assert response.url == reverse("upload-detail", args=[upload.pk])
    # The identifier typed on the form names the patient, not the files' PatientID.
    series = Series.objects.get(study__patient__identifier="MRN-777")
    assert series.slice_count == len(paths)
    assert client.get(response.url).status_code == 200


def test_outsider_cannot_see_another_teams_upload(client, clinician, outsider, team_a, scan_files):
    client.login(username=clinician.username, password=PASSWORD)
    client.post(reverse("upload"), {"team": team_a.pk, "files": scan_files[-1:]})
    upload = Upload.objects.get()
    client.logout()
    client.login(username=outsider.username, password=PASSWORD)
    assert client.get(reverse("upload-detail", args=[upload.pk])).status_code == 404


def test_uploaded_series_analysed_shows_its_results(
    client, clinician, team_a, tmp_path, django_capture_on_commit_callbacks
):
    """End to end without a worker process: upload, run the classical pipeline in-process, read the page."""
    from analysis.execute import execute_run
    from analysis.pipeline.run import run_pipeline

    paths = write_phantom_series(tmp_path / "scan", patient_id="E2E-1")
    files = [SimpleUploadedFile(p.name, p.read_bytes()) for p in paths]
    client.login(username=clinician.username, password=PASSWORD)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("upload"), {"team": team_a.pk, "files": files})
    run = AnalysisRun.objects.get(series__study__patient__identifier="E2E-1")
    execute_run(run.pk, pipeline=run_pipeline)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    response = client.get(reverse("series-detail", args=[run.series_id]))
    content = response.content.decode()
    assert [m.region for m in response.context["results"].regions][:3] == ["both", "right", "left"]
    assert len(response.context["results"].regions) == 9
    assert response.context["slice_profile"] is not None
    assert f"{run.poi * 100:.1f} %" in content
    for model in run.models_used:
        assert model["name"] in content
    status = client.get(reverse("series-status", args=[run.series_id])).json()
    assert status["status"] == "succeeded"
    assert status["poi"] == pytest.approx(run.poi)
