"""Read-side queries for the pages, each scoped to the requesting user's teams.

Every function starts from a `for_user` queryset, so a page cannot show another team's data, and
fetches what its page needs in a fixed number of queries (annotations and prefetches, no N+1).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, F, Max, OuterRef, Prefetch, QuerySet, Subquery
from django.http import Http404
from django.shortcuts import get_object_or_404

from analysis.choices import Region, RunStatus
from analysis.models import AnalysisRun, Opacity, RegionMeasurement
from analysis.runs import is_stale
from analysis.study_runs import study_runs
from patients.choices import ADMIN_ROLES, WRITE_ROLES
from patients.models import Cohort, Membership, Patient, RadiologyReport, Series, Study, Team, Upload, teams_of

# Display order of the regions on the results table: both lungs, each lung, then the six zones.
REGION_ORDER: tuple[str, ...] = tuple(Region.values)
ZONE_REGIONS: tuple[str, ...] = REGION_ORDER[3:]


def patient_list(user, search: str = "", cohort: Cohort | None = None) -> QuerySet[Patient]:
    """The user's teams' patients with study count, latest study date, and the latest POI, CT severity score
    and positive-slice ratio, in one query; optionally only those of one cohort.

    The latest values are those of the latest dated study with a succeeded analysis, taken from its
    thinnest analysed series (as on the patient page's course, `analysis.study_runs`), then the one with
    the most slices, then the most recently finished run.
    """
    latest_run = AnalysisRun.objects.filter(
        series__study__patient=OuterRef("pk"), status=RunStatus.SUCCEEDED, poi__isnull=False
    ).order_by(
        F("series__study__study_date").desc(nulls_last=True),
        F("series__slice_thickness").asc(nulls_last=True),
        F("series__slice_count").desc(),
        F("finished").desc(nulls_last=True),
        "-id",
    )
    patients = (
        Patient.objects.for_user(user)
        .select_related("team")
        .annotate(
            study_count=Count("studies", distinct=True),
            latest_study_date=Max("studies__study_date"),
            latest_poi=Subquery(latest_run.values("poi")[:1]),
            latest_severity=Subquery(latest_run.values("ct_severity_score")[:1]),
            latest_positive_ratio=Subquery(latest_run.values("positive_ratio")[:1]),
        )
        .order_by("identifier", "team__name")
    )
    search = search.strip()
    if search:
        patients = patients.filter(identifier__icontains=search)
    if cohort is not None:
        patients = patients.filter(cohorts=cohort)
    return patients


def list_cohorts(user) -> list[Cohort]:
    """The cohorts of the user's teams, for the patient list's filter."""
    return list(Cohort.objects.for_user(user).select_related("team").order_by("team__name", "name"))


def list_cohort(user, cohort_id: str) -> Cohort | None:
    """The cohort named by the list's filter: None when not given, 404 when not one of the user's teams'."""
    if not cohort_id:
        return None
    if not cohort_id.isdigit():
        raise Http404("No such cohort.")
    return get_object_or_404(Cohort.objects.for_user(user), pk=int(cohort_id))


def add_list_extras(patients: list[Patient]) -> list[Patient]:
    """Give each patient of one list page its POI course (`poi_course`, oldest first, for the sparkline) and
    whether its latest scan is flagged suspected (`suspected`, the rule of analysis.runs.is_suspected), in
    one query for the whole page."""
    ids = [p.pk for p in patients]
    studies = Study.objects.filter(patient_id__in=ids, study_date__isnull=False).values("id")
    courses: dict[int, list[tuple]] = {pk: [] for pk in ids}
    for run in study_runs(studies).values():
        study = run.series.study
        courses[study.patient_id].append((study.study_date, study.pk, run.poi))
    for patient in patients:
        patient.poi_course = [poi for _, _, poi in sorted(courses[patient.pk])]
        ratio = patient.latest_positive_ratio
        patient.suspected = None if ratio is None else ratio >= patient.team.suspected_ratio_threshold
    return patients


def _runs_newest_first() -> Prefetch:
    return Prefetch("analysis_runs", queryset=AnalysisRun.objects.order_by("-created", "-id"), to_attr="runs")


def latest_run(series: Series) -> AnalysisRun | None:
    """The newest run of a series whose runs were prefetched by this module (None when never analysed).

    The run is marked `retryable` when it failed or its worker stopped reporting (an abandoned run).
    """
    runs = getattr(series, "runs", None)
    if runs is None:
        run = AnalysisRun.objects.filter(series=series).order_by("-created", "-id").first()
    else:
        run = runs[0] if runs else None
    if run is not None:
        run.retryable = run.status == RunStatus.FAILED or is_stale(run)
    return run


def patient_detail(user, patient_id: int) -> Patient:
    """One of the user's patients with studies, their series, each series' runs and each study's reports
    (newest first) prefetched, and `study_runs` {study id: its run}; else 404."""
    series = Series.objects.order_by("series_number", "id").prefetch_related(_runs_newest_first())
    reports = RadiologyReport.objects.select_related("created_by").order_by("-created", "-id")
    studies = Study.objects.order_by("-study_date", "-id").prefetch_related(
        Prefetch("series", queryset=series), Prefetch("reports", queryset=reports)
    )
    patient = get_object_or_404(
        Patient.objects.for_user(user).select_related("team").prefetch_related(Prefetch("studies", queryset=studies)),
        pk=patient_id,
    )
    for study in patient.studies.all():
        for one in study.series.all():
            one.latest_run = latest_run(one)
    # The run that stands for each study (timeline, consecutive changes), in one query.
    patient.study_runs = study_runs([study.pk for study in patient.studies.all()])
    return patient


def series_detail(user, series_id: int) -> Series:
    """One of the user's series with its study, patient, team and runs; else 404."""
    series = get_object_or_404(
        Series.objects.for_user(user).select_related("study__patient__team").prefetch_related(_runs_newest_first()),
        pk=series_id,
    )
    series.latest_run = latest_run(series)
    return series


@dataclass(frozen=True)
class RunResults:
    """What the results table shows for one succeeded run."""

    regions: list[RegionMeasurement]  # in REGION_ORDER
    zones: list[RegionMeasurement]  # the six zones only
    opacities: list[Opacity]  # largest first


def run_results(run: AnalysisRun) -> RunResults:
    """Region measurements in display order and focal opacities of one run (the run is already scoped)."""
    by_region = {m.region: m for m in RegionMeasurement.objects.filter(run=run)}
    regions = [by_region[name] for name in REGION_ORDER if name in by_region]
    zones = [m for m in regions if m.region in ZONE_REGIONS]
    opacities = list(Opacity.objects.filter(run=run).order_by("-volume_ml", "index"))
    return RunResults(regions=regions, zones=zones, opacities=opacities)


def run_for_retry(user, run_id: int) -> AnalysisRun:
    """A run the user may retry: 404 outside the user's teams, PermissionDenied for viewers."""
    from django.core.exceptions import PermissionDenied

    run = get_object_or_404(AnalysisRun.objects.for_user(user).select_related("series"), pk=run_id)
    if not AnalysisRun.objects.for_user(user, WRITE_ROLES).filter(pk=run.pk).exists():
        raise PermissionDenied("Only clinicians and team admins can retry an analysis.")
    return run


def upload_detail(user, upload_id: int) -> Upload:
    """One upload of the user's teams; else 404."""
    return get_object_or_404(Upload.objects.for_user(user).select_related("team", "user"), pk=upload_id)


def upload_series(user, upload: Upload) -> list[dict]:
    """The upload report's series, each with the current Series row (or None if it is gone or not visible)."""
    entries = [entry for entry in (upload.report or {}).get("series", []) if isinstance(entry, dict)]
    ids = [entry.get("id") for entry in entries if isinstance(entry.get("id"), int)]
    rows = {
        s.pk: s
        for s in Series.objects.for_user(user)
        .filter(pk__in=ids)
        .select_related("study__patient")
        .prefetch_related(_runs_newest_first())
    }
    result = []
    for entry in entries:
        row = rows.get(entry.get("id"))
        if row is not None:
            row.latest_run = latest_run(row)
        result.append({**entry, "row": row})
    return result


def upload_teams(user) -> QuerySet:
    """Teams where the user may upload (clinician or admin)."""
    return teams_of(user, WRITE_ROLES).order_by("name")


def can_upload(user) -> bool:
    return upload_teams(user).exists()


def can_write(user, team_id: int) -> bool:
    """Whether the user is a clinician or admin of this team (Retry buttons, uploads)."""
    return teams_of(user, WRITE_ROLES).filter(pk=team_id).exists()


def memberships(user) -> list[Membership]:
    """The user's teams and roles, for the header."""
    return list(Membership.objects.for_user(user).select_related("team").order_by("team__name"))


def get_scoped_series_or_404(user, series_id: int) -> Series:
    """A bare series row of the user's teams (for the small status endpoint); else 404."""
    try:
        return Series.objects.for_user(user).get(pk=series_id)
    except Series.DoesNotExist as exc:
        raise Http404("No such series in your teams.") from exc


def admin_team(user, slug: str) -> Team:
    """A team the user administers; 404 for a team they are not in, PermissionDenied for other members."""
    from django.core.exceptions import PermissionDenied

    team = get_object_or_404(teams_of(user), slug=slug)
    if not teams_of(user, ADMIN_ROLES).filter(pk=team.pk).exists():
        raise PermissionDenied("Only the team's admins can change its settings.")
    return team
