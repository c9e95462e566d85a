"""NIfTI ingest: accepted for a named patient only, geometry from the header, re-upload recognised."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from django.core.files.uploadedfile import SimpleUploadedFile

from patients.choices import SeriesSource, SeriesStatus
from patients.ingest import ingest_paths, ingest_uploaded_files
from patients.models import Patient, Series
from tests.conftest import ctdata_path
from tests.patients.scans import stored_files


def write_nifti(path: Path, values: np.ndarray, *, spacing=(0.8, 0.7, 5.0), direction=None) -> Path:
    image = sitk.GetImageFromArray(values)  # values are (z, y, x)
    image.SetSpacing(spacing)
    image.SetOrigin((-20.0, -30.0, -100.0))
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path), useCompression=True)
    return path


def ct_values(shape=(10, 64, 72), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1024, 600, size=shape).astype(np.int16)


def test_a_nifti_ct_for_a_named_patient_becomes_a_ready_series(team_a, tmp_path, settings):
    path = write_nifti(tmp_path / "chest.nii.gz", ct_values())
    upload_file = SimpleUploadedFile("chest.nii.gz", path.read_bytes())

    upload = ingest_uploaded_files(team_a, [upload_file], patient_identifier="MRN-5")

    assert (upload.accepted_count, upload.refused_count) == (1, 0)
    series = Series.objects.get()
    assert (series.source, series.status, series.study.patient.identifier) == (
        SeriesSource.NIFTI, SeriesStatus.READY, "MRN-5",
    )  # fmt: skip
    assert (series.rows, series.columns, series.slice_count) == (64, 72, 10)
    assert (series.pixel_spacing_row, series.pixel_spacing_col, series.slice_spacing) == pytest.approx((0.7, 0.8, 5.0))
    assert series.orientation == pytest.approx([1, 0, 0, 0, 1, 0])
    assert series.origin == pytest.approx([-20.0, -30.0, -100.0])
    assert series.series_instance_uid.startswith("2.25.")
    stored = Path(settings.MEDIA_ROOT) / series.volume_file
    assert series.volume_file.startswith("nifti/team-a/")
    assert series.volume_file.endswith(".nii.gz")
    assert stored.read_bytes() == path.read_bytes()
    assert upload.report["series"][0]["created"] is True

    again = ingest_paths(team_a, [path], patient_identifier="MRN-5")

    assert again.report["series"][0]["created"] is False
    assert Series.objects.count() == 1
    assert len(stored_files(settings.MEDIA_ROOT)) == 1


def test_a_nifti_without_a_patient_identifier_is_refused(team_a, tmp_path, settings):
    path = write_nifti(tmp_path / "chest.nii.gz", ct_values())

    upload = ingest_paths(team_a, [path])

    assert upload.report["refused"] == [
        {
            "file": "chest.nii.gz",
            "reason": "a NIfTI file carries no patient information: give a patient identifier with the upload",
        }
    ]
    assert not Patient.objects.exists()
    assert stored_files(settings.MEDIA_ROOT) == []


@pytest.mark.parametrize(
    ("values", "direction", "expected"),
    [
        (np.random.default_rng(1).integers(0, 255, (10, 64, 64)).astype(np.uint8), None, "do not look like CT"),
        (ct_values(), (1, 0, 0, 0, 0, 1, 0, -1, 0), "coronal volume: only axial CT can be analysed"),
        (ct_values(shape=(2, 64, 64)), None, "not a volume: only 2 slice(s)"),
        (ct_values(shape=(10, 32, 32)), None, "images of 32x32 pixels are too small"),
    ],
    ids=["8-bit", "coronal", "two-slices", "tiny"],
)
def test_a_nifti_that_is_not_an_axial_ct_volume_is_refused(team_a, tmp_path, values, direction, expected):
    path = write_nifti(tmp_path / "scan.nii.gz", values, direction=direction)

    upload = ingest_paths(team_a, [path], patient_identifier="MRN-5")

    [refusal] = upload.report["refused"]
    assert expected in refusal["reason"]
    assert not Series.objects.exists()


def test_a_damaged_nifti_is_refused(team_a, tmp_path):
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"\x1f\x8b" + bytes(200))

    upload = ingest_paths(team_a, [path], patient_identifier="MRN-5")

    assert upload.report["refused"] == [{"file": "broken.nii.gz", "reason": "not a readable NIfTI file"}]


@pytest.mark.realdata
def test_the_real_chest_nifti_is_accepted(team_a):
    path = ctdata_path("dicom-variety", "nifti", "chest_crop_pulmonary_report_1.5mm.nii.gz")

    upload = ingest_paths(team_a, [path], patient_identifier="CROP-1")

    assert upload.accepted_count == 1
    series = Series.objects.get()
    assert (series.columns, series.rows, series.slice_count) == (122, 102, 112)
    assert series.slice_spacing == pytest.approx(1.5)
