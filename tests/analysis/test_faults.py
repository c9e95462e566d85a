"""Analyses under faults: the broker down during uploads, a full disk while storing results, an unreadable slice.

Broker tests use the real Redis on 127.0.0.1:6379 (skipped with the reason when it is not there),
reached through a loopback relay that the test takes down and brings back, the way an outage looks
to the web server. They use their own Redis database and queue, so they never see other messages.
The worker killed mid-analysis is covered by test_worker.py and test_tasks.py.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from celery.contrib.testing.worker import start_worker
from django.core.management import call_command
from django.core.management.base import CommandError

from analysis import storage
from analysis.choices import RunStatus
from analysis.execute import _segmenters, execute_run
from analysis.models import AnalysisRun, RegionMeasurement
from analysis.pipeline.result import REGIONS
from analysis.pipeline.run import run_pipeline
from analysis.runs import UNSENT_NOTE, queue_analysis, resend_unsent, retry_run, unsent_note, unsent_runs
from covidsite.celery import app
from patients.choices import SeriesStatus
from patients.models import Instance, Upload

from .conftest import ingest_volume, small_phantom

REDIS = ("127.0.0.1", 6379)
REDIS_DB = 13  # not the default 0 the other broker tests use


class BrokerRelay:
    """A loopback TCP relay in front of Redis that can be taken down (connections cut, port closed) and back up."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/{REDIS_DB}"

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        if self._listener is not None:
            _close(self._listener)
            self._listener = None
        with self._lock:
            for sock in self._open:
                _close(sock)
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # taken down
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in accept() or recv()
    sock.close()


def _use_broker(url: str, options: dict) -> None:
    app.conf.broker_url = url
    app.conf.broker_transport_options = options
    # Connection and producer pools are built once from the URL: drop them so the next send uses the new one.
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture
def relay(settings, monkeypatch):
    """The app's broker is Redis behind a relay (up); the analysis queue is private to the test."""
    # Celery reads the broker URL from the CELERY_BROKER_URL environment variable before its own
    # configuration (CI sets it): take it away so the relay's URL is the one used.
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    try:
        socket.create_connection(REDIS, timeout=1).close()
    except OSError:
        pytest.skip(f"Redis is not reachable on {REDIS[0]}:{REDIS[1]}: the broker fault tests need a real broker")
    relay = BrokerRelay(REDIS)
    relay.up()
    saved = (app.conf.broker_url, app.conf.broker_transport_options)
    settings.CELERY_ANALYSIS_QUEUE = f"faults-{uuid.uuid4().hex[:8]}"
    _use_broker(relay.url, {"max_retries": 1})
    yield relay
    relay.down()
    _use_broker(*saved)
    redis_db().delete(settings.CELERY_ANALYSIS_QUEUE)


def redis_db():
    import redis

    return redis.Redis(host=REDIS[0], port=REDIS[1], db=REDIS_DB)


def queued_messages(queue: str) -> int:
    """Messages waiting in `queue` (read from Redis itself: kombu keeps a queue as a list named after it)."""
    return redis_db().llen(queue)


def wait_until_finished(run_id: int, timeout: float = 60.0) -> AnalysisRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = AnalysisRun.objects.get(pk=run_id)
        if run.status in (RunStatus.SUCCEEDED, RunStatus.FAILED):
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} still {run.status} ({run.stage} {run.progress}%) after {timeout:.0f} s")


# --- broker down ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_uploads_land_while_the_broker_is_down_and_their_analyses_run_once_when_a_worker_reconnects(
    relay, team_a, tmp_path, settings
):
    settings.MODEL_DIR = tmp_path / "no-weights"  # classical methods: fast
    _segmenters.cache_clear()
    relay.down()

    series = ingest_volume(team_a, tmp_path / "scan", small_phantom().volume, patient_id="PH-OUTAGE")

    # The upload landed: series stored and READY, its run queued with a note saying why it waits.
    assert series.status == SeriesStatus.READY
    assert Upload.objects.get().accepted_count == series.slice_count == Instance.objects.count()
    run = AnalysisRun.objects.get(series=series)
    assert run.status == RunStatus.QUEUED
    assert run.error.startswith(f"{UNSENT_NOTE}, which could not be reached (")
    assert run.error.endswith("the analysis starts when the queue is back")
    assert list(unsent_runs()) == [run]

    relay.up()
    # A worker connecting to the broker sends what waited, then analyses it: exactly once.
    with start_worker(app, pool="solo", perform_ping_check=False, queues=[settings.CELERY_ANALYSIS_QUEUE]):
        run = wait_until_finished(run.pk)
    _segmenters.cache_clear()

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert (run.attempts, run.progress, run.error) == (1, 100, "")
    assert RegionMeasurement.objects.filter(run=run).count() == len(REGIONS)
    assert not unsent_runs().exists()
    assert queued_messages(settings.CELERY_ANALYSIS_QUEUE) == 0


@pytest.mark.django_db(transaction=True)
def test_waiting_runs_are_sent_once_by_the_next_successful_send_and_never_twice(relay, team_a, tmp_path, settings):
    relay.down()
    first = ingest_volume(team_a, tmp_path / "one", small_phantom().volume, patient_id="PH-WAIT-1")
    second = ingest_volume(team_a, tmp_path / "two", small_phantom().volume, patient_id="PH-WAIT-2")
    assert unsent_runs().count() == 2

    assert resend_unsent() == 0  # still down: nothing sent, nothing lost, the notes stay
    assert unsent_runs().count() == 2
    with pytest.raises(CommandError, match="the task queue is still unreachable: nothing was sent"):
        call_command("resend_analyses")

    relay.up()
    third = ingest_volume(team_a, tmp_path / "three", small_phantom().volume, patient_id="PH-WAIT-3")

    # The third run's send succeeded, and it took the two waiting ones along: one message per run.
    assert not unsent_runs().exists()
    assert queued_messages(settings.CELERY_ANALYSIS_QUEUE) == 3
    assert resend_unsent() == 0
    assert queued_messages(settings.CELERY_ANALYSIS_QUEUE) == 3
    statuses = AnalysisRun.objects.filter(series__in=[first, second, third]).values_list("status", "error")
    assert sorted(statuses) == [(RunStatus.QUEUED, "")] * 3


@pytest.mark.django_db(transaction=True)
def test_the_resend_command_sends_what_waits_and_says_how_many(relay, team_a, tmp_path, settings, capsys):
    relay.down()
    ingest_volume(team_a, tmp_path / "one", small_phantom().volume, patient_id="PH-CMD")
    relay.up()

    call_command("resend_analyses")

    assert capsys.readouterr().out == "1 analysis run(s) sent, 0 still waiting for the task queue\n"
    assert queued_messages(settings.CELERY_ANALYSIS_QUEUE) == 1


@pytest.mark.django_db(transaction=True)
def test_with_a_gpu_queue_configured_analyses_go_there_and_a_worker_on_it_runs_them(relay, team_a, tmp_path, settings):
    settings.CELERY_ANALYSIS_QUEUE = gpu = f"gpu-{uuid.uuid4().hex[:8]}"
    settings.MODEL_DIR = tmp_path / "no-weights"
    _segmenters.cache_clear()

    series = ingest_volume(team_a, tmp_path / "scan", small_phantom().volume, patient_id="PH-GPU")

    assert (queued_messages(gpu), queued_messages("celery")) == (1, 0)
    with start_worker(app, pool="solo", perform_ping_check=False, queues=[gpu]):
        run = wait_until_finished(AnalysisRun.objects.get(series=series).pk)
    _segmenters.cache_clear()
    assert (run.status, run.attempts) == (RunStatus.SUCCEEDED, 1), run.error
    assert queued_messages(gpu) == 0


# --- disk full -----------------------------------------------------------------------------------


def test_a_full_disk_while_storing_label_maps_fails_the_run_readably_and_loses_nothing_else(
    phantom_series, team_a, tmp_path, settings, monkeypatch
):
    other = ingest_volume(team_a, tmp_path / "other", small_phantom().volume, patient_id="PH-OTHER")
    done = queue_analysis(other)
    execute_run(done.pk, pipeline=run_pipeline, task_id="task-other")
    done.refresh_from_db()
    media = Path(settings.MEDIA_ROOT)
    files_before = {p: p.read_bytes() for p in media.rglob("*") if p.is_file()}
    real_savez = np.savez_compressed

    def disk_full(stream, **arrays):
        stream.write(b"PK\x03\x04 partial")  # what fitted before the disk filled up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage.np, "savez_compressed", disk_full)
    run = queue_analysis(phantom_series)
    execute_run(run.pk, pipeline=run_pipeline, task_id="task-full")
    monkeypatch.setattr(storage.np, "savez_compressed", real_savez)

    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.error == "the results could not be stored: the server's disk is full; retry once space is freed"
    assert "No space left on device" in run.traceback
    assert (run.lungs_file, run.poi, RegionMeasurement.objects.filter(run=run).count()) == ("", None, 0)
    # No partial file is left, and nothing stored before (the scans, the other run's results) changed.
    files_after = {p: p.read_bytes() for p in media.rglob("*") if p.is_file()}
    assert files_after == files_before
    done.refresh_from_db()
    assert (done.status, RegionMeasurement.objects.filter(run=done).count()) == (RunStatus.SUCCEEDED, len(REGIONS))
    assert storage.load_label_map(done.lungs_file).shape == small_phantom().volume.shape

    # Space freed: the retry stores everything once.
    retry_run(run)
    execute_run(run.pk, pipeline=run_pipeline, task_id="task-retry")
    run.refresh_from_db()
    assert (run.status, run.attempts, run.error) == (RunStatus.SUCCEEDED, 2, "")
    assert RegionMeasurement.objects.filter(run=run).count() == len(REGIONS)
    assert storage.load_label_map(run.infection_file).shape == small_phantom().volume.shape


# --- unreadable stored slice ---------------------------------------------------------------------


def test_an_unreadable_stored_slice_fails_that_run_with_its_name_and_other_runs_still_succeed(
    phantom_series, team_a, tmp_path, settings
):
    other = ingest_volume(team_a, tmp_path / "other", small_phantom().volume, patient_id="PH-OTHER")
    broken = phantom_series.instances.order_by("index")[3]
    (Path(settings.MEDIA_ROOT) / broken.file).write_bytes(b"\x00garbage where a slice was" * 20)

    run = queue_analysis(phantom_series)
    good = queue_analysis(other)
    execute_run(run.pk, pipeline=run_pipeline, task_id="task-broken")
    execute_run(good.pk, pipeline=run_pipeline, task_id="task-good")

    run.refresh_from_db()
    good.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.error.startswith(f"{Path(broken.file).name} is not a readable DICOM file")
    assert good.status == RunStatus.SUCCEEDED, good.error
    assert Instance.objects.filter(series=phantom_series).count() == phantom_series.slice_count


def test_the_patient_page_says_why_an_unsent_analysis_has_not_started(phantom_series, clinician, client):
    run = queue_analysis(phantom_series)
    AnalysisRun.objects.filter(pk=run.pk).update(error=unsent_note(ConnectionRefusedError("Connection refused")))
    client.force_login(clinician)

    page = client.get(f"/patients/{phantom_series.study.patient_id}/").content.decode()

    assert "waiting for the task queue, which could not be reached (Connection refused); the analysis starts" in page
