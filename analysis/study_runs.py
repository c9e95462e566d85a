"""Which analysis stands for a study: one succeeded run per study, chosen the same way everywhere.

A study may hold several analysed series (1 mm and 5 mm reconstructions, a soft-tissue kernel). The
timeline, the progression labels, the agreement tables and the severity models all compare one value per
study, so they must agree on which: the run of the thinnest analysed series (the most detailed scan),
then the one with the most slices, then the most recently finished.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import F, QuerySet

from .choices import RunStatus
from .models import AnalysisRun


def _ordered_runs(study_ids: Iterable[int] | QuerySet) -> QuerySet[AnalysisRun]:
    return (
        AnalysisRun.objects.filter(series__study_id__in=study_ids, status=RunStatus.SUCCEEDED, poi__isnull=False)
        .select_related("series__study__patient__team")
        .order_by(
            "series__study_id",
            F("series__slice_thickness").asc(nulls_last=True),
            F("series__slice_count").desc(),
            F("finished").desc(nulls_last=True),
            "-id",
        )
    )


def study_runs(study_ids: Iterable[int] | QuerySet) -> dict[int, AnalysisRun]:
    """{study id: the run that stands for it} for the given studies (already scoped by the caller), in one query.

    Studies without a succeeded analysis are absent from the result.
    """
    chosen: dict[int, AnalysisRun] = {}
    for run in _ordered_runs(study_ids):
        chosen.setdefault(run.series.study_id, run)
    return chosen


def study_run(study_id: int) -> AnalysisRun | None:
    """The run that stands for one study, or None when none of its series has a succeeded analysis."""
    return _ordered_runs([study_id]).first()
