"""AnalysisRun life cycle on the web side: queue, retry, and what counts as an abandoned run.

The worker side (claim -> run -> store or fail) is `analysis.execute`. Runs are enqueued only after
the surrounding transaction commits, so a worker never looks for a row that is not there yet.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from patients.models import Series

from .choices import RunStatus
from .models import AnalysisRun, Opacity, RegionMeasurement
from .pipeline.version import PIPELINE_VERSION

logger = logging.getLogger(__name__)

# A RUNNING run whose worker has not reported for this long is taken as abandoned (worker killed,
# machine lost): another delivery may claim it and a user may retry it. The worker reports at every
# progress step, so this only needs to exceed the longest stage of one analysis.
STALE_AFTER = timedelta(minutes=30)

# What a fresh (or reset) run holds: no claim, no progress, no results. `attempts` is never reset: the
# attempt number is how a worker still busy with an older attempt finds out that its claim is gone.
_RESET_FIELDS: dict[str, object] = {
    "status": RunStatus.QUEUED,
    "stage": "",
    "progress": 0,
    "error": "",
    "traceback": "",
    "claim": "",
    "heartbeat": None,
    "started": None,
    "finished": None,
    "models_used": [],
    "timings": {},
    "warnings": [],
    "lung_volume_ml": None,
    "infection_volume_ml": None,
    "ggo_volume_ml": None,
    "consolidation_volume_ml": None,
    "poi": None,
    "ihu": None,
    "ct_severity_score": None,
    "slice_metrics": [],
    "positive_ratio": None,
    "corona_score_ml": None,
    "lungs_file": "",
    "infection_file": "",
    "heatmap_file": "",
}


def reset_values() -> dict[str, object]:
    """Field values of a queued run without results (fresh lists and dicts for the JSON fields)."""
    return {name: type(value)() if isinstance(value, list | dict) else value for name, value in _RESET_FIELDS.items()}


class NotRetryable(ValueError):
    """The run is queued, running (and alive) or succeeded: there is nothing to retry."""


def stale_cutoff(now: datetime | None = None) -> datetime:
    """Heartbeats before this instant belong to abandoned runs."""
    return (now or timezone.now()) - STALE_AFTER


def stale_condition(now: datetime | None = None) -> Q:
    """Filter for RUNNING runs whose worker stopped reporting."""
    return Q(status=RunStatus.RUNNING, heartbeat__lt=stale_cutoff(now))


def is_stale(run: AnalysisRun, now: datetime | None = None) -> bool:
    return run.status == RunStatus.RUNNING and run.heartbeat is not None and run.heartbeat < stale_cutoff(now)


def queue_analysis(series: Series) -> AnalysisRun:
    """Create (or reset) this series' run for the current pipeline version and enqueue it after commit.

    A re-queued run drops its old results (the series may have gained slices since) and any claim,
    so a worker still busy with the old attempt finds its claim gone and stops.
    """
    with transaction.atomic():
        run, created = AnalysisRun.objects.get_or_create(
            series=series, pipeline_version=PIPELINE_VERSION, defaults=reset_values()
        )
        if not created:
            _reset(run)
    transaction.on_commit(lambda: enqueue(run.pk))
    return run


def retry_run(run: AnalysisRun) -> AnalysisRun:
    """Queue a failed or abandoned (stale RUNNING) run again; raises NotRetryable otherwise."""
    with transaction.atomic():
        retryable = Q(status=RunStatus.FAILED) | stale_condition()
        locked = AnalysisRun.objects.select_for_update().filter(retryable, pk=run.pk).first()
        if locked is None:
            run.refresh_from_db(fields=["status"])
            state = RunStatus(run.status).label.lower()
            raise NotRetryable(f"analysis {run.pk} is {state}: only failed or abandoned analyses can be retried")
        _reset(locked)
    transaction.on_commit(lambda: enqueue(run.pk))
    run.refresh_from_db()
    return run


def enqueue(run_id: int) -> bool:
    """Send the task for one run; True when the broker took it.

    A broker that cannot be reached loses nothing: the run stays QUEUED with a note saying it waits
    for the task queue (`UNSENT_NOTE`), and `resend_unsent` sends it once the broker is back. A
    successful send is itself the sign that the broker is back, so it re-sends what waits too.
    """
    try:
        _send(run_id)
    except Exception as exc:  # kombu raises several types (OperationalError, OSError, ...) for a broker that is down
        logger.warning("analysis run %s could not be handed to the task queue: %s", run_id, exc)
        AnalysisRun.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(error=unsent_note(exc))
        return False
    resend_unsent()
    return True


# A QUEUED run whose message the broker did not take carries this note in `error` until it is sent.
# A queued run has no other use for its error field (a claim clears it), so no extra column is needed,
# and the page shows the user why the analysis has not started.
UNSENT_NOTE = "waiting for the task queue"
RESEND_BATCH = 500


def unsent_note(exc: BaseException) -> str:
    return f"{UNSENT_NOTE}, which could not be reached ({exc}); the analysis starts when the queue is back"


def unsent_runs() -> QuerySet[AnalysisRun]:
    """Runs queued while the broker was down: never handed over, so no worker will ever see them."""
    return AnalysisRun.objects.filter(status=RunStatus.QUEUED, error__startswith=UNSENT_NOTE)


def resend_unsent(limit: int = RESEND_BATCH) -> int:
    """Send the tasks of runs queued while the broker was down; returns how many were sent.

    Called after every successful send, when a worker (re)connects to the broker, and by the
    `resend_analyses` command. Each run's note is taken off with a conditional update before its
    send, so two concurrent sweeps never send one run twice; a failed send puts the note back and
    stops the sweep (the broker is still down). A duplicate message would be harmless anyway: the
    worker's atomic claim (`analysis.execute.claim_run`) lets only one delivery analyse a run.
    """
    sent = 0
    for run_id, note in unsent_runs().order_by("created", "pk").values_list("pk", "error")[:limit]:
        if not AnalysisRun.objects.filter(pk=run_id, status=RunStatus.QUEUED, error=note).update(error=""):
            continue  # another sweep took it, or a worker claimed it
        try:
            _send(run_id)
        except Exception as exc:
            AnalysisRun.objects.filter(pk=run_id, status=RunStatus.QUEUED, error="").update(error=unsent_note(exc))
            logger.warning("the task queue is still unreachable (%s): %s run(s) re-sent so far", exc, sent)
            break
        sent += 1
    if sent:
        logger.info("re-sent %s analysis run(s) queued while the task queue was unreachable", sent)
    return sent


def _send(run_id: int) -> None:
    from .tasks import analyse_series

    analyse_series.apply_async((run_id,), queue=settings.CELERY_ANALYSIS_QUEUE)


def _reset(run: AnalysisRun) -> None:
    RegionMeasurement.objects.filter(run=run).delete()
    Opacity.objects.filter(run=run).delete()
    values = reset_values()
    for name, value in values.items():
        setattr(run, name, value)
    run.save(update_fields=list(values))


def _first_scores(patient_id) -> QuerySet[AnalysisRun]:
    """Corona scores of a patient's analysed scans, earliest first (by study date, then upload order)."""
    return (
        AnalysisRun.objects.filter(
            series__study__patient_id=patient_id, status=RunStatus.SUCCEEDED, corona_score_ml__isnull=False
        )
        .order_by("series__study__study_date", "series__study_id", "series_id")
        .values("corona_score_ml")
    )


def with_first_corona_score(queryset: QuerySet[AnalysisRun]) -> QuerySet[AnalysisRun]:
    """Annotate each run with its patient's first corona score: one query for a whole list of runs."""
    return queryset.annotate(first_corona_score_ml=Subquery(_first_scores(OuterRef("series__study__patient_id"))[:1]))


def first_corona_score(run: AnalysisRun) -> float | None:
    """Corona score of the earliest analysed scan of the run's patient (annotated, or one query)."""
    if hasattr(run, "first_corona_score_ml"):
        return run.first_corona_score_ml
    first = _first_scores(run.series.study.patient_id).first()
    return first["corona_score_ml"] if first else None


def relative_corona_score(run: AnalysisRun) -> float | None:
    """Corona score / the patient's first analysed scan's score (1.0 for that first scan)."""
    from .pipeline.corona import relative_score

    if run.corona_score_ml is None:
        return None
    return relative_score(run.corona_score_ml, first_corona_score(run))


def is_suspected(run: AnalysisRun) -> bool | None:
    """Whether the positive-slice ratio passes the team's threshold; None without a classifier result."""
    if run.positive_ratio is None:
        return None
    return run.positive_ratio >= run.series.study.patient.team.suspected_ratio_threshold
