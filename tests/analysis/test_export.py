"""Exports of an analysis: DICOM SEG and SR read back with highdicom, CSV and NIfTI, and who may download them.

The SEG check does not trust the exporter's geometry: each frame is compared with the label computed
from the pixels of the very stored image it references, for series stored in three orientations.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from django.conf import settings
from django.test import Client
from django.urls import reverse

from analysis.choices import Region, RunStatus
from analysis.export import (
    CONSOLIDATION_SEGMENT,
    GGO_SEGMENT,
    LUNGS,
    ExportError,
    Producer,
    build_sr,
    completed_headers,
    measurements_csv,
    ordered_sources,
    read_sr_measurements,
)
from analysis.models import AnalysisRun, RegionMeasurement
from analysis.pipeline.volume import CTVolume
from analysis.storage import load_label_map
from audit.choices import AuditAction
from audit.models import AuditEvent

from .exported import CONSOLIDATION_ABOVE, GGO_ABOVE, LUNG_ABOVE, ORIENTATIONS, series_with_run, stored_hu


def download(user, run: AnalysisRun, kind: str):
    client = Client()
    client.force_login(user)
    return client.get(reverse("run-export", args=[run.pk, kind]))


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
def test_seg_frames_lie_on_the_slices_they_were_computed_from(orientation, viewer, team_a, tmp_path):
    series, run, volume = series_with_run(team_a, tmp_path / "series", orientation=orientation)

    response = download(viewer, run, "seg")

    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="analysis-{run.pk}-seg.dcm"'
    seg = hd.seg.segread(io.BytesIO(body(response)))
    assert seg.SegmentationType == "BINARY"
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["Lungs", "Ground-glass opacity", "Consolidation"]
    instances = list(series.instances.order_by("index"))
    # Every frame is kept: one per stored image and segment, empty or not.
    assert int(seg.NumberOfFrames) == 3 * len(instances)
    assert {uid for _, _, uid in seg.get_source_image_uids()} == {i.sop_instance_uid for i in instances}
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[i.sop_instance_uid for i in instances],
        segment_numbers=[LUNGS, GGO_SEGMENT, CONSOLIDATION_SEGMENT],
    )
    for k, instance in enumerate(instances):
        hu = stored_hu(Path(settings.MEDIA_ROOT) / instance.file)
        assert np.array_equal(pixels[k, :, :, 0], hu > LUNG_ABOVE), instance.index
        assert np.array_equal(pixels[k, :, :, 1], (hu > GGO_ABOVE) & (hu <= CONSOLIDATION_ABOVE)), instance.index
        assert np.array_equal(pixels[k, :, :, 2], hu > CONSOLIDATION_ABOVE), instance.index

    # And back onto the canonical grid: the stored label maps, voxel for voxel.
    lungs, infection = load_label_map(run.lungs_file), load_label_map(run.infection_file)
    frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=list(volume.slice_uids), segment_numbers=[LUNGS, GGO_SEGMENT, CONSOLIDATION_SEGMENT]
    )
    canonical = np.stack([[volume.from_stored_plane(frames[z, :, :, s]) for z in range(6)] for s in range(3)])
    assert np.array_equal(canonical[0], lungs > 0)
    assert np.array_equal(canonical[1], infection == 1)
    assert np.array_equal(canonical[2], infection == 2)
    assert all(canonical[s].any() for s in range(3))  # every segment has voxels to compare


def test_seg_references_the_source_series_and_frame_of_reference(clinician, team_a, tmp_path):
    series, run, _ = series_with_run(team_a, tmp_path / "series", orientation="transposed")

    seg = hd.seg.segread(io.BytesIO(body(download(clinician, run, "seg"))))

    assert seg.StudyInstanceUID == series.study.study_instance_uid
    assert seg.PatientID == series.study.patient.identifier
    [referenced] = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == series.series_instance_uid
    source = pydicom.dcmread(Path(settings.MEDIA_ROOT) / series.instances.first().file, stop_before_pixels=True)
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID


def test_sr_reports_the_values_of_the_run(viewer, team_a, tmp_path):
    series, run, _ = series_with_run(team_a, tmp_path / "series")

    response = download(viewer, run, "sr")

    assert response.status_code == 200
    report = pydicom.dcmread(io.BytesIO(body(response)))
    assert report.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert report.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert report.StudyInstanceUID == series.study.study_instance_uid
    values = read_sr_measurements(report)
    assert values == {
        "lung_volume_ml": pytest.approx(run.lung_volume_ml, rel=1e-9),
        "infection_volume_ml": pytest.approx(run.infection_volume_ml, rel=1e-9),
        "ggo_volume_ml": pytest.approx(run.ggo_volume_ml, rel=1e-9),
        "consolidation_volume_ml": pytest.approx(run.consolidation_volume_ml, rel=1e-9),
        "poi": pytest.approx(run.poi, rel=1e-9),
        "ihu": pytest.approx(run.ihu, rel=1e-9),
        "ct_severity_score": 17.0,
    }
    evidence = report.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.SeriesInstanceUID == series.series_instance_uid
    assert len(evidence.ReferencedSOPSequence) == series.instances.count()


def test_sr_leaves_out_a_value_the_run_does_not_have(tmp_path):
    # No infection: iHU is undefined and absent from the report, while a score of 0 is a value.
    report = build_sr_from_headers(tmp_path, {"lung_volume_ml": 3500.0, "ihu": None, "ct_severity_score": 0})
    assert read_sr_measurements(report) == {"lung_volume_ml": 3500.0, "ct_severity_score": 0.0}


def build_sr_from_headers(tmp_path: Path, values: dict) -> pydicom.Dataset:
    from analysis.pipeline.volume import write_dicom_series

    hu = np.full((3, 64, 64), -1000, dtype=np.int16)
    paths = write_dicom_series(CTVolume(hu=hu, spacing=(5.0, 1.0, 1.0)), tmp_path / "sr", patient_id="SR-1")
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    out = io.BytesIO()
    build_sr(headers, values, Producer("test", 1)).save_as(out)
    return pydicom.dcmread(io.BytesIO(out.getvalue()))


def test_csv_lists_every_region_with_its_values(clinician, team_a, tmp_path):
    _, run, _ = series_with_run(team_a, tmp_path / "series")
    for number, region in enumerate(reversed(Region.values)):
        RegionMeasurement.objects.create(
            run=run,
            region=region,
            lung_volume_ml=1000.0 + number,
            infection_volume_ml=100.0 + number,
            ggo_volume_ml=80.0,
            consolidation_volume_ml=20.0 + number,
            poi=0.1 + number / 100,
            ihu=None if region == Region.LEFT_UPPER else -600.0 + number,
            severity_score=number % 6,
        )

    response = download(clinician, run, "csv")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(body(response).decode())))
    assert [row["region"] for row in rows] == Region.values  # both lungs first, then lungs, then zones
    both = RegionMeasurement.objects.get(run=run, region=Region.BOTH)
    assert float(rows[0]["poi"]) == both.poi
    assert float(rows[0]["consolidation_volume_ml"]) == both.consolidation_volume_ml
    assert rows[Region.values.index(Region.LEFT_UPPER)]["ihu"] == ""
    event = AuditEvent.objects.get(action=AuditAction.EXPORT)
    assert (event.username, event.object_id, event.patient_identifier) == (clinician.username, str(run.pk), "EXP-0001")


def test_csv_of_a_run_without_regions_holds_its_whole_scan_values():
    text = measurements_csv([{"region": "both", "poi": 0.25, "ihu": None, "lung_volume_ml": 4000.0}])
    [row] = list(csv.DictReader(io.StringIO(text)))
    assert row["poi"] == "0.25"
    assert row["ihu"] == ""
    assert row["lung_volume_ml"] == "4000.0"


@pytest.mark.parametrize(("kind", "name"), [("nifti-lungs", "lungs"), ("nifti-infection", "infection")])
def test_nifti_label_map_keeps_values_and_geometry(kind, name, viewer, team_a, tmp_path):
    _, run, volume = series_with_run(team_a, tmp_path / "series", orientation="flipped")

    response = download(viewer, run, kind)

    assert response.status_code == 200
    path = tmp_path / f"out-{name}.nii.gz"
    path.write_bytes(body(response))
    image = sitk.ReadImage(str(path))
    stored = load_label_map(getattr(run, f"{name}_file"))
    assert np.array_equal(sitk.GetArrayFromImage(image), stored)
    assert image.GetSpacing() == pytest.approx(volume.spacing[::-1])
    assert image.GetOrigin() == pytest.approx(volume.origin)


def test_another_teams_run_is_not_found(outsider, team_a, tmp_path):
    _, run, _ = series_with_run(team_a, tmp_path / "series")
    for kind in ("seg", "sr", "csv", "nifti-lungs"):
        assert download(outsider, run, kind).status_code == 404
    assert not AuditEvent.objects.filter(action=AuditAction.EXPORT).exists()


def test_anonymous_download_goes_to_the_login_page(team_a, tmp_path):
    _, run, _ = series_with_run(team_a, tmp_path / "series")
    response = Client().get(reverse("run-export", args=[run.pk, "seg"]))
    assert response.status_code == 302
    assert reverse("login") in response["Location"]


def test_unfinished_run_cannot_be_exported_and_says_why(viewer, team_a, tmp_path):
    _, run, _ = series_with_run(team_a, tmp_path / "series")
    AnalysisRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)

    response = download(viewer, run, "seg")

    assert response.status_code == 409
    assert "is running: only a finished analysis can be exported" in response.content.decode()


def test_unknown_export_is_not_found(viewer, team_a, tmp_path):
    _, run, _ = series_with_run(team_a, tmp_path / "series")
    assert download(viewer, run, "pdf").status_code == 404


def test_sources_missing_a_slice_are_refused():
    volume = CTVolume(hu=np.zeros((3, 4, 4), dtype=np.int16), spacing=(1.0, 1.0, 1.0), slice_uids=("1", "2", "3"))
    headers = []
    for uid in ("1", "3"):
        ds = pydicom.Dataset()
        ds.SOPInstanceUID = uid
        headers.append(ds)
    with pytest.raises(ExportError, match="1 slice\\(s\\) of the analysed volume have no stored image \\(first: 2\\)"):
        ordered_sources(volume, headers)


def test_headers_of_an_anonymised_export_are_completed_on_copies():
    source = pydicom.Dataset()
    source.SOPInstanceUID = "1.2.3.1"
    source.SeriesInstanceUID = "1.2.3"
    source.StudyInstanceUID = ""

    [completed] = completed_headers([source], {"StudyInstanceUID": "2.25.7", "PatientID": "PAT-9"})

    assert (completed.StudyInstanceUID, completed.PatientID, completed.PatientName) == ("2.25.7", "PAT-9", "")
    assert completed.FrameOfReferenceUID.startswith("2.25.")
    assert "PatientName" not in source  # the stored header is left as it is
    assert source.StudyInstanceUID == ""


@pytest.mark.realdata
def test_p001_seg_maps_onto_the_stored_slices(viewer, team_a):
    from analysis.execute import load_series_volume
    from analysis.storage import save_label_map
    from patients.ingest import ingest_paths
    from patients.models import Series
    from tests.conftest import ctdata_path

    from .exported import labels_of

    upload = ingest_paths(team_a, [ctdata_path("covid-ct-md", "P001")])
    series = Series.objects.get(pk=upload.report["series"][0]["id"])
    volume = load_series_volume(series)
    lungs, infection = labels_of(volume.hu)
    run = AnalysisRun.objects.create(series=series, pipeline_version="test-export", status=RunStatus.SUCCEEDED)
    run.lungs_file = save_label_map(run, "lungs", lungs)
    run.infection_file = save_label_map(run, "infection", infection)
    run.save()

    seg = hd.seg.segread(io.BytesIO(body(download(viewer, run, "seg"))))

    assert int(seg.NumberOfFrames) == 3 * 148
    instances = list(series.instances.order_by("index"))[::12]  # every 12th slice: decoding all takes long
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[i.sop_instance_uid for i in instances], segment_numbers=[LUNGS, CONSOLIDATION_SEGMENT]
    )
    for k, instance in enumerate(instances):
        hu = stored_hu(Path(settings.MEDIA_ROOT) / instance.file)
        assert np.array_equal(pixels[k, :, :, 0], hu > LUNG_ABOVE), instance.index
        assert np.array_equal(pixels[k, :, :, 1], hu > CONSOLIDATION_ABOVE), instance.index


def test_api_exports_with_a_token_and_keeps_other_teams_out(viewer, outsider, team_a, tmp_path):
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    _, run, _ = series_with_run(team_a, tmp_path / "series")
    url = f"/api/analyses/{run.pk}/export/sr/"
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=viewer).key}")

    response = api.get(url, HTTP_ACCEPT="application/dicom")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/dicom"
    assert read_sr_measurements(pydicom.dcmread(io.BytesIO(response.content)))["poi"] == pytest.approx(run.poi)
    assert api.get(f"/api/analyses/{run.pk}/export/pdf/").status_code == 404
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=outsider).key}")
    assert other.get(url).status_code == 404


def test_nifti_upload_exports_label_maps_but_no_dicom(viewer, team_a, tmp_path):
    from analysis.execute import load_series_volume
    from analysis.storage import save_label_map
    from patients.ingest import ingest_paths
    from patients.models import Series
    from tests.patients.test_nifti import ct_values, write_nifti

    path = write_nifti(tmp_path / "chest.nii.gz", ct_values())
    upload = ingest_paths(team_a, [path], patient_identifier="NII-1")
    series = Series.objects.get(pk=upload.report["series"][0]["id"])
    volume = load_series_volume(series)
    run = AnalysisRun.objects.create(series=series, pipeline_version="test-export", status=RunStatus.SUCCEEDED)
    run.lungs_file = save_label_map(run, "lungs", (volume.hu > -200).astype(np.uint8))
    run.infection_file = save_label_map(run, "infection", (volume.hu > 100).astype(np.uint8))
    run.save()

    refused = download(viewer, run, "seg")
    nifti = download(viewer, run, "nifti-lungs")

    assert refused.status_code == 409
    assert "uploaded as NIfTI: there are no DICOM images to reference" in refused.content.decode()
    assert nifti.status_code == 200
    out = tmp_path / "lungs.nii.gz"
    out.write_bytes(body(nifti))
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out))), load_label_map(run.lungs_file))
