"""Queueing and retrying analysis runs (the web side of the run life cycle)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from analysis.choices import RunStatus
from analysis.execute import execute_run
from analysis.models import AnalysisRun, RegionMeasurement
from analysis.pipeline.run import run_pipeline
from analysis.pipeline.version import PIPELINE_VERSION
from analysis.runs import STALE_AFTER, NotRetryable, is_stale, queue_analysis, retry_run
from patients.signals import series_ready


def test_queueing_creates_one_run_per_series_and_pipeline_version(phantom_series, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        first = queue_analysis(phantom_series)
        second = queue_analysis(phantom_series)

    assert first.pk == second.pk
    assert AnalysisRun.objects.filter(series=phantom_series).count() == 1
    run = AnalysisRun.objects.get(series=phantom_series)
    assert (run.pipeline_version, run.status, run.progress, run.attempts) == (PIPELINE_VERSION, RunStatus.QUEUED, 0, 0)
    # Nothing is sent before the transaction commits: one hand-over per queueing, after commit.
    assert len(callbacks) == 2


def test_a_ready_series_signal_queues_its_analysis(phantom_series, django_capture_on_commit_callbacks):
    assert not AnalysisRun.objects.filter(series=phantom_series).exists()  # ingest's signal waits for its commit
    with django_capture_on_commit_callbacks(execute=False):
        series_ready.send(sender=type(phantom_series), series=phantom_series)
    assert AnalysisRun.objects.get(series=phantom_series).status == RunStatus.QUEUED


def test_requeueing_a_finished_run_clears_its_results_and_claim(phantom_series):
    run = queue_analysis(phantom_series)
    execute_run(run.pk, pipeline=run_pipeline, task_id="task-1")
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert run.poi is not None
    assert run.lungs_file

    again = queue_analysis(phantom_series)

    again.refresh_from_db()
    assert (again.status, again.claim, again.poi, again.lungs_file, again.slice_metrics, again.finished) == (
        RunStatus.QUEUED,
        "",
        None,
        "",
        [],
        None,
    )
    assert not RegionMeasurement.objects.filter(run=run).exists()
    assert again.attempts == 1


def test_a_failed_run_can_be_retried(no_lung_series):
    run = queue_analysis(no_lung_series)
    execute_run(run.pk, pipeline=run_pipeline)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED

    retried = retry_run(run)

    assert (retried.status, retried.error, retried.traceback, retried.finished) == (RunStatus.QUEUED, "", "", None)
    assert AnalysisRun.objects.get(pk=run.pk).status == RunStatus.QUEUED


def test_a_succeeded_or_queued_run_cannot_be_retried(phantom_series):
    run = queue_analysis(phantom_series)
    with pytest.raises(NotRetryable, match=f"analysis {run.pk} is queued: only failed or abandoned"):
        retry_run(run)
    execute_run(run.pk, pipeline=run_pipeline)
    with pytest.raises(NotRetryable, match="is succeeded"):
        retry_run(run)
    assert AnalysisRun.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED


def test_only_an_abandoned_running_run_can_be_retried(phantom_series):
    run = queue_analysis(phantom_series)
    recent = timezone.now() - timedelta(minutes=1)
    AnalysisRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, heartbeat=recent, claim="task-a")
    run.refresh_from_db()
    assert not is_stale(run)
    with pytest.raises(NotRetryable, match="is running"):
        retry_run(run)

    AnalysisRun.objects.filter(pk=run.pk).update(heartbeat=timezone.now() - STALE_AFTER - timedelta(seconds=1))
    run.refresh_from_db()
    assert is_stale(run)
    retried = retry_run(run)
    assert (retried.status, retried.claim, retried.heartbeat) == (RunStatus.QUEUED, "", None)
