"""The worker side of an AnalysisRun: claim it, load the series, run the pipeline, store or fail.

`execute_run` is the one routine every analysis goes through (the Celery task calls it with its own
task id). It never raises for a bad scan or a pipeline error: the run ends FAILED with a message a
clinician can read and the traceback for the administrators.

Claiming. A run is claimed with one conditional UPDATE, so of two deliveries only one wins:

* a QUEUED run can be claimed by anyone;
* a RUNNING run can be claimed again by the *same* task id: tasks are acknowledged late, so when a
  worker dies mid-analysis the broker redelivers that very message (same id) and the run is redone
  at once. A duplicated task (another id) finds the run RUNNING and leaves it alone;
* a RUNNING run whose heartbeat is older than `runs.STALE_AFTER` is abandoned and anyone may take it
  (covers a message that was lost, e.g. with a broker that cannot redeliver).

Each claim bumps `attempts`; every later write (progress, results, failure) is conditional on that
attempt number and on the run still being RUNNING. A worker that lost its claim (the run was
re-queued, or a redelivery took it over) therefore stops at its next write instead of overwriting
the newer attempt. A task id alone could not tell the two holders of a redelivered message apart;
the attempt number can.
"""

from __future__ import annotations

import errno
import functools
import logging
import time
import traceback as tb
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from patients.choices import SeriesSource, SeriesStatus
from patients.models import Series

from .choices import RunStatus
from .models import AnalysisRun, Opacity, RegionMeasurement
from .pipeline.errors import PipelineError
from .pipeline.result import PipelineResult
from .pipeline.volume import CTVolume, VolumeError, load_dicom_series, load_nifti
from .runs import stale_condition
from .storage import StagedLabelMap, stage_label_map

logger = logging.getLogger(__name__)

Pipeline = Callable[..., PipelineResult]
# Progress writes at most this often (seconds): pages poll every few seconds, they need no more.
PROGRESS_INTERVAL = 0.25
# Percent shown while results are being stored (100 is only written with SUCCEEDED).
STORE_PROGRESS = 99
MAX_ERROR_LENGTH = 2000


class ClaimLost(Exception):
    """Another attempt took this run over (re-queued, or redelivered after this worker was presumed dead)."""


def default_pipeline(volume: CTVolume, *, progress: Callable[[str, int], None] | None = None) -> PipelineResult:
    """The pipeline with the default networks in settings.MODEL_DIR (classical methods for the other stages)."""
    from .nets.registry import ModelFileError
    from .pipeline.run import run_pipeline

    try:
        segmenters = _segmenters(str(settings.MODEL_DIR))
    except ModelFileError as exc:  # an altered or wrong-version weight file: say which, never fall back silently
        raise PipelineError(f"the trained models cannot be used: {exc}") from exc
    return run_pipeline(
        volume,
        progress=progress,
        lung_segmenter=segmenters.get("lungs"),
        infection_segmenter=segmenters.get("infection"),
        classifier=segmenters.get("classifier"),
    )


@functools.lru_cache(maxsize=4)
def _segmenters(directory: str) -> dict:
    # Loaded (and their sha256 checked) once per worker process, not once per scan. A network replaces a
    # classical method only where its metadata says it measured better; otherwise it only vetoes (model card).
    from .nets.segmenters import pipeline_stages

    return pipeline_stages(Path(directory), defaults_only=True)


def execute_run(run_id: int, *, pipeline: Pipeline = default_pipeline, task_id: str | None = None) -> None:
    """Claim run `run_id`, analyse its series with `pipeline` and store the results (or the failure).

    `task_id` is the id of the delivering Celery task: a redelivery of the same task may take over a
    RUNNING run (its previous worker died). Returns quietly when the run is not claimable.
    """
    attempt = claim_run(run_id, task_id=task_id)
    if attempt is None:
        return
    progress = _ProgressRecorder(run_id, attempt)
    started = time.perf_counter()
    try:
        run = AnalysisRun.objects.select_related("series").get(pk=run_id)
        progress("load", 0, force=True)
        volume = load_series_volume(run.series)
        load_seconds = time.perf_counter() - started
        result = pipeline(volume, progress=progress)
        progress("store", STORE_PROGRESS, force=True)
        store_result(run, attempt, result, volume, load_seconds=load_seconds)
    except ClaimLost:
        logger.warning("analysis run %s attempt %s: claim lost to a newer attempt, results discarded", run_id, attempt)
    except Exception as exc:  # every failure becomes a readable error on the run, never a crashed worker
        logger.exception("analysis run %s attempt %s failed", run_id, attempt)
        fail_run(run_id, attempt, exc, stage=progress.stage)
    else:
        logger.info("analysis run %s attempt %s succeeded in %.1f s", run_id, attempt, time.perf_counter() - started)


def claim_run(run_id: int, *, task_id: str | None = None) -> int | None:
    """Atomically move the run to RUNNING (see the module docstring); returns the attempt number, or None."""
    now = timezone.now()
    claimable = Q(status=RunStatus.QUEUED) | stale_condition(now)
    if task_id:
        claimable |= Q(status=RunStatus.RUNNING, claim=task_id)
    with transaction.atomic():
        count = AnalysisRun.objects.filter(claimable, pk=run_id).update(
            status=RunStatus.RUNNING,
            claim=task_id or "",
            started=now,
            heartbeat=now,
            finished=None,
            attempts=F("attempts") + 1,
            stage="",
            progress=0,
            error="",
            traceback="",
        )
        if count == 0:
            state = AnalysisRun.objects.filter(pk=run_id).values_list("status", flat=True).first()
            logger.info("analysis run %s not claimed (status %s): nothing to do", run_id, state or "deleted")
            return None
        # Read inside the transaction: the row is locked by the update until commit.
        return AnalysisRun.objects.filter(pk=run_id).values_list("attempts", flat=True).get()


def load_series_volume(series: Series) -> CTVolume:
    """The series' stored volume: its DICOM instances in index order, or its NIfTI file. Raises VolumeError."""
    if series.status != SeriesStatus.READY:
        raise VolumeError(f"the series is {series.get_status_display().lower()}, not ready for analysis")
    root = Path(settings.MEDIA_ROOT)
    if series.source == SeriesSource.NIFTI:
        if not series.volume_file:
            raise VolumeError("this NIfTI series has no stored volume file")
        path = root / series.volume_file
        if not path.is_file():
            raise VolumeError(f"the stored volume file {series.volume_file} is missing")
        return load_nifti(path)
    files = list(series.instances.order_by("index").values_list("file", flat=True))
    if not files:
        raise VolumeError("the series has no stored images")
    paths = [root / name for name in files]
    missing = [name for name, path in zip(files, paths, strict=True) if not path.is_file()]
    if missing:
        raise VolumeError(f"{len(missing)} of the {len(files)} stored images are missing (first: {missing[0]})")
    return load_dicom_series(paths)


def store_result(
    run: AnalysisRun, attempt: int, result: PipelineResult, volume: CTVolume, *, load_seconds: float = 0.0
) -> None:
    """Replace the run's results with `result` in one transaction and mark it SUCCEEDED."""
    if result.lungs.shape != volume.shape or result.infection.shape != volume.shape:
        raise PipelineError(
            f"the pipeline returned label maps of shape {result.lungs.shape}/{result.infection.shape} "
            f"for a volume of shape {volume.shape}"
        )
    # Compress the label maps before taking the row lock; only the renames happen under it.
    staged: list[StagedLabelMap] = []
    try:
        staged.append(stage_label_map(run, "lungs", result.lungs))
        staged.append(stage_label_map(run, "infection", result.infection))
        if result.heat_map is not None:
            heat = np.rint(np.clip(result.heat_map, 0.0, 1.0) * 255).astype(np.uint8)
            staged.append(stage_label_map(run, "heatmap", heat))
        _store_rows(run, attempt, result, staged, load_seconds=load_seconds)
    finally:
        for label_map in staged:
            label_map.discard()  # a no-op for a committed file


def _store_rows(
    run: AnalysisRun, attempt: int, result: PipelineResult, staged: list[StagedLabelMap], *, load_seconds: float
) -> None:
    both = result.region("both")
    with transaction.atomic():
        # Lock the row: a concurrent re-queue or takeover waits, and if it came first we stop here.
        if not _owned(run.pk, attempt).select_for_update().exists():
            raise ClaimLost
        RegionMeasurement.objects.filter(run_id=run.pk).delete()
        Opacity.objects.filter(run_id=run.pk).delete()
        # The result dataclasses carry the models' field names: one row per region and per opacity.
        RegionMeasurement.objects.bulk_create(RegionMeasurement(run_id=run.pk, **asdict(r)) for r in result.regions)
        Opacity.objects.bulk_create(Opacity(run_id=run.pk, **asdict(o)) for o in result.opacities)
        # Files are moved into place under the row lock, so an older attempt cannot overwrite them afterwards.
        lungs_file, infection_file, *heatmap_file = (label_map.commit() for label_map in staged)
        summary = result.to_dict()
        AnalysisRun.objects.filter(pk=run.pk).update(
            status=RunStatus.SUCCEEDED,
            stage="",
            progress=100,
            finished=timezone.now(),
            heartbeat=timezone.now(),
            lung_volume_ml=both.lung_volume_ml,
            infection_volume_ml=both.infection_volume_ml,
            ggo_volume_ml=both.ggo_volume_ml,
            consolidation_volume_ml=both.consolidation_volume_ml,
            poi=both.poi,
            ihu=both.ihu,
            ct_severity_score=result.ct_severity_score,
            models_used=summary["models"],
            timings={"load": round(load_seconds, 3), **{k: round(v, 3) for k, v in result.timings.items()}},
            warnings=summary["warnings"],
            slice_metrics=summary["slices"],
            positive_ratio=result.corona.positive_ratio if result.corona else None,
            corona_score_ml=result.corona.corona_score_ml if result.corona else None,
            lungs_file=lungs_file,
            infection_file=infection_file,
            heatmap_file=heatmap_file[0] if heatmap_file else "",
        )


def fail_run(run_id: int, attempt: int, exc: BaseException, *, stage: str = "") -> None:
    """Mark the attempt FAILED with a readable message and the traceback (unless a newer attempt owns the run)."""
    message = failure_message(exc, stage=stage)
    trace = "".join(tb.format_exception(exc))
    try:
        updated = _owned(run_id, attempt).update(
            status=RunStatus.FAILED, error=message, traceback=trace, finished=timezone.now(), heartbeat=timezone.now()
        )
    except Exception:  # the database itself may be what failed; the worker must go on
        logger.exception("could not record the failure of analysis run %s", run_id)
        return
    if not updated:
        logger.warning("analysis run %s attempt %s failed after losing its claim: %s", run_id, attempt, message)


def failure_message(exc: BaseException, *, stage: str = "") -> str:
    """What the user reads: the text of input/pipeline errors as they are, a short summary of anything else."""
    if isinstance(exc, VolumeError | PipelineError) and str(exc):
        message = str(exc)
    elif isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        message = "the results could not be stored: the server's disk is full; retry once space is freed"
    else:
        where = f" at the {stage} stage" if stage else ""
        detail = str(exc) or "no details"
        message = f"the analysis stopped on an unexpected error{where} ({type(exc).__name__}: {detail})"
    return message[:MAX_ERROR_LENGTH]


def _owned(run_id: int, attempt: int):
    return AnalysisRun.objects.filter(pk=run_id, status=RunStatus.RUNNING, attempts=attempt)


class _ProgressRecorder:
    """The pipeline's progress callback: writes stage, percent and heartbeat, at most every PROGRESS_INTERVAL."""

    def __init__(self, run_id: int, attempt: int, interval: float = PROGRESS_INTERVAL) -> None:
        self.run_id = run_id
        self.attempt = attempt
        self.interval = interval
        self.stage = ""
        self._written: tuple[str, int] | None = None
        self._last = -float("inf")

    def __call__(self, stage: str, percent: int, *, force: bool = False) -> None:
        self.stage = stage
        percent = max(0, min(int(percent), STORE_PROGRESS))  # 100 means stored, which only store_result says
        now = time.monotonic()
        if (stage, percent) == self._written or (not force and now - self._last < self.interval):
            return
        updated = _owned(self.run_id, self.attempt).update(stage=stage[:32], progress=percent, heartbeat=timezone.now())
        if not updated:
            raise ClaimLost
        self._written, self._last = (stage, percent), now
