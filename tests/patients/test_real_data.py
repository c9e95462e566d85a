"""Ingest of real CT exports (skipped, with the reason, when ../shared/ctdata is absent)."""

from __future__ import annotations

import itertools
import time

import pydicom
import pytest

from patients.choices import SeriesStatus
from patients.ingest import ingest_paths
from patients.models import Instance, Series
from tests.conftest import ctdata_path

pytestmark = pytest.mark.realdata

JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"


def test_a_covid_ct_md_case_becomes_one_ready_series_sorted_by_position(team_a):
    folder = ctdata_path("covid-ct-md", "P001")

    started = time.perf_counter()
    upload = ingest_paths(team_a, [folder])
    elapsed = time.perf_counter() - started

    assert (upload.file_count, upload.accepted_count, upload.refused_count) == (148, 148, 0)
    series = Series.objects.get()
    assert (series.status, series.slice_count, series.rows, series.columns) == (SeriesStatus.READY, 148, 512, 512)
    assert series.slice_spacing == pytest.approx(2.0, abs=0.01)
    assert series.pixel_spacing_row == pytest.approx(0.748, abs=0.001)
    instances = list(Instance.objects.filter(series=series).order_by("index"))
    assert {i.transfer_syntax_uid for i in instances} == {JPEG_LOSSLESS}
    steps = [b.position - a.position for a, b in itertools.pairwise(instances)]
    assert min(steps) == pytest.approx(2.0, abs=0.01)
    assert max(steps) == pytest.approx(2.0, abs=0.01)
    # File names are not in anatomical order; the index follows the position, not the name.
    name_of = {
        str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID): path.name for path in folder.iterdir()
    }
    by_index = [name_of[i.sop_instance_uid] for i in instances]
    assert by_index != sorted(by_index)
    print(f"P001: 148 instances in {elapsed:.2f} s = {148 / elapsed:.0f} instances/s")


def test_the_jpeg_2000_series_ingests(team_a):
    folder = ctdata_path("dicom-variety", "abdomen-jpeg2000-series")
    # The export is anonymised: no PatientID, no study or series UID. It needs a patient identifier.
    without = ingest_paths(team_a, [folder])
    upload = ingest_paths(team_a, [folder], patient_identifier="ABDOMEN-1")

    assert without.accepted_count == 0
    assert all("no PatientID in the files" in r["reason"] for r in without.report["refused"])
    assert (upload.accepted_count, upload.refused_count) == (20, 0)
    series = Series.objects.get()
    assert (series.status, series.slice_count, series.description) == (SeriesStatus.READY, 20, "CT Body 3.0")
    assert series.slice_spacing == pytest.approx(2.0)
    assert series.study.patient.identifier == "ABDOMEN-1"
    assert set(series.instances.values_list("transfer_syntax_uid", flat=True)) == {JPEG_2000_LOSSLESS}


def test_single_slices_of_ny_sbu_are_not_volumes(team_a):
    upload = ingest_paths(team_a, [ctdata_path("dicom-variety", "ny-sbu-single-slices")])

    assert upload.accepted_count == 0
    assert upload.refused_count == upload.file_count == 18
    assert all("not a volume: only 1 slice" in r["reason"] for r in upload.report["refused"])
    assert not Series.objects.exists()


def test_misc_single_slices_are_refused_with_their_reasons(team_a):
    upload = ingest_paths(team_a, [ctdata_path("dicom-variety", "misc-single-slices")])

    refused = {r["file"]: r["reason"] for r in upload.report["refused"]}
    assert upload.accepted_count == 0
    for name in ("0.dcm", "1.dcm"):  # no Modality tag, but CT: judged as a series of two
        assert "not a volume: only 2 slices" in refused[f"misc-single-slices/lungmask_testdata/{name}"]
    for name in ("01.dcm", "02.dcm", "03.dcm"):
        assert "3 slices cover only 2.0 mm" in refused[f"misc-single-slices/dcmqi_ct-3slice/{name}"]
    assert refused["misc-single-slices/PROVENANCE.md"] == "not a DICOM file"
    assert not Series.objects.exists()


def test_a_compressed_slice_cut_short_is_refused(team_a, tmp_path):
    source = sorted(ctdata_path("covid-ct-md", "P001").iterdir())[0]
    cut = tmp_path / source.name
    cut.write_bytes(source.read_bytes()[:-5000])

    upload = ingest_paths(team_a, [cut])

    assert upload.report["refused"] == [
        {"file": source.name, "reason": "the file is cut short: its compressed pixel data does not end"}
    ]
