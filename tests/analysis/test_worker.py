"""A real Celery worker (in a thread) on the configured broker analyses what ingest hands over.

The broker is whatever CELERY_BROKER_URL names: Redis in CI, the filesystem transport by default.
These tests commit for real (transaction=True), because the worker reads the rows from its own
database connection, as a worker process would.
"""

from __future__ import annotations

import time
import uuid

import pytest
from celery.contrib.testing.worker import start_worker
from django.conf import settings

from analysis.choices import RunStatus
from analysis.execute import _segmenters
from analysis.models import AnalysisRun, RegionMeasurement
from analysis.pipeline.errors import NO_LUNGS_MESSAGE
from analysis.pipeline.result import REGIONS
from analysis.runs import retry_run
from analysis.tasks import analyse_series
from covidsite.celery import app

from .conftest import ingest_volume, no_lung_volume, small_phantom

pytestmark = pytest.mark.django_db(transaction=True)

FINISHED = (RunStatus.SUCCEEDED, RunStatus.FAILED)


@pytest.fixture
def worker(settings, tmp_path):
    """A solo-pool worker thread consuming the analysis queue; weights from an empty folder (classical methods)."""
    settings.MODEL_DIR = tmp_path / "no-weights"
    _segmenters.cache_clear()
    app.control.purge()  # messages left by an earlier, interrupted run name rows that no longer exist
    with start_worker(
        app, pool="solo", perform_ping_check=False, queues=[settings.CELERY_ANALYSIS_QUEUE], shutdown_timeout=30
    ) as controller:
        yield controller
    _segmenters.cache_clear()


def wait_until_finished(run_id: int, timeout: float = 60.0) -> AnalysisRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = AnalysisRun.objects.get(pk=run_id)
        if run.status in FINISHED:
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} still {run.status} ({run.stage} {run.progress}%) after {timeout:.0f} s")


def test_an_ingested_series_is_analysed_by_the_worker_with_poi_close_to_the_truth(worker, team_a, tmp_path):
    phantom = small_phantom()

    # Ingest commits, sends series_ready, the receiver queues the run and the broker delivers it.
    series = ingest_volume(team_a, tmp_path / "scan", phantom.volume, patient_id="PH-CHAIN")

    run = wait_until_finished(AnalysisRun.objects.get(series=series).pk)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert (run.progress, run.attempts) == (100, 1)
    assert run.claim  # the delivering task's id
    assert run.lung_volume_ml == pytest.approx(phantom.truth.lung_volume_ml, rel=0.05)
    assert run.poi == pytest.approx(phantom.truth.poi, abs=0.03)
    assert RegionMeasurement.objects.filter(run=run).count() == len(REGIONS)
    # MODEL_DIR holds no weights: the classical methods ran, and the run says so.
    assert [m["stage"] for m in run.models_used][:2] == ["lungs", "infection"]
    assert all(m["kind"] != "network" for m in run.models_used)


def test_a_redelivered_task_of_a_killed_worker_redoes_the_run_and_a_duplicate_does_not(worker, team_a, tmp_path):
    series = ingest_volume(team_a, tmp_path / "scan", small_phantom().volume, patient_id="PH-KILLED")
    run = wait_until_finished(AnalysisRun.objects.get(series=series).pk)
    # The state a worker leaves behind when it is killed mid-analysis of its message `lost`.
    lost = str(uuid.uuid4())
    AnalysisRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, claim=lost, stage="lungs", progress=25)

    analyse_series.apply_async((run.pk,), task_id=str(uuid.uuid4()), queue=settings.CELERY_ANALYSIS_QUEUE)
    analyse_series.apply_async((run.pk,), task_id=lost, queue=settings.CELERY_ANALYSIS_QUEUE)  # the redelivery

    run = wait_until_finished(run.pk)
    assert (run.status, run.claim, run.progress) == (RunStatus.SUCCEEDED, lost, 100)
    # Claimed by the chain's task and by the redelivery; the duplicate found the run taken and left it.
    assert run.attempts == 2
    assert RegionMeasurement.objects.filter(run=run).count() == len(REGIONS)


def test_a_failing_analysis_leaves_the_worker_running_for_the_next_one(worker, team_a, tmp_path):
    failing = ingest_volume(team_a, tmp_path / "nolungs", no_lung_volume(), patient_id="NL-WORKER")
    good = ingest_volume(team_a, tmp_path / "scan", small_phantom().volume, patient_id="PH-NEXT")

    failed = wait_until_finished(AnalysisRun.objects.get(series=failing).pk)
    succeeded = wait_until_finished(AnalysisRun.objects.get(series=good).pk)

    assert (failed.status, failed.error) == (RunStatus.FAILED, NO_LUNGS_MESSAGE)
    assert "PipelineError" in failed.traceback
    assert succeeded.status == RunStatus.SUCCEEDED, succeeded.error

    # The failed run is retried through the broker: the cause is still there, so it fails the same way.
    retried = retry_run(failed)
    assert retried.status == RunStatus.QUEUED
    again = wait_until_finished(retried.pk)
    assert (again.status, again.error, again.attempts) == (RunStatus.FAILED, NO_LUNGS_MESSAGE, 2)
