"""The DICOM listener: a pynetdicom SCU pushes a series over loopback, the series is ingested and analysed.

The loopback tests start the listener in this process on a free port with a short quiet period;
the collector tests drive the quiet period with a fake clock.
"""

from __future__ import annotations

import time
from pathlib import Path

import pydicom
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, MRImageStorage, Verification

from analysis.choices import RunStatus
from analysis.models import AnalysisRun
from patients.choices import SeriesStatus
from patients.dicom_listener import DicomListener, SeriesCollector
from patients.models import Series, Upload
from tests.conftest import ctdata_path

from .scans import ct_series


def send(port: int, datasets: list[pydicom.Dataset], *, ae_title: str = "COVIDSITE") -> tuple[int, list[int]]:
    """C-ECHO then C-STORE each dataset in one association; returns the echo status and the store statuses."""
    scu = AE(ae_title="SCANNER")
    scu.add_requested_context(Verification)
    syntaxes = sorted({str(ds.file_meta.TransferSyntaxUID) for ds in datasets} | {"1.2.840.10008.1.2.1"})
    # One context per transfer syntax: the listener accepts one syntax per context.
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        for syntax in syntaxes:
            scu.add_requested_context(sop_class, syntax)
    association = scu.associate("127.0.0.1", port, ae_title=ae_title)
    assert association.is_established
    try:
        echo = association.send_c_echo().Status
        statuses = [association.send_c_store(ds).get("Status", -1) for ds in datasets]
    finally:
        association.release()
    return echo, statuses


def wait_for(condition, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not reached within {timeout} s")


@pytest.fixture
def listener(team_a):
    # Long enough that the second association of a test arrives within it on a busy machine.
    server = DicomListener(team_a, port=0, host="127.0.0.1", ae_title="COVIDSITE", quiet_seconds=1.5)
    server.start()
    yield server
    server.stop(flush=False)


@pytest.mark.django_db(transaction=True)
def test_pushed_series_is_ingested_after_the_quiet_period_and_analysed(listener, team_a, tmp_path):
    paths = ct_series(tmp_path / "scan", patient_id="PUSH-001", slices=6)
    datasets = [pydicom.dcmread(p) for p in paths]

    echo, statuses = send(listener.address[1], datasets[:4])
    # The rest arrives over a second association, within the quiet period: still one series, one ingest.
    _, more = send(listener.address[1], datasets[4:])

    assert echo == 0x0000
    assert statuses + more == [0x0000] * 6
    series = wait_for(lambda: Series.objects.filter(status=SeriesStatus.READY).first())
    assert series.slice_count == 6
    assert series.study.patient.identifier == "PUSH-001"
    assert series.study.patient.team == team_a
    [upload] = wait_for(lambda: list(Upload.objects.all()))
    assert (upload.channel, upload.accepted_count, upload.refused_count) == ("dicom", 6, 0)
    run = wait_for(lambda: AnalysisRun.objects.filter(series=series).first())
    assert run.status == RunStatus.QUEUED  # the same hand-over to the worker as after an upload
    wait_for(lambda: not any(listener.collector.staging.iterdir()))  # staging emptied after the ingest


@pytest.mark.django_db(transaction=True)
def test_listener_refuses_images_that_are_not_ct(listener):
    scu = AE(ae_title="SCANNER")
    scu.add_requested_context(MRImageStorage)
    association = scu.associate("127.0.0.1", listener.address[1], ae_title="COVIDSITE")
    # MR is not among the listener's storage classes: with nothing to accept, the association is refused.
    assert not association.is_established
    assert not Upload.objects.exists()


@pytest.mark.realdata
@pytest.mark.django_db(transaction=True)
def test_p001_pushed_over_dicom_is_ingested_whole(listener, team_a):
    files = sorted(p for p in ctdata_path("covid-ct-md", "P001").iterdir() if p.is_file())
    datasets = [pydicom.dcmread(p) for p in files]

    started = time.perf_counter()
    echo, statuses = send(listener.address[1], datasets)
    sent = time.perf_counter() - started

    assert echo == 0x0000
    assert set(statuses) == {0x0000}
    series = wait_for(lambda: Series.objects.filter(status=SeriesStatus.READY).first(), timeout=60)
    assert series.slice_count == len(files) == 148
    # The run is queued once the READY series is committed: a moment after the status can be seen.
    assert wait_for(lambda: AnalysisRun.objects.filter(series=series).exists(), timeout=30)
    print(f"P001: {len(files)} images sent over C-STORE in {sent:.2f} s")


def test_collector_waits_for_the_quiet_period(team_a, tmp_path):
    now = [100.0]
    collector = SeriesCollector(team_a, tmp_path / "staging", quiet_seconds=10, clock=lambda: now[0])
    paths = ct_series(tmp_path / "scan", patient_id="PUSH-002", slices=6)
    for path in paths[:3]:
        ds = pydicom.dcmread(path)
        collector.add(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, path.read_bytes())

    now[0] = 109.0
    assert collector.flush_due() == []  # 9 s of quiet: the scanner may still be sending
    for path in paths[3:]:
        ds = pydicom.dcmread(path)
        collector.add(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, path.read_bytes())
    now[0] = 118.0
    assert collector.flush_due() == []  # the late images restarted the wait
    now[0] = 119.0
    [upload] = collector.flush_due()

    assert upload.accepted_count == 6
    assert Series.objects.get().slice_count == 6
    assert collector.pending_series == 0


def test_images_staged_before_a_restart_are_still_ingested(team_a, tmp_path):
    staging = tmp_path / "staging"
    first = SeriesCollector(team_a, staging, quiet_seconds=0)
    for path in ct_series(tmp_path / "scan", patient_id="PUSH-003", slices=6):
        ds = pydicom.dcmread(path)
        first.add(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, path.read_bytes())
    del first  # the listener stopped before the quiet period ended

    again = SeriesCollector(team_a, staging, quiet_seconds=0)
    [upload] = again.flush_due()

    assert upload.accepted_count == 6
    assert not any(Path(staging).iterdir())


def test_command_names_an_unknown_team_and_a_bad_ae_title(team_a):
    with pytest.raises(CommandError, match="no team with slug 'nope' \\(teams: team-a\\)"):
        call_command("dicom_listener", "--team", "nope")
    with pytest.raises(CommandError, match="an AE title is 1 to 16 printable characters"):
        call_command("dicom_listener", "--team", "team-a", "--ae-title", "A" * 17, "--port", "11112")


def test_ct_storage_is_what_the_listener_offers(team_a, tmp_path):
    listener = DicomListener(team_a, port=0, ae_title="COVIDSITE", quiet_seconds=1, staging=tmp_path / "s")
    offered = {str(context.abstract_syntax) for context in listener.ae.supported_contexts}
    assert str(CTImageStorage) in offered
    assert str(Verification) in offered
    assert str(MRImageStorage) not in offered


@pytest.mark.django_db(transaction=True)
def test_pushed_phantom_is_analysed_and_its_exports_match_the_run(listener, team_a, tmp_path):
    """End to end: C-STORE, ingest, the analysis itself, then SEG and SR read back against the stored run."""
    import io

    import highdicom as hd
    import numpy as np

    from analysis.execute import execute_run, load_series_volume
    from analysis.export import read_sr_measurements
    from analysis.pipeline.run import run_pipeline
    from analysis.pipeline.volume import write_dicom_series
    from analysis.run_exports import export_run
    from analysis.storage import load_label_map
    from tests.analysis.conftest import small_phantom

    phantom = small_phantom()
    paths = write_dicom_series(phantom.volume, tmp_path / "phantom", patient_id="PUSH-PH")
    _, statuses = send(listener.address[1], [pydicom.dcmread(p) for p in paths])
    assert set(statuses) == {0x0000}
    run = wait_for(lambda: AnalysisRun.objects.filter(series__study__patient__identifier="PUSH-PH").first())

    execute_run(run.pk, pipeline=run_pipeline)  # what the worker does with the queued run

    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.poi == pytest.approx(phantom.truth.poi, abs=0.05)
    report = pydicom.dcmread(io.BytesIO(export_run(run, "sr").content))
    values = read_sr_measurements(report)
    assert values["poi"] == pytest.approx(run.poi, rel=1e-9)
    assert values["lung_volume_ml"] == pytest.approx(run.lung_volume_ml, rel=1e-9)
    assert values["ct_severity_score"] == run.ct_severity_score
    seg = hd.seg.segread(io.BytesIO(export_run(run, "seg").content))
    volume = load_series_volume(run.series)
    frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=list(volume.slice_uids), segment_numbers=[1, 2, 3]
    )
    lungs, infection = load_label_map(run.lungs_file), load_label_map(run.infection_file)
    for s, expected in enumerate((lungs > 0, infection == 1, infection == 2)):
        canonical = np.stack([volume.from_stored_plane(frames[z, :, :, s]) for z in range(volume.shape[0])])
        assert np.array_equal(canonical, expected), s
    assert (infection > 0).any()
