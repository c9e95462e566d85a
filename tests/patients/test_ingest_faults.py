"""Ingest under faults: the database connection lost mid-series, a full disk, an unreadable file.

In each case the series hit by the fault is refused whole with a reason that says what happened,
nothing half-made remains (no rows, no files, no staging leftovers), the rest of the upload is kept,
and uploading the same files again succeeds. The connection-loss test kills the ingest's own
PostgreSQL connection for real (pg_terminate_backend) and is skipped on SQLite; the others run
everywhere.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest
from django.db import OperationalError, connection

from patients import ingest
from patients.choices import SeriesStatus
from patients.ingest import ingest_paths, ingest_uploaded_files
from patients.models import Instance, Patient, Series, Upload
from tests.patients.scans import ct_series, stored_files, uploaded

from .test_ingest import reasons

DISK_FULL = "could not be stored: the server's disk is full; nothing was kept, upload again once space is freed"


def two_series(folder: Path) -> tuple[list[Path], list[Path]]:
    """Two patients' series in one upload folder: `first` is ingested before `second`."""
    first = ct_series(folder / "a-first", patient_id="FIRST", slices=6, seed=1)
    second = ct_series(folder / "b-second", patient_id="SECOND", slices=6, seed=2)
    return first, second


def fail_once_in(monkeypatch, target, name: str, fault) -> list[int]:
    """Make `target.name` call `fault()` on its first call (and run for real afterwards)."""
    original = getattr(target, name)
    calls: list[int] = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            fault()
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, wrapper)
    return calls


def assert_only_stored(media_root: Path, patient: str, slices: int) -> None:
    """One READY series of `patient` with all its slices and exactly its files: nothing else anywhere."""
    series = Series.objects.get()
    assert (series.study.patient.identifier, series.status, series.slice_count) == (
        patient,
        SeriesStatus.READY,
        slices,
    )
    assert Instance.objects.count() == slices
    kept = sorted(Path(media_root) / name for name in Instance.objects.values_list("file", flat=True))
    assert stored_files(media_root) == kept  # no temporary, staged or orphaned file


# --- database connection lost -------------------------------------------------------------------


def test_a_lost_database_connection_refuses_that_series_keeps_the_next_and_a_retry_stores_it(
    team_a, tmp_path, settings, monkeypatch
):
    first, _ = two_series(tmp_path / "scans")

    def connection_lost():
        raise OperationalError("server closed the connection unexpectedly")

    fail_once_in(monkeypatch, Instance.objects, "bulk_create", connection_lost)
    upload = ingest_paths(team_a, [tmp_path / "scans"])

    assert (upload.accepted_count, upload.refused_count) == (6, 6)
    refused = reasons(upload)
    assert sorted(refused) == sorted(f"scans/a-first/{p.name}" for p in first)
    assert all(
        "could not be stored: the connection to the database was lost (server closed the connection unexpectedly); "
        "nothing was kept, upload again" in reason
        for reason in refused.values()
    )
    assert_only_stored(settings.MEDIA_ROOT, "SECOND", 6)
    assert not Patient.objects.filter(identifier="FIRST").exists()

    retry = ingest_paths(team_a, [tmp_path / "scans"])

    assert (retry.accepted_count, retry.refused_count) == (12, 0)
    assert sorted(s.study.patient.identifier for s in Series.objects.all()) == ["FIRST", "SECOND"]
    assert Instance.objects.count() == 12


@pytest.mark.django_db(transaction=True)
def test_a_postgresql_connection_killed_mid_ingest_leaves_nothing_half_made_and_the_rest_is_stored(
    team_a, tmp_path, settings, monkeypatch
):
    if connection.vendor != "postgresql":
        pytest.skip(f"needs PostgreSQL to kill the ingest's own connection (running on {connection.vendor})")
    import psycopg

    two_series(tmp_path / "scans")

    def kill_own_connection():
        # The ingest is inside its series transaction now: end its server process from a second connection,
        # as a server restart would, so the very next statement fails for real.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            [pid] = cursor.fetchone()
        with psycopg.connect(**connection.get_connection_params()) as other:
            other.execute("SELECT pg_terminate_backend(%s)", [pid])

    fail_once_in(monkeypatch, Instance.objects, "bulk_create", kill_own_connection)
    upload = ingest_paths(team_a, [tmp_path / "scans"])

    # The next series, and the Upload row, were written through a fresh connection.
    assert Upload.objects.filter(pk=upload.pk).exists()
    assert (upload.accepted_count, upload.refused_count) == (6, 6)
    assert all("the connection to the database was lost" in reason for reason in reasons(upload).values())
    assert_only_stored(settings.MEDIA_ROOT, "SECOND", 6)

    retry = ingest_paths(team_a, [tmp_path / "scans"])

    assert (retry.accepted_count, retry.refused_count) == (12, 0)
    assert Series.objects.filter(status=SeriesStatus.READY).count() == 2
    assert Instance.objects.count() == 12


# --- disk full ----------------------------------------------------------------------------------


def disk_full_after(monkeypatch, target, name: str, good_calls: int) -> None:
    """`target.name` (a copy function: source, destination) works `good_calls` times, then fills the disk."""
    original = getattr(target, name)
    calls: list[int] = []

    def copy(source, destination, *args, **kwargs):
        calls.append(1)
        if len(calls) > good_calls:
            Path(destination).write_bytes(Path(source).read_bytes()[:100])  # the part that fitted
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(source, destination, *args, **kwargs)

    monkeypatch.setattr(target, name, copy)


def test_a_full_disk_mid_series_refuses_it_whole_removes_its_files_and_a_retry_stores_it(
    team_a, tmp_path, settings, monkeypatch
):
    first, _ = two_series(tmp_path / "scans")
    ingest_paths(team_a, [tmp_path / "scans" / "b-second"])  # stored before the disk filled up
    disk_full_after(monkeypatch, ingest.shutil, "copyfile", good_calls=3)

    upload = ingest_paths(team_a, [tmp_path / "scans" / "a-first"])

    assert (upload.accepted_count, upload.refused_count) == (0, 6)
    assert sorted(reasons(upload)) == sorted(f"a-first/{p.name}" for p in first)
    assert all(reason.endswith(f"(Chest 5 mm): {DISK_FULL}") for reason in reasons(upload).values())
    assert_only_stored(settings.MEDIA_ROOT, "SECOND", 6)

    monkeypatch.undo()  # space was freed
    retry = ingest_paths(team_a, [tmp_path / "scans" / "a-first"])

    assert (retry.accepted_count, retry.refused_count) == (6, 0)
    assert Series.objects.filter(status=SeriesStatus.READY).count() == 2


def test_a_full_disk_while_staging_a_browser_upload_loses_nothing_stored_before(
    team_a, tmp_path, settings, monkeypatch
):
    first, second = two_series(tmp_path / "scans")
    ingest_uploaded_files(team_a, uploaded(second))
    stored_before = stored_files(settings.MEDIA_ROOT)

    def full_disk(source, destination):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ingest.os, "replace", full_disk)  # the move from staging into the store
    monkeypatch.setattr(ingest.shutil, "copyfile", full_disk)  # and the copy it falls back to
    upload = ingest_uploaded_files(team_a, uploaded(first))

    assert upload.refused_count == 6
    assert all(reason.endswith(DISK_FULL) for reason in reasons(upload).values())
    monkeypatch.undo()
    assert stored_files(settings.MEDIA_ROOT) == stored_before  # staging folder cleaned, the other series intact
    assert_only_stored(settings.MEDIA_ROOT, "SECOND", 6)


def test_a_full_disk_while_receiving_an_upload_refuses_the_files_that_did_not_fit(
    team_a, tmp_path, settings, monkeypatch
):
    paths = ct_series(tmp_path / "scan", patient_id="RECEIVED", slices=6)
    real_open = open

    class FullDisk:
        """A file being written when the disk fills up: the first chunk does not fit."""

        def __init__(self, file):
            self.stream = real_open(file, "wb")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.stream.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    def staging_open(file, mode="r", *args, **kwargs):
        if "incoming" in Path(file).parts and "w" in mode:
            return FullDisk(file)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(ingest, "open", staging_open, raising=False)
    upload = ingest_uploaded_files(team_a, uploaded(paths))
    monkeypatch.undo()

    assert (upload.file_count, upload.accepted_count, upload.refused_count) == (6, 0, 6)
    assert set(reasons(upload).values()) == {
        "could not be received: the server's disk is full; nothing was kept, upload again once space is freed"
    }
    assert stored_files(settings.MEDIA_ROOT) == []  # the staging folder and its partial files are gone
    assert not Series.objects.exists()
    assert ingest_uploaded_files(team_a, uploaded(paths)).accepted_count == 6


# --- unreadable files ---------------------------------------------------------------------------


def test_an_unreadable_file_is_refused_with_the_reason_and_the_series_beside_it_is_stored(
    team_a, tmp_path, settings, monkeypatch
):
    scans = tmp_path / "scans"
    good = ct_series(scans / "chest", patient_id="GOOD", slices=6)
    locked = scans / "locked.dcm"
    shutil.copyfile(good[0], locked)
    (scans / "garbage.dcm").write_bytes(b"\x00\x01not an image at all" * 50)
    real_open = open

    def permission_denied_for_locked(file, *args, **kwargs):
        # The tests may run as root, for whom chmod 000 changes nothing: refuse the read the way the OS would.
        if Path(file) == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(ingest, "open", permission_denied_for_locked, raising=False)
    upload = ingest_paths(team_a, [scans])

    assert reasons(upload) == {
        "scans/locked.dcm": "cannot be read: Permission denied",
        "scans/garbage.dcm": "not a DICOM file",
    }
    assert (upload.file_count, upload.accepted_count, upload.refused_count) == (8, 6, 2)
    assert_only_stored(settings.MEDIA_ROOT, "GOOD", 6)
    assert sorted(p.name for p in tmp_path.joinpath("scans").iterdir()) == ["chest", "garbage.dcm", "locked.dcm"]


# --- what the client sees -----------------------------------------------------------------------


def test_an_api_upload_during_a_database_outage_gets_a_clear_503_and_the_retry_succeeds(
    clinician, tmp_path, settings, monkeypatch
):
    from rest_framework.test import APIClient

    from covidsite.outages import MESSAGE

    paths = ct_series(tmp_path / "scan", patient_id="OUTAGE-1", slices=6)
    api = APIClient()
    api.force_authenticate(clinician)

    def server_gone(*args, **kwargs):
        raise OperationalError("connection to server at 127.0.0.1, port 5432 failed: Connection refused")

    # The server goes away while the series' rows are written and is still gone when the report is saved.
    monkeypatch.setattr(Instance.objects, "bulk_create", server_gone)
    monkeypatch.setattr(Upload.objects, "create", server_gone)
    monkeypatch.setattr(connection, "is_usable", lambda: False)
    response = api.post("/api/uploads/", {"files": uploaded(paths)}, format="multipart")

    assert response.status_code == 503
    assert response.json() == {"detail": MESSAGE}
    assert response["Retry-After"] == "30"
    assert not Series.objects.exists()
    assert not Upload.objects.exists()
    assert stored_files(settings.MEDIA_ROOT) == []

    monkeypatch.undo()  # the server is back
    retry = api.post("/api/uploads/", {"files": uploaded(paths)}, format="multipart")

    assert retry.status_code == 201, retry.content
    assert (retry.json()["accepted_count"], retry.json()["refused_count"]) == (6, 0)
    assert_only_stored(settings.MEDIA_ROOT, "OUTAGE-1", 6)


def test_only_a_lost_database_is_a_503_other_database_errors_stay_server_errors(db, rf, monkeypatch):
    from django.db import IntegrityError, InterfaceError

    from covidsite.outages import DatabaseOutageMiddleware

    connection.ensure_connection()  # the view's query opened it
    middleware = DatabaseOutageMiddleware(lambda request: None)
    # A connection that still answers: "no such table" or a lock timeout is a bug or a conflict, not an outage.
    assert middleware.process_exception(rf.get("/api/patients/"), OperationalError("no such table: x")) is None
    assert middleware.process_exception(rf.get("/api/patients/"), IntegrityError("duplicate key")) is None

    monkeypatch.setattr(connection, "is_usable", lambda: False)  # the server went away
    page = middleware.process_exception(rf.get("/patients/"), InterfaceError("connection already closed"))
    api = middleware.process_exception(rf.get("/api/patients/"), OperationalError("server closed the connection"))

    assert (page.status_code, page["Content-Type"]) == (503, "text/plain")
    assert page.content.decode().startswith("Service unavailable: the database cannot be reached right now")
    assert (api.status_code, api["Content-Type"]) == (503, "application/json")
    assert middleware.process_exception(rf.get("/api/patients/"), IntegrityError("duplicate key")) is None
