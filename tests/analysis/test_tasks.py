"""execute_run: atomic claim, takeover of a dead worker's run, storing results, readable failures.

These call `analysis.execute.execute_run` directly with the real pipeline on a phantom series
stored through ingest; the Celery worker itself is exercised in test_worker.py.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from analysis.choices import RunStatus
from analysis.execute import (
    ClaimLost,
    _ProgressRecorder,
    _segmenters,
    claim_run,
    execute_run,
    failure_message,
    load_series_volume,
    store_result,
)
from analysis.models import AnalysisRun, Opacity, RegionMeasurement
from analysis.pipeline.errors import NO_LUNGS_MESSAGE, PipelineError
from analysis.pipeline.result import REGIONS
from analysis.pipeline.run import run_pipeline
from analysis.pipeline.volume import VolumeError, load_dicom_series
from analysis.runs import STALE_AFTER, queue_analysis, retry_run
from analysis.storage import LabelMapError, load_label_map, save_label_map
from tests.conftest import ctdata_path

from .conftest import small_phantom


class CountingPipeline:
    """The real pipeline, counting its calls (and optionally doing something in the middle of one)."""

    def __init__(self, during=None) -> None:
        self.calls = 0
        self.during = during

    def __call__(self, volume, *, progress=None):
        self.calls += 1
        result = run_pipeline(volume, progress=progress)
        if self.during is not None:
            self.during()
        return result


def running(run: AnalysisRun, *, claim: str, heartbeat_age: timedelta = timedelta(0), attempts: int = 1) -> None:
    """Put `run` in the state a worker leaves it in when it dies mid-analysis."""
    stamp = timezone.now() - heartbeat_age
    AnalysisRun.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING, claim=claim, attempts=attempts, started=stamp, heartbeat=stamp, stage="lungs"
    )


# --- claiming ------------------------------------------------------------------------------------


def test_a_run_executed_twice_runs_the_pipeline_once(phantom_series):
    run = queue_analysis(phantom_series)
    pipeline = CountingPipeline()

    execute_run(run.pk, pipeline=pipeline, task_id="task-1")
    execute_run(run.pk, pipeline=pipeline, task_id="task-2")

    run.refresh_from_db()
    assert pipeline.calls == 1
    assert (run.status, run.attempts, run.progress) == (RunStatus.SUCCEEDED, 1, 100)


def test_a_duplicate_task_leaves_a_live_running_run_alone(phantom_series):
    run = queue_analysis(phantom_series)
    running(run, claim="task-a", heartbeat_age=timedelta(seconds=5))
    pipeline = CountingPipeline()

    execute_run(run.pk, pipeline=pipeline, task_id="task-b")

    run.refresh_from_db()
    assert pipeline.calls == 0
    assert (run.status, run.claim, run.attempts) == (RunStatus.RUNNING, "task-a", 1)


def test_a_killed_workers_run_is_redone_when_its_task_is_redelivered(phantom_series):
    run = queue_analysis(phantom_series)
    running(run, claim="task-a", heartbeat_age=timedelta(seconds=5))
    pipeline = CountingPipeline()

    execute_run(run.pk, pipeline=pipeline, task_id="task-a")

    run.refresh_from_db()
    assert pipeline.calls == 1
    assert (run.status, run.attempts) == (RunStatus.SUCCEEDED, 2)
    assert RegionMeasurement.objects.filter(run=run).count() == len(REGIONS)


def test_a_run_abandoned_longer_than_the_stale_timeout_is_taken_over_by_any_task(phantom_series):
    run = queue_analysis(phantom_series)
    running(run, claim="task-lost", heartbeat_age=STALE_AFTER + timedelta(minutes=1))

    execute_run(run.pk, pipeline=run_pipeline, task_id="task-new")

    run.refresh_from_db()
    assert (run.status, run.attempts, run.claim) == (RunStatus.SUCCEEDED, 2, "task-new")


def test_an_attempt_that_lost_its_claim_mid_analysis_stores_nothing(phantom_series):
    run = queue_analysis(phantom_series)
    # While the first attempt computes, its message is redelivered and another worker claims the run.
    pipeline = CountingPipeline(during=lambda: claim_run(run.pk, task_id="task-1"))

    execute_run(run.pk, pipeline=pipeline, task_id="task-1")

    run.refresh_from_db()
    assert (run.status, run.attempts, run.poi) == (RunStatus.RUNNING, 2, None)
    assert not RegionMeasurement.objects.filter(run=run).exists()
    assert not (Path(settings.MEDIA_ROOT) / "analysis" / str(run.pk)).exists()


def test_storing_refuses_an_attempt_whose_claim_was_taken_over(phantom_series):
    run = queue_analysis(phantom_series)
    old = claim_run(run.pk, task_id="task-1")
    new = claim_run(run.pk, task_id="task-1")  # the redelivered message, while the old worker still runs
    volume = load_series_volume(phantom_series)
    result = run_pipeline(volume)

    with pytest.raises(ClaimLost):
        store_result(run, old, result, volume)

    assert (old, new) == (1, 2)
    assert not RegionMeasurement.objects.filter(run=run).exists()
    assert list((Path(settings.MEDIA_ROOT) / "analysis" / str(run.pk)).iterdir()) == []  # staged files discarded
    store_result(run, new, result, volume)
    assert AnalysisRun.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED
    assert sorted(p.name for p in (Path(settings.MEDIA_ROOT) / "analysis" / str(run.pk)).iterdir()) == [
        "infection.npz",
        "lungs.npz",
    ]


def test_an_unknown_run_id_is_ignored(db):
    pipeline = CountingPipeline()
    execute_run(987654, pipeline=pipeline)
    assert pipeline.calls == 0


# --- results ---------------------------------------------------------------------------------------


def test_stored_results_equal_what_the_pipeline_computed(phantom_series):
    run = queue_analysis(phantom_series)
    instances = list(phantom_series.instances.order_by("index"))
    expected = run_pipeline(load_dicom_series([Path(settings.MEDIA_ROOT) / i.file for i in instances]))

    execute_run(run.pk, pipeline=run_pipeline)

    run.refresh_from_db()
    both = expected.region("both")
    assert (run.status, run.error) == (RunStatus.SUCCEEDED, "")
    assert run.finished is not None
    assert (run.lung_volume_ml, run.infection_volume_ml, run.poi, run.ihu) == (
        both.lung_volume_ml,
        both.infection_volume_ml,
        both.poi,
        both.ihu,
    )
    assert (run.ggo_volume_ml, run.consolidation_volume_ml) == (both.ggo_volume_ml, both.consolidation_volume_ml)
    assert run.ct_severity_score == expected.ct_severity_score
    stored = {m.region: m for m in RegionMeasurement.objects.filter(run=run)}
    assert set(stored) == set(REGIONS)
    for region in expected.regions:
        row = stored[region.region]
        assert (row.lung_volume_ml, row.infection_volume_ml, row.poi, row.ihu, row.severity_score) == (
            region.lung_volume_ml,
            region.infection_volume_ml,
            region.poi,
            region.ihu,
            region.severity_score,
        )
    opacities = sorted(Opacity.objects.filter(run=run), key=lambda o: o.index)
    assert [(o.index, o.kind, o.volume_ml, o.zone) for o in opacities] == [
        (o.index, o.kind, o.volume_ml, o.zone) for o in expected.opacities
    ]
    assert opacities[0].centroid_mm == list(expected.opacities[0].centroid_mm)
    # One slice entry per image, carrying that image's SOP instance UID, for curves and viewer links.
    assert [s["sop_instance_uid"] for s in run.slice_metrics] == [i.sop_instance_uid for i in instances]
    assert [s["infection_area_mm2"] for s in run.slice_metrics] == [s.infection_area_mm2 for s in expected.slices]
    assert [m["stage"] for m in run.models_used] == [m.stage for m in expected.models]
    assert run.warnings == expected.warnings
    assert set(run.timings) >= {"load", "lungs", "infection", "measure", "opacities"}
    assert run.lungs_file == f"analysis/{run.pk}/lungs.npz"
    np.testing.assert_array_equal(load_label_map(run.lungs_file), expected.lungs)
    np.testing.assert_array_equal(load_label_map(run.infection_file), expected.infection)


def test_the_stored_poi_is_close_to_the_phantoms_truth(phantom_series):
    run = queue_analysis(phantom_series)
    execute_run(run.pk, pipeline=run_pipeline)
    run.refresh_from_db()
    truth = small_phantom().truth
    assert run.lung_volume_ml == pytest.approx(truth.lung_volume_ml, rel=0.05)
    assert run.poi == pytest.approx(truth.poi, abs=0.03)


def test_rerunning_a_series_replaces_its_results_without_duplicates(phantom_series):
    run = queue_analysis(phantom_series)
    execute_run(run.pk, pipeline=run_pipeline)
    first = (RegionMeasurement.objects.filter(run=run).count(), Opacity.objects.filter(run=run).count())
    first_poi = AnalysisRun.objects.get(pk=run.pk).poi

    again = queue_analysis(phantom_series)
    assert again.pk == run.pk
    # Queued again: the old results are gone until the new attempt stores its own.
    assert (again.status, again.poi, RegionMeasurement.objects.filter(run=run).count()) == (RunStatus.QUEUED, None, 0)
    execute_run(run.pk, pipeline=run_pipeline)

    run.refresh_from_db()
    assert AnalysisRun.objects.filter(series=phantom_series).count() == 1
    assert (RegionMeasurement.objects.filter(run=run).count(), Opacity.objects.filter(run=run).count()) == first
    assert first[0] == len(REGIONS)
    assert first[1] > 0
    # Attempts keep counting across re-queues: the attempt number is what tells an old worker its claim is gone.
    assert (run.status, run.poi, run.attempts) == (RunStatus.SUCCEEDED, first_poi, 2)


def test_a_nifti_series_is_analysed_from_its_volume_file(team_a, tmp_path):
    import SimpleITK as sitk

    from patients.ingest import ingest_paths
    from patients.models import Series

    volume = small_phantom().volume
    image = sitk.GetImageFromArray(volume.hu)
    image.SetSpacing(tuple(reversed(volume.spacing)))
    path = tmp_path / "phantom.nii.gz"
    sitk.WriteImage(image, str(path))
    upload = ingest_paths(team_a, [path], patient_identifier="NIFTI-1")
    series = Series.objects.get(pk=upload.report["series"][0]["id"])

    run = queue_analysis(series)
    execute_run(run.pk, pipeline=run_pipeline)

    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.poi == pytest.approx(small_phantom().truth.poi, abs=0.03)
    assert all(s["sop_instance_uid"] is None for s in run.slice_metrics)


# --- failures ------------------------------------------------------------------------------------


def test_a_scan_without_lungs_fails_with_the_pipelines_message(no_lung_series):
    run = queue_analysis(no_lung_series)

    execute_run(run.pk, pipeline=run_pipeline)

    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.error == NO_LUNGS_MESSAGE
    assert "PipelineError" in run.traceback
    assert run.finished is not None
    assert run.progress < 100
    assert not RegionMeasurement.objects.filter(run=run).exists()


@pytest.mark.realdata
def test_a_real_abdomen_series_fails_with_a_message_that_it_is_not_a_chest_ct(team_a):
    from patients.ingest import ingest_paths
    from patients.models import Series

    folder = ctdata_path("dicom-variety", "abdomen-jpeg2000-series")
    upload = ingest_paths(team_a, [folder], patient_identifier="ABDOMEN-1")  # the files carry no PatientID
    series = Series.objects.get(pk=upload.report["series"][0]["id"])
    run = queue_analysis(series)

    execute_run(run.pk, pipeline=run_pipeline)

    run.refresh_from_db()
    assert series.slice_count == 20
    assert (run.status, run.error) == (RunStatus.FAILED, NO_LUNGS_MESSAGE)


def test_missing_image_files_fail_readably_and_a_retry_after_restoring_them_succeeds(phantom_series):
    run = queue_analysis(phantom_series)
    instance = phantom_series.instances.order_by("index")[3]
    stored = Path(settings.MEDIA_ROOT) / instance.file
    kept = stored.read_bytes()
    stored.unlink()

    execute_run(run.pk, pipeline=run_pipeline)

    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.error == f"1 of the 27 stored images are missing (first: {instance.file})"
    assert "VolumeError" in run.traceback

    stored.write_bytes(kept)
    retried = retry_run(run)
    assert (retried.status, retried.error, retried.traceback) == (RunStatus.QUEUED, "", "")
    execute_run(run.pk, pipeline=run_pipeline)

    run.refresh_from_db()
    assert (run.status, run.attempts, run.error) == (RunStatus.SUCCEEDED, 2, "")


def test_an_unexpected_error_is_recorded_with_its_stage_and_does_not_escape(phantom_series):
    run = queue_analysis(phantom_series)

    def broken(volume, *, progress=None):
        progress("infection", 40)
        raise ZeroDivisionError("division by zero")

    execute_run(run.pk, pipeline=broken)

    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.error == (
        "the analysis stopped on an unexpected error at the infection stage (ZeroDivisionError: division by zero)"
    )
    assert 'raise ZeroDivisionError("division by zero")' in run.traceback


def test_a_damaged_weight_file_fails_the_run_instead_of_falling_back_silently(phantom_series, settings, tmp_path):
    from analysis.nets.architectures import LUNG_MODEL

    settings.MODEL_DIR = tmp_path / "weights"
    settings.MODEL_DIR.mkdir()
    (settings.MODEL_DIR / f"{LUNG_MODEL}.json").write_text("{not json")
    _segmenters.cache_clear()
    run = queue_analysis(phantom_series)

    execute_run(run.pk)  # the default pipeline: trained networks from MODEL_DIR

    _segmenters.cache_clear()
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.error.startswith(f"the trained models cannot be used: {LUNG_MODEL}.json is not valid JSON")


def test_label_maps_of_the_wrong_shape_fail_the_run(phantom_series):
    run = queue_analysis(phantom_series)

    def wrong_grid(volume, *, progress=None):
        result = run_pipeline(volume, progress=progress)
        result.lungs = result.lungs[:, ::2, ::2]
        return result

    execute_run(run.pk, pipeline=wrong_grid)

    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.error == (
        "the pipeline returned label maps of shape (27, 64, 64)/(27, 128, 128) for a volume of shape (27, 128, 128)"
    )


def test_failure_messages_keep_input_errors_and_summarise_the_rest():
    assert failure_message(VolumeError("modality MR: only CT series can be analysed")) == (
        "modality MR: only CT series can be analysed"
    )
    assert failure_message(PipelineError(NO_LUNGS_MESSAGE), stage="lungs") == NO_LUNGS_MESSAGE
    assert failure_message(MemoryError(), stage="lungs") == (
        "the analysis stopped on an unexpected error at the lungs stage (MemoryError: no details)"
    )


# --- progress ------------------------------------------------------------------------------------


def test_progress_is_visible_on_the_run_while_the_pipeline_works(phantom_series):
    run = queue_analysis(phantom_series)
    seen = []

    def slow(volume, *, progress=None):
        time.sleep(0.3)  # past the write interval since the "load" write
        progress("infection", 50)
        seen.append(AnalysisRun.objects.values_list("status", "stage", "progress").get(pk=run.pk))
        return run_pipeline(volume)

    execute_run(run.pk, pipeline=slow)

    assert seen == [(RunStatus.RUNNING, "infection", 50)]
    assert AnalysisRun.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED


def test_progress_writes_are_throttled(phantom_series):
    run = queue_analysis(phantom_series)
    attempt = claim_run(run.pk)
    recorder = _ProgressRecorder(run.pk, attempt, interval=0.25)

    started = time.monotonic()
    with CaptureQueriesContext(connection) as queries:
        for step in range(2000):
            recorder("lungs", step // 20)
    elapsed = time.monotonic() - started

    # One write to start with, then at most one per interval.
    assert 1 <= len(queries) <= 1 + elapsed / 0.25
    assert AnalysisRun.objects.get(pk=run.pk).stage == "lungs"


# --- label map storage ---------------------------------------------------------------------------


def test_label_maps_round_trip_compressed_and_leave_no_temporary_files(phantom_series):
    run = queue_analysis(phantom_series)
    labels = np.zeros((27, 128, 128), dtype=np.uint8)
    labels[5:20, 30:60, 20:50] = 1
    labels[5:20, 30:60, 70:100] = 2

    path = save_label_map(run, "lungs", labels)

    folder = Path(settings.MEDIA_ROOT) / "analysis" / str(run.pk)
    assert path == f"analysis/{run.pk}/lungs.npz"
    assert [p.name for p in folder.iterdir()] == ["lungs.npz"]
    assert (folder / "lungs.npz").stat().st_size < labels.nbytes / 20
    loaded = load_label_map(path)
    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, labels)


def test_label_map_storage_refuses_bad_input(phantom_series):
    run = queue_analysis(phantom_series)
    with pytest.raises(LabelMapError, match="must be 3-D"):
        save_label_map(run, "lungs", np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(LabelMapError, match=r"0\.\.255"):
        save_label_map(run, "lungs", np.full((2, 2, 2), 300))
    with pytest.raises(LabelMapError, match="integer labels"):
        save_label_map(run, "lungs", np.zeros((2, 2, 2), dtype=np.float32))
    with pytest.raises(LabelMapError, match="name must be"):
        save_label_map(run, "../lungs", np.zeros((2, 2, 2), dtype=np.uint8))
    with pytest.raises(LabelMapError, match="outside the media folder"):
        load_label_map("../../etc/passwd")
    with pytest.raises(LabelMapError, match="is missing"):
        load_label_map(f"analysis/{run.pk}/infection.npz")
