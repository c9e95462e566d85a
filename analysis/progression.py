"""Progression between consecutive scans and its agreement with the radiology reports (database side).

For each patient, the dated studies that have an analysis (one run per study, `analysis.study_runs`)
are taken in date order; each consecutive pair gives the change of POI (percentage points), of iHU (HU)
and of the corona score (relative to the earlier score), each labelled increase / decrease / stable with
the team's tolerances, and the label of the later study's report (its newest one). The statistics are
`analysis.stats.agreement`; the callers scope the patients to the user's teams.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise

from django.db.models import QuerySet

from patients.models import Patient, RadiologyReport, Study

from .models import AnalysisRun
from .stats import agreement as stats
from .study_runs import study_runs

# (key, label) of the measures compared with the reports, in display order.
MEASURES: tuple[tuple[str, str], ...] = (("poi", "POI"), ("ihu", "iHU"), ("corona", "Corona score"))


@dataclass(frozen=True)
class Change:
    """Two consecutive analysed studies of a patient and what changed between them."""

    patient: Patient
    earlier: Study
    later: Study
    earlier_run: AnalysisRun
    later_run: AnalysisRun
    delta_poi_pp: float
    delta_ihu: float | None
    delta_corona: float | None  # relative: 0.25 is a quarter more than the earlier score
    poi_label: str | None
    ihu_label: str | None
    corona_label: str | None
    report: RadiologyReport | None

    @property
    def report_label(self) -> str | None:
        return self.report.label if self.report is not None and self.report.label else None

    def label(self, measure: str) -> str | None:
        return getattr(self, f"{measure}_label")


def _change(patient: Patient, pair: tuple[Study, Study], runs: dict, report: RadiologyReport | None) -> Change:
    earlier, later = pair
    a, b = runs[earlier.pk], runs[later.pk]
    team = patient.team
    delta_poi = (b.poi - a.poi) * 100
    delta_ihu = b.ihu - a.ihu if a.ihu is not None and b.ihu is not None else None
    delta_corona = stats.relative_change(a.corona_score_ml, b.corona_score_ml)
    return Change(
        patient=patient,
        earlier=earlier,
        later=later,
        earlier_run=a,
        later_run=b,
        delta_poi_pp=delta_poi,
        delta_ihu=delta_ihu,
        delta_corona=delta_corona,
        poi_label=stats.image_label(delta_poi, team.poi_tolerance_pp),
        ihu_label=stats.image_label(delta_ihu, team.ihu_tolerance_hu),
        corona_label=stats.image_label(delta_corona, team.corona_tolerance),
        report=report,
    )


def latest_reports(study_ids: Iterable[int] | QuerySet) -> dict[int, RadiologyReport]:
    """{study id: its newest report} in one query."""
    newest: dict[int, RadiologyReport] = {}
    for report in RadiologyReport.objects.filter(study_id__in=study_ids).order_by("study_id", "-created", "-id"):
        newest.setdefault(report.study_id, report)
    return newest


def _pairs(studies: list[Study], runs: dict[int, AnalysisRun], reports: dict[int, RadiologyReport]) -> list[Change]:
    """Changes between consecutive analysed studies; `studies` are dated, their patient (and team) loaded."""
    by_patient: dict[int, list[Study]] = defaultdict(list)
    for study in sorted(studies, key=lambda s: (s.patient_id, s.study_date, s.pk)):
        if study.pk in runs:
            by_patient[study.patient_id].append(study)
    result = []
    for analysed in by_patient.values():
        for pair in pairwise(analysed):
            result.append(_change(pair[0].patient, pair, runs, reports.get(pair[1].pk)))
    result.sort(key=lambda c: (c.patient.identifier, c.patient.pk, c.later.study_date, c.later.pk))
    return result


def changes(patients: QuerySet[Patient]) -> list[Change]:
    """Consecutive-scan changes of the given (already scoped) patients, in three queries."""
    studies = list(Study.objects.filter(patient__in=patients, study_date__isnull=False).select_related("patient__team"))
    ids = [s.pk for s in studies]
    return _pairs(studies, study_runs(ids), latest_reports(ids))


def patient_changes(patient: Patient) -> list[Change]:
    """Consecutive-scan changes of one patient (already scoped), oldest first.

    Without queries when the patient comes from `frontend.queries.patient_detail`, which prefetches the
    studies with their reports (newest first) and sets `patient.study_runs`.
    """
    runs = getattr(patient, "study_runs", None)
    if runs is None:
        return changes(Patient.objects.filter(pk=patient.pk))
    studies = [s for s in patient.studies.all() if s.study_date is not None]
    for study in studies:
        study.patient = patient  # the loaded patient and team, not one query each
    reports = {s.pk: next(iter(s.reports.all()), None) for s in studies}
    return _pairs(studies, runs, {pk: r for pk, r in reports.items() if r is not None})


def agreements(items: list[Change]) -> list[stats.Agreement]:
    """Table 3 and both kappas for each measure."""
    return [stats.agreement(label, [(c.report_label, c.label(key)) for c in items]) for key, label in MEASURES]


def _number(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def agreement_csv(results: list[stats.Agreement]) -> str:
    """The agreement tables and kappas as one CSV (a block per measure)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["measure", "report label", *stats.IMAGE_LABELS, "total"])
    for result in results:
        for row, counts in zip(result.table.rows, result.table.counts, strict=True):
            writer.writerow([result.measure, row, *counts, sum(counts)])
    writer.writerow([])
    writer.writerow(["measure", "variant", "kappa", "ci95 low", "ci95 high", "standard error", "pairs", "agreement"])
    for result in results:
        for variant, kappa in (("binary", result.binary), ("three-class", result.three_class)):
            writer.writerow(
                [
                    result.measure,
                    variant,
                    _number(kappa.kappa, 4),
                    _number(kappa.low, 4),
                    _number(kappa.high, 4),
                    _number(kappa.se, 4),
                    kappa.n,
                    _number(kappa.observed, 4),
                ]
            )
    return out.getvalue()


def changes_csv(items: list[Change]) -> str:
    """One line per consecutive pair: dates, changes, labels and the report's phrase."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "patient",
            "earlier study date",
            "later study date",
            "delta POI (pp)",
            "delta iHU (HU)",
            "delta corona score (relative)",
            "POI label",
            "iHU label",
            "corona label",
            "report label",
            "report phrase",
        ]
    )
    for c in items:
        writer.writerow(
            [
                c.patient.identifier,
                c.earlier.study_date.isoformat(),
                c.later.study_date.isoformat(),
                _number(c.delta_poi_pp, 2),
                _number(c.delta_ihu, 1),
                _number(c.delta_corona, 3),
                c.poi_label or "",
                c.ihu_label or "",
                c.corona_label or "",
                c.report_label or "",
                c.report.phrase if c.report is not None else "",
            ]
        )
    return out.getvalue()
