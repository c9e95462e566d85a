"""DICOM ingest: good series stored in position order, bad files and series refused with reasons, nothing half-made."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pydicom
import pytest
from django.db import DatabaseError

from patients.choices import SeriesSource, SeriesStatus, Sex
from patients.ingest import ingest_paths, ingest_uploaded_files
from patients.models import Instance, Patient, Series, Study, Upload
from patients.signals import series_ready
from tests.patients.scans import ct_series, edit, stored_files, uploaded


@pytest.fixture
def scans(tmp_path) -> Path:
    folder = tmp_path / "scans"
    folder.mkdir()
    return folder


@pytest.fixture
def no_analysis():
    """Keep the analysis app from queueing runs when on_commit callbacks execute."""
    from analysis.receivers import analyse_ready_series

    series_ready.disconnect(analyse_ready_series)
    yield
    series_ready.connect(analyse_ready_series)


def reasons(upload: Upload) -> dict[str, str]:
    return {entry["file"]: entry["reason"] for entry in upload.report["refused"]}


def test_a_good_series_becomes_one_ready_series_with_its_geometry(team_a, scans, settings):
    paths = ct_series(scans / "chest", patient_id="PAT-7", slices=8, slice_spacing=5.0)

    upload = ingest_paths(team_a, [scans])

    assert (upload.file_count, upload.accepted_count, upload.refused_count) == (8, 8, 0)
    [entry] = upload.report["series"]
    series = Series.objects.get()
    assert entry == {
        "id": series.pk,
        "series_instance_uid": series.series_instance_uid,
        "patient": "PAT-7",
        "study_date": "2024-03-01",
        "description": "Chest 5 mm",
        "slices": 8,
        "status": SeriesStatus.READY,
        "created": True,
        "added_instances": 8,
    }
    assert (series.rows, series.columns, series.slice_count) == (64, 64, 8)
    assert (series.pixel_spacing_row, series.pixel_spacing_col) == pytest.approx((0.8, 0.8))
    assert series.slice_spacing == pytest.approx(5.0)
    assert series.orientation == pytest.approx([1, 0, 0, 0, 1, 0])
    assert series.origin == pytest.approx([-25.0, -25.0, -100.0])
    assert series.source == SeriesSource.DICOM
    patient = Patient.objects.get()
    assert (patient.team, patient.identifier, patient.sex, patient.birth_year) == (team_a, "PAT-7", Sex.FEMALE, 1958)
    study = Study.objects.get()
    assert (study.study_date, study.accession_number) == (date(2024, 3, 1), "ACC-PAT-7")

    instances = list(series.instances.order_by("index"))
    assert [i.index for i in instances] == list(range(8))
    assert [i.position for i in instances] == pytest.approx([-100.0 + 5.0 * k for k in range(8)])
    expected_uids = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths]
    assert [i.sop_instance_uid for i in instances] == expected_uids
    for instance in instances:
        stored = Path(settings.MEDIA_ROOT) / instance.file
        assert instance.file == (
            f"dicom/team-a/{study.study_instance_uid}/{series.series_instance_uid}/{instance.sop_instance_uid}.dcm"
        )
        assert stored.stat().st_size == instance.file_size
        assert instance.transfer_syntax_uid == pydicom.uid.ExplicitVRLittleEndian
    assert len(stored_files(settings.MEDIA_ROOT)) == 8  # no temporary or staged files left


def test_file_names_in_reverse_order_are_sorted_by_position(team_a, scans):
    paths = ct_series(scans, slices=6)
    # The browser sends slice_1 first, and slice_1 is the top of the chest.
    names = [f"slice_{len(paths) - k}.dcm" for k in range(len(paths))]

    upload = ingest_uploaded_files(team_a, uploaded(paths, names=names))

    assert upload.accepted_count == 6
    instances = Instance.objects.order_by("index")
    uids = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths]
    assert [i.sop_instance_uid for i in instances] == uids
    assert [i.position for i in instances] == sorted(i.position for i in instances)


def test_a_reupload_creates_nothing_new(team_a, scans, settings):
    ct_series(scans, slices=8)
    ingest_paths(team_a, [scans])
    before = stored_files(settings.MEDIA_ROOT)

    again = ingest_paths(team_a, [scans])

    [entry] = again.report["series"]
    assert (entry["created"], entry["added_instances"], entry["slices"]) == (False, 0, 8)
    assert any("already stored (8 slices); nothing new" in note for note in again.report["notes"])
    assert (again.accepted_count, again.refused_count) == (8, 0)
    assert (Series.objects.count(), Instance.objects.count(), Patient.objects.count()) == (1, 8, 1)
    assert stored_files(settings.MEDIA_ROOT) == before


def test_the_same_file_twice_in_one_upload_is_stored_once(team_a, scans):
    paths = ct_series(scans, slices=5)
    shutil.copy(paths[2], scans / "copy-of-slice.dcm")

    upload = ingest_paths(team_a, [scans])

    assert Instance.objects.count() == 5
    assert upload.accepted_count == 6
    assert any("copy-of-slice.dcm is the same image as" in note for note in upload.report["notes"])


def test_more_slices_extend_a_stored_series(team_a, tmp_path):
    paths = ct_series(tmp_path / "all", slices=12, series_uid="1.2.826.0.1.3680043.10.9.1", study_uid="1.2.3.9")
    ingest_paths(team_a, paths[:6])

    upload = ingest_paths(team_a, paths[4:])

    [entry] = upload.report["series"]
    assert (entry["created"], entry["added_instances"], entry["slices"]) == (False, 6, 12)
    series = Series.objects.get()
    assert (series.slice_count, series.status) == (12, SeriesStatus.READY)
    assert series.origin == pytest.approx([-25.0, -25.0, -100.0])
    assert list(series.instances.order_by("index").values_list("index", flat=True)) == list(range(12))
    assert [i.position for i in series.instances.order_by("index")] == pytest.approx(
        [-100 + 5.0 * k for k in range(12)]
    )


def test_slices_that_would_break_a_stored_series_are_refused_and_the_series_kept(team_a, tmp_path, settings):
    uid, study = "1.2.826.0.1.3680043.10.9.2", "1.2.3.10"
    ct_series(tmp_path / "first", slices=8, series_uid=uid, study_uid=study)
    ingest_paths(team_a, [tmp_path / "first"])
    before = stored_files(settings.MEDIA_ROOT)
    # Same series, but starting 60 mm above the stored top slice: a hole in between.
    ct_series(tmp_path / "later", slices=4, series_uid=uid, study_uid=study, first_z=0.0, seed=3)

    upload = ingest_paths(team_a, [tmp_path / "later"])

    assert upload.refused_count == 4
    reason = next(iter(reasons(upload).values()))
    assert "adding 4 slice(s) to the stored series (8 slices) would make it inconsistent" in reason
    assert "missing slices between z=-65.00 and z=0.00 mm" in reason
    assert Series.objects.get().slice_count == 8
    assert Instance.objects.count() == 8
    assert stored_files(settings.MEDIA_ROOT) == before


def test_a_mixed_upload_keeps_the_good_series_and_refuses_the_one_with_a_gap(team_a, scans, settings):
    good = ct_series(scans / "good", patient_id="GOOD", slices=8)
    gapped = ct_series(scans / "gapped", patient_id="GAPPED", slices=8, seed=1)
    gapped[3].unlink()  # z = -85 mm is missing

    upload = ingest_paths(team_a, [scans])

    assert (upload.file_count, upload.accepted_count, upload.refused_count) == (15, 8, 7)
    [entry] = upload.report["series"]
    assert entry["patient"] == "GOOD"
    refused = reasons(upload)
    assert set(refused) == {f"scans/gapped/{p.name}" for p in gapped if p.exists()}
    assert all("missing slices between z=-90.00 and z=-80.00 mm" in r for r in refused.values())
    assert not Patient.objects.filter(identifier="GAPPED").exists()
    kept = stored_files(settings.MEDIA_ROOT)
    assert len(kept) == 8
    good_uids = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in good}
    assert {p.stem for p in kept} == good_uids


def _coronal(ds):
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.ImagePositionPatient = [-25.0, float(ds.InstanceNumber) * 5.0, 0.0]


def _uneven(ds):
    if int(ds.InstanceNumber) == 4:  # 2 mm off: steps of 7 and 3 mm where the others are 5
        ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], float(ds.ImagePositionPatient[2]) + 2.0]


def _same_position(ds):
    ds.ImagePositionPatient = [-25.0, -25.0, 10.0 * (int(ds.InstanceNumber) // 2)]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda ds: setattr(ds, "Modality", "MR"), "modality MR is not CT"),
        (lambda ds: delattr(ds, "PixelData"), "DICOM without pixel data (a structured report?)"),
        (_coronal, "coronal series: only axial CT series can be analysed"),
        (_uneven, "inconsistent slice spacing: steps from 3.000 to 7.000 mm"),
        (_same_position, "duplicate slice position"),
        (lambda ds: setattr(ds, "PatientID", f"P{ds.InstanceNumber}"), "its files name 6 different patients"),
        (lambda ds: setattr(ds, "PatientID", ""), "no PatientID in the files; give a patient identifier"),
    ],
    ids=["modality", "no-pixels", "coronal", "uneven", "duplicate-position", "patients", "no-patient"],
)
def test_a_bad_series_is_refused_file_by_file_and_nothing_is_kept(team_a, scans, settings, change, expected):
    paths = ct_series(scans, slices=6)
    edit(paths, change)

    upload = ingest_paths(team_a, [scans])

    assert (upload.file_count, upload.accepted_count, upload.refused_count) == (6, 0, 6)
    refused = reasons(upload)
    assert set(refused) == {f"scans/{p.name}" for p in paths}
    assert all(expected in reason for reason in refused.values()), refused
    assert not Series.objects.exists()
    assert not Patient.objects.exists()
    assert stored_files(settings.MEDIA_ROOT) == []


def test_a_single_slice_is_not_a_volume(team_a, scans):
    [path] = ct_series(scans, slices=1)

    upload = ingest_paths(team_a, [path])

    [refusal] = upload.report["refused"]
    assert refusal["file"] == path.name
    assert refusal["reason"].startswith("series ")
    assert "not a volume: only 1 slice" in refusal["reason"]


def test_a_few_thin_slices_are_not_a_lung_volume(team_a, scans):
    ct_series(scans, slices=3, slice_spacing=1.0)

    upload = ingest_paths(team_a, [scans])

    assert upload.refused_count == 3
    assert all("3 slices cover only 2.0 mm" in r for r in reasons(upload).values())


def test_files_that_are_not_dicom_are_refused_beside_a_good_series(team_a, scans):
    ct_series(scans / "series", slices=6)
    (scans / "notes.txt").write_text("report to follow")
    (scans / "scan.tar.gz").write_bytes(b"\x1f\x8b\x08\x00" + bytes(100))
    (scans / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")

    upload = ingest_paths(team_a, [scans, scans / "missing.dcm"])

    assert reasons(upload) == {
        "scans/notes.txt": "not a DICOM file",
        "scans/scan.tar.gz": "only .zip archives are supported",
        str(scans / "missing.dcm"): "no such file or folder",
    }
    assert (upload.file_count, upload.accepted_count, upload.refused_count) == (9, 6, 3)
    assert Series.objects.get().slice_count == 6


def test_a_missing_modality_with_a_hounsfield_rescale_counts_as_ct(team_a, scans):
    paths = ct_series(scans, slices=6)
    edit(paths, lambda ds: delattr(ds, "Modality"))

    upload = ingest_paths(team_a, [scans])

    assert upload.accepted_count == 6
    assert Series.objects.get().modality == "CT"


def test_a_patient_identifier_overrides_the_dicom_patient_id(team_a, scans):
    paths = ct_series(scans, slices=6)
    edit(paths, lambda ds: setattr(ds, "PatientID", ""))

    upload = ingest_paths(team_a, [scans], patient_identifier="  MRN-0042 ")

    assert upload.report["series"][0]["patient"] == "MRN-0042"
    assert Patient.objects.get().identifier == "MRN-0042"


def test_an_oversize_file_is_refused_with_its_size(team_a, scans, settings):
    settings.UPLOAD_MAX_FILE_MB = 1
    big = scans / "big.dcm"
    big.write_bytes(bytes(3 * 1024 * 1024 // 2))

    from_disk = ingest_paths(team_a, [big])
    from_browser = ingest_uploaded_files(team_a, uploaded([big]))

    assert reasons(from_disk) == {"big.dcm": "file is 1.5 MB, over the 1 MB limit"}
    assert reasons(from_browser) == {"big.dcm": "file is 1.5 MB, over the 1 MB limit"}
    assert stored_files(settings.MEDIA_ROOT) == []


def test_an_upload_over_the_file_count_or_total_size_is_refused_whole(team_a, scans, settings):
    paths = ct_series(scans, slices=6)
    settings.UPLOAD_MAX_FILES = 4

    too_many = ingest_uploaded_files(team_a, uploaded(paths))

    settings.UPLOAD_MAX_FILES = 100
    settings.UPLOAD_MAX_TOTAL_MB = 0
    too_large = ingest_uploaded_files(team_a, uploaded(paths))

    assert too_many.report["refused"] == [
        {"file": "(whole upload)", "reason": "upload has 6 files, over the 4 file limit"}
    ]
    assert (too_many.file_count, too_many.refused_count, too_many.accepted_count) == (6, 6, 0)
    [refusal] = too_large.report["refused"]
    assert refusal["reason"].startswith("upload is 0.")
    assert refusal["reason"].endswith("MB in total, over the 0 MB limit")
    assert not Series.objects.exists()
    assert stored_files(settings.MEDIA_ROOT) == []


def test_a_study_cannot_move_to_another_patient(team_a, tmp_path):
    ct_series(tmp_path / "a", patient_id="ANNA", study_uid="1.2.3.77", slices=6)
    ct_series(tmp_path / "b", patient_id="BORIS", study_uid="1.2.3.77", slices=6, seed=2)
    ingest_paths(team_a, [tmp_path / "a"])

    upload = ingest_paths(team_a, [tmp_path / "b"])

    assert upload.refused_count == 6
    assert all("study 1.2.3.77 already belongs to patient ANNA, not BORIS" in r for r in reasons(upload).values())


def test_teams_keep_their_own_copies(team_a, team_b, scans):
    ct_series(scans, slices=6)

    ingest_paths(team_a, [scans])
    upload_b = ingest_paths(team_b, [scans])

    assert upload_b.report["series"][0]["created"] is True
    assert Series.objects.for_team(team_a).count() == Series.objects.for_team(team_b).count() == 1


def test_series_ready_is_sent_once_per_ready_series_after_commit(
    team_a, tmp_path, django_capture_on_commit_callbacks, no_analysis
):
    ct_series(tmp_path / "one", patient_id="ONE", slices=6)
    ct_series(tmp_path / "two", patient_id="TWO", slices=6, seed=1)
    ct_series(tmp_path / "bad", patient_id="BAD", slices=1, seed=2)
    received: list[int] = []

    def receiver(sender, series, **kwargs):
        assert sender is Series
        received.append(series.pk)

    series_ready.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            ingest_paths(team_a, [tmp_path])
        assert received == []  # nothing before the commit
        for callback in callbacks:
            callback()
        assert sorted(received) == sorted(Series.objects.values_list("pk", flat=True))
        assert len(received) == 2

        with django_capture_on_commit_callbacks(execute=True):
            ingest_paths(team_a, [tmp_path / "one"])  # nothing new: no second analysis
        assert len(received) == 2
    finally:
        series_ready.disconnect(receiver)


def test_files_are_removed_when_the_database_part_fails(team_a, scans, settings, monkeypatch):
    ct_series(scans, slices=6)

    def broken(*args, **kwargs):
        raise DatabaseError("disk I/O error")

    monkeypatch.setattr(Instance.objects, "bulk_create", broken)
    upload = ingest_paths(team_a, [scans])

    assert upload.refused_count == 6
    assert all("could not be stored (disk I/O error); nothing was kept" in r for r in reasons(upload).values())
    assert not Series.objects.exists()
    assert not Patient.objects.exists()
    assert stored_files(settings.MEDIA_ROOT) == []


def test_an_anonymised_export_without_study_and_series_uids_gets_stable_derived_ones(team_a, tmp_path):
    first = ct_series(tmp_path / "first", slices=6, description="Lung kernel")
    second = ct_series(tmp_path / "second", slices=6, description="Soft kernel", seed=1)

    def blank(ds):
        ds.StudyInstanceUID = ""
        ds.SeriesInstanceUID = ""
        ds.FrameOfReferenceUID = "1.2.3.4.5"  # one scan, two reconstructions
        ds.StudyTime = "101010"

    edit(first + second, blank)

    upload = ingest_paths(team_a, [tmp_path])
    again = ingest_paths(team_a, [tmp_path])

    assert upload.accepted_count == 12
    series = list(Series.objects.order_by("description"))
    assert [s.description for s in series] == ["Lung kernel", "Soft kernel"]
    assert series[0].study_id == series[1].study_id  # same patient, date and time: one study
    assert all(s.series_instance_uid.startswith("2.25.") for s in series)
    assert any("carry no SeriesInstanceUID or StudyInstanceUID" in note for note in upload.report["notes"])
    assert [e["created"] for e in again.report["series"]] == [False, False]
    assert Instance.objects.count() == 12


def test_a_localizer_filed_with_the_slices_is_refused_alone(team_a, scans):
    paths = ct_series(scans / "series", slices=6)
    scout = scans / "scout.dcm"
    scout.write_bytes(paths[0].read_bytes())

    def localizer(ds):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.10.9.99"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]

    edit([scout], localizer)

    upload = ingest_paths(team_a, [scans])

    assert reasons(upload) == {"scans/scout.dcm": "a localizer (scout) image, not a slice of a volume"}
    assert Series.objects.get().slice_count == 6


def test_a_file_cut_short_in_transfer_is_refused(team_a, scans):
    paths = ct_series(scans, slices=6)
    whole = paths[2].read_bytes()
    paths[2].write_bytes(whole[: len(whole) - 1000])

    upload = ingest_paths(team_a, [scans])

    refused = reasons(upload)
    assert refused[f"scans/{paths[2].name}"] == "the file is cut short: 7192 bytes of pixel data where 8192 are needed"
    # Without that slice the others have a gap, so the series is refused as a whole.
    assert len(refused) == 6
    assert "missing slices between z=-95.00 and z=-85.00 mm" in refused[f"scans/{paths[0].name}"]
