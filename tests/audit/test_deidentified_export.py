"""De-identified DICOM export: identity gone, pseudonyms stable within a team, pixels untouched, audited."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pydicom
import pytest
from django.urls import reverse

from audit.choices import AuditAction
from audit.models import AuditEvent
from patients.deidentify import pseudonym, team_key
from patients.ingest import ingest_paths
from patients.models import Series
from tests.patients.scans import ct_series, edit


@pytest.fixture
def stored_series(team_a, tmp_path) -> tuple[Series, list]:
    paths = ct_series(tmp_path / "scan", patient_id="MRN-77321", slices=6)

    def identify(ds):
        ds.PatientName = "Doe^Jane"
        ds.InstitutionName = "St Elsewhere Hospital"
        ds.ReferringPhysicianName = "House^Gregory"
        ds.add_new(0x00091001, "LO", "vendor secret MRN-77321")  # a private element

    edit(paths, identify)
    ingest_paths(team_a, [tmp_path / "scan"])
    return Series.objects.get(), [pydicom.dcmread(p) for p in paths]


def _download(client, series: Series) -> list[pydicom.Dataset]:
    response = client.get(reverse("series-deidentified", args=[series.pk]))
    assert response.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    return [pydicom.dcmread(io.BytesIO(archive.read(name))) for name in sorted(archive.namelist())]


def test_the_export_removes_identity_and_keeps_the_image(client, clinician, stored_series):
    series, originals = stored_series
    client.force_login(clinician)
    exported = _download(client, series)
    assert len(exported) == len(originals) == 6
    by_position = {tuple(ds.ImagePositionPatient): ds for ds in originals}
    for ds in exported:
        assert ds.PatientID != "MRN-77321"
        assert str(ds.PatientName) != "Doe^Jane"
        assert ds.get("InstitutionName", "") != "St Elsewhere Hospital"
        assert str(ds.get("ReferringPhysicianName", "")) != "House^Gregory"
        assert ds.PatientIdentityRemoved == "YES"
        assert not [element for element in ds if element.tag.is_private]
        assert ds.StudyInstanceUID != originals[0].StudyInstanceUID
        assert ds.SeriesInstanceUID != originals[0].SeriesInstanceUID
        original = by_position[tuple(ds.ImagePositionPatient)]
        np.testing.assert_array_equal(ds.pixel_array, original.pixel_array)
    # One study and one series after de-identification, as before.
    assert len({ds.StudyInstanceUID for ds in exported}) == 1
    assert len({ds.SeriesInstanceUID for ds in exported}) == 1
    event = AuditEvent.objects.get(action=AuditAction.EXPORT)
    assert (event.username, event.object_type, event.summary) == (
        clinician.username,
        "series",
        "de-identified DICOM, 6 files",
    )


def test_the_same_patient_gets_the_same_pseudonyms_in_every_export_of_the_team(client, clinician, stored_series):
    series, _ = stored_series
    client.force_login(clinician)
    first, second = _download(client, series), _download(client, series)
    assert [(d.PatientID, d.StudyInstanceUID, d.SOPInstanceUID) for d in first] == [
        (d.PatientID, d.StudyInstanceUID, d.SOPInstanceUID) for d in second
    ]


def test_csv_pseudonyms_are_stable_within_a_team_and_unlinkable_across_teams():
    key_a, key_b = team_key("site-secret", "team-a"), team_key("site-secret", "team-b")
    assert pseudonym(key_a, "MRN-1") == pseudonym(key_a, "MRN-1")
    assert pseudonym(key_a, "MRN-1") != pseudonym(key_a, "MRN-2")
    assert pseudonym(key_a, "MRN-1") != pseudonym(key_b, "MRN-1")
    assert "MRN" not in pseudonym(key_a, "MRN-1")


def test_viewers_cannot_export_and_other_teams_cannot_see_the_series(client, viewer, outsider, stored_series):
    series, _ = stored_series
    client.force_login(viewer)
    assert client.get(reverse("series-deidentified", args=[series.pk])).status_code == 403
    client.force_login(outsider)
    assert client.get(reverse("series-deidentified", args=[series.pk])).status_code == 404
    assert not AuditEvent.objects.filter(action=AuditAction.EXPORT).exists()
