"""DICOMweb: a standard client stores, finds and retrieves a series; other teams see nothing.

The round trip runs the dicomweb-client package against the live server with REST tokens, the
way a PACS gateway or a research script would talk to the site.
"""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from django.conf import settings
from PIL import Image
from requests import HTTPError
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from analysis.models import AnalysisRun
from patients.choices import SeriesStatus
from patients.ingest import ingest_paths
from patients.models import Instance, Series, Upload

from .scans import ct_series

BOUNDARY = "covidsite-test-boundary"


def client_for(live_server, user) -> DICOMwebClient:
    token = Token.objects.create(user=user)
    return DICOMwebClient(url=f"{live_server.url}/dicomweb", headers={"Authorization": f"Token {token.key}"})


def ingested(team, folder, **options) -> None:
    """Write a small series into `folder` and ingest it for `team`."""
    ct_series(folder, **options)
    assert ingest_paths(team, [folder]).refused_count == 0


def multipart(parts: list[bytes]) -> bytes:
    body = b"".join(
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n" for part in parts
    )
    return body + f"--{BOUNDARY}--\r\n".encode()


def stow(user, parts: list[bytes], path: str = "/dicomweb/studies"):
    api = APIClient()
    api.force_authenticate(user)
    return api.generic(
        "POST", path, multipart(parts), content_type=f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    )


@pytest.mark.django_db(transaction=True)
def test_store_search_and_retrieve_with_a_dicomweb_client(live_server, clinician, outsider, tmp_path):
    paths = ct_series(tmp_path / "scan", patient_id="WEB-001", slices=6)
    originals = {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(p) for p in paths)}
    web = client_for(live_server, clinician)

    answer = web.store_instances(list(originals.values()))

    assert {item.ReferencedSOPInstanceUID for item in answer.ReferencedSOPSequence} == set(originals)
    assert "FailedSOPSequence" not in answer
    series = Series.objects.get()
    assert series.status == SeriesStatus.READY
    assert Upload.objects.get().channel == "dicomweb"
    assert AnalysisRun.objects.filter(series=series).exists()  # the same ingest queues the analysis

    [study] = web.search_for_studies(search_filters={"PatientID": "WEB-*"})
    study_uid = study["0020000D"]["Value"][0]
    assert study_uid == series.study.study_instance_uid
    assert study["00201208"]["Value"] == [6]  # NumberOfStudyRelatedInstances
    assert study["00080061"]["Value"] == ["CT"]
    [found] = web.search_for_series(study_instance_uid=study_uid)
    series_uid = found["0020000E"]["Value"][0]
    assert series_uid == series.series_instance_uid
    listed = web.search_for_instances(study_instance_uid=study_uid, series_instance_uid=series_uid)
    assert {item["00080018"]["Value"][0] for item in listed} == set(originals)
    assert {item["00080016"]["Value"][0] for item in listed} == {"1.2.840.10008.5.1.4.1.1.2"}

    sop_uid = next(iter(originals))
    retrieved = web.retrieve_instance(study_uid, series_uid, sop_uid)
    assert retrieved.SOPInstanceUID == sop_uid
    assert np.array_equal(retrieved.pixel_array, originals[sop_uid].pixel_array)
    meta = web.retrieve_instance_metadata(study_uid, series_uid, sop_uid)
    assert pydicom.Dataset.from_json(meta).ImagePositionPatient == originals[sop_uid].ImagePositionPatient
    [frame] = web.retrieve_instance_frames(study_uid, series_uid, sop_uid, frame_numbers=[1])
    assert frame == originals[sop_uid].pixel_array.tobytes()
    png = Image.open(io.BytesIO(web.retrieve_instance_rendered(study_uid, series_uid, sop_uid)))
    assert png.format == "PNG"
    assert png.size == (64, 64)
    assert len(web.retrieve_series(study_uid, series_uid)) == 6

    # A client of another team: searches come back empty, retrieval is "not found".
    other = client_for(live_server, outsider)
    assert other.search_for_studies() == []
    assert other.search_for_series() == []
    assert other.search_for_instances(study_instance_uid=study_uid) == []
    with pytest.raises(HTTPError) as caught:
        other.retrieve_instance(study_uid, series_uid, sop_uid)
    assert caught.value.response.status_code == 404
    with pytest.raises(HTTPError) as caught:
        other.retrieve_study_metadata(study_uid)
    assert caught.value.response.status_code == 404


def test_store_reports_what_was_refused_and_why(clinician, tmp_path):
    good = [p.read_bytes() for p in ct_series(tmp_path / "good", patient_id="WEB-002", slices=6)]

    response = stow(clinician, [*good, b"this is not a DICOM file"])

    assert response.status_code == 202
    answer = pydicom.Dataset.from_json(response.json())
    assert len(answer.ReferencedSOPSequence) == 6
    [failed] = answer.FailedSOPSequence
    assert failed.FailureReason == 0xC000
    assert "part-00007.dcm: not a DICOM file" in response["Warning"]
    assert Instance.objects.count() == 6


def test_store_of_nothing_usable_is_a_conflict_that_keeps_nothing(clinician, tmp_path):
    paths = ct_series(tmp_path / "short", patient_id="WEB-003", slices=2)

    response = stow(clinician, [p.read_bytes() for p in paths])

    assert response.status_code == 409
    assert "not a volume: only 2 slices" in response["Warning"]
    assert len(pydicom.Dataset.from_json(response.json()).FailedSOPSequence) == 2
    assert not Series.objects.exists()


def test_store_into_a_study_refuses_instances_of_another_study(clinician, tmp_path):
    parts = [p.read_bytes() for p in ct_series(tmp_path / "s", patient_id="WEB-004", slices=6)]

    response = stow(clinician, parts, path="/dicomweb/studies/1.2.3.4")

    assert response.status_code == 409
    assert {item.FailureReason for item in pydicom.Dataset.from_json(response.json()).FailedSOPSequence} == {0xA900}
    assert "not 1.2.3.4" in response["Warning"]


def test_viewer_may_search_but_not_store(viewer, clinician, team_a, tmp_path):
    ingested(team_a, tmp_path / "seen", patient_id="WEB-005")
    api = APIClient()
    api.force_authenticate(viewer)
    assert len(api.get("/dicomweb/studies").json()) == 1

    response = stow(viewer, [b"anything"])

    assert response.status_code == 403
    assert "viewer" in response.json()["detail"]


def test_a_user_of_two_teams_names_the_team(clinician, team_b, tmp_path):
    from patients.models import Membership

    Membership.objects.create(user=clinician, team=team_b, role="clinician")
    parts = [p.read_bytes() for p in ct_series(tmp_path / "s", patient_id="WEB-006", slices=6)]

    refused = stow(clinician, parts)
    stored = stow(clinician, parts, path="/dicomweb/studies?team=team-b")

    assert refused.status_code == 400
    assert "name one with ?team=<slug>" in refused.json()["detail"]
    assert stored.status_code == 200
    assert Series.objects.get().study.patient.team == team_b


def test_search_filters_and_bad_queries(clinician, team_a, team_b, tmp_path):
    ingested(team_a, tmp_path / "a", patient_id="ANNA", study_date=date(2024, 3, 1))
    ingested(team_a, tmp_path / "b", patient_id="BERT", study_date=date(2025, 6, 1))
    ingested(team_b, tmp_path / "c", patient_id="ANNA", study_date=date(2024, 3, 1))
    api = APIClient()
    api.force_authenticate(clinician)

    def patients(query: str) -> list[str]:
        response = api.get(f"/dicomweb/studies{query}")
        assert response.status_code == 200, response.content
        assert response["Content-Type"] == "application/dicom+json"
        return sorted(item["00100020"]["Value"][0] for item in response.json())

    assert patients("") == ["ANNA", "BERT"]  # team B's ANNA is not listed
    assert patients("?PatientID=AN*") == ["ANNA"]
    assert patients("?00100020=BERT") == ["BERT"]
    assert patients("?StudyDate=20250101-") == ["BERT"]
    assert patients("?StudyDate=20240301") == ["ANNA"]
    assert patients("?limit=1&offset=1") == ["BERT"]
    bad = api.get("/dicomweb/studies?PatientName=ANNA")
    assert bad.status_code == 400
    assert "cannot search on 'PatientName'" in bad.json()["detail"]
    assert api.get("/dicomweb/studies?StudyDate=2024").status_code == 400


def test_anonymous_client_must_authenticate(team_a):
    response = APIClient().get("/dicomweb/studies")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def parts_of(response) -> list[bytes]:
    """The bodies of a multipart/related response."""
    boundary = response["Content-Type"].split("boundary=")[1].strip('"').encode()
    body = b"".join(response.streaming_content)
    chunks = body.split(b"--" + boundary)[1:-1]
    return [chunk.split(b"\r\n\r\n", 1)[1][: -len(b"\r\n")] for chunk in chunks]


def test_compressed_images_are_decompressed_for_a_client_that_cannot_read_them(clinician, team_a, tmp_path):
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless

    paths = ct_series(tmp_path / "rle", patient_id="WEB-007", slices=6)
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.compress(RLELossless)
        ds.save_as(path, enforce_file_format=True)
    assert ingest_paths(team_a, [tmp_path / "rle"]).refused_count == 0
    instance = Instance.objects.order_by("index").first()
    url = (
        f"/dicomweb/studies/{instance.series.study.study_instance_uid}/series/"
        f"{instance.series.series_instance_uid}/instances/{instance.sop_instance_uid}"
    )
    api = APIClient()
    api.force_authenticate(clinician)
    original = pydicom.dcmread(Path(settings.MEDIA_ROOT) / instance.file)  # as stored: RLE

    default = parts_of(api.get(url, HTTP_ACCEPT='multipart/related; type="application/dicom"'))
    anything = parts_of(api.get(url, HTTP_ACCEPT='multipart/related; type="application/dicom"; transfer-syntax=*'))

    [plain] = [pydicom.dcmread(io.BytesIO(part)) for part in default]
    [stored] = [pydicom.dcmread(io.BytesIO(part)) for part in anything]
    assert plain.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert stored.file_meta.TransferSyntaxUID == RLELossless
    assert np.array_equal(plain.pixel_array, stored.pixel_array)
    assert np.array_equal(plain.pixel_array, original.pixel_array)
