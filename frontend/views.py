"""Page views: validate, call one function, render.

Query logic lives in `frontend.queries` (always scoped to the user's teams); the upload itself in
`patients.ingest`; retries in `analysis.runs`.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from analysis.choices import RunStatus
from analysis.progression import patient_changes
from analysis.runs import NotRetryable, is_suspected, relative_corona_score
from analysis.runs import retry_run as retry
from analysis.severity import severity_of_run
from audit.choices import AuditAction
from audit.log import record
from patients.models import HIGHEST_NORMAL_SHARE, LOWEST_PNEUMONIA_SHARE, SUSPECTED_RATIO_THRESHOLD

from . import figures, queries
from .forms import TeamSettingsForm, UploadForm
from .status import run_status

PATIENTS_PER_PAGE = 50


@login_required
@require_GET
def patient_list(request: HttpRequest) -> HttpResponse:
    search = request.GET.get("q", "")[:64]
    cohort = queries.list_cohort(request.user, request.GET.get("cohort", "").strip())
    patients = queries.patient_list(request.user, search, cohort)
    page = Paginator(patients, PATIENTS_PER_PAGE).get_page(request.GET.get("page"))
    queries.add_list_extras(page.object_list)
    context = {"page": page, "search": search.strip(), "cohort": cohort, "cohorts": queries.list_cohorts(request.user)}
    return render(request, "frontend/patient_list.html", context)


@login_required
@require_GET
def patient_detail(request: HttpRequest, patient_id: int) -> HttpResponse:
    patient = queries.patient_detail(request.user, patient_id)
    record(request, AuditAction.VIEW, patient)
    context = {
        "patient": patient,
        "can_write": queries.can_write(request.user, patient.team_id),
        "timeline": figures.poi_timeline(patient),
        "changes": patient_changes(patient),
    }
    return render(request, "frontend/patient_detail.html", context)


@login_required
@require_GET
def series_detail(request: HttpRequest, series_id: int) -> HttpResponse:
    series = queries.series_detail(request.user, series_id)
    record(request, AuditAction.VIEW, series)
    run = series.latest_run
    succeeded = run is not None and run.status == RunStatus.SUCCEEDED
    context = {
        "series": series,
        "study": series.study,
        "patient": series.study.patient,
        "run": run,
        "status": run_status(run),
        "results": queries.run_results(run) if succeeded else None,
        "slice_profile": figures.slice_profile(run) if succeeded else None,
        "relative_corona": relative_corona_score(run) if succeeded else None,
        "suspected": is_suspected(run) if succeeded else None,
        "severity": severity_of_run(run) if succeeded else None,
        "can_write": queries.can_write(request.user, series.study.patient.team_id),
        "pacs_configured": bool(settings.PACS_HOST),
    }
    return render(request, "frontend/series_detail.html", context)


@login_required
@require_GET
def series_status(request: HttpRequest, series_id: int) -> JsonResponse:
    series = queries.get_scoped_series_or_404(request.user, series_id)
    response = JsonResponse(run_status(queries.latest_run(series)))
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def retry_run(request: HttpRequest, run_id: int) -> HttpResponse:
    run = queries.run_for_retry(request.user, run_id)
    try:
        retry(run)
    except NotRetryable as exc:
        messages.warning(request, f"Analysis of “{run.series}” was not retried: {exc}.")
    else:
        record(request, AuditAction.CHANGE, run, summary="analysis retried")
        messages.success(request, f"Analysis of “{run.series}” queued again.")
    fallback = reverse("series-detail", args=[run.series_id])
    target = request.POST.get("next", "")
    allowed = url_has_allowed_host_and_scheme(target, {request.get_host()}, require_https=request.is_secure())
    return redirect(target if target and allowed else fallback)


def _upload_page(request: HttpRequest, form: UploadForm, status: int = 200) -> HttpResponse:
    limits = {
        "max_file_mb": settings.UPLOAD_MAX_FILE_MB,
        "max_total_mb": settings.UPLOAD_MAX_TOTAL_MB,
        "max_files": settings.UPLOAD_MAX_FILES,
    }
    return render(request, "frontend/upload.html", {"form": form, "limits": limits}, status=status)


def _wants_json(request: HttpRequest) -> bool:
    return request.headers.get("x-requested-with") == "XMLHttpRequest" or "application/json" in request.headers.get(
        "accept", ""
    )


@login_required
@require_http_methods(["GET", "POST"])
def upload(request: HttpRequest) -> HttpResponse:
    if not queries.can_upload(request.user):
        raise PermissionDenied("Only clinicians and team admins can upload scans.")
    if request.method == "GET":
        return _upload_page(request, UploadForm(user=request.user))
    form = UploadForm(request.POST, request.FILES, user=request.user)
    if not form.is_valid():
        if _wants_json(request):
            errors = {field: [str(e) for e in errs] for field, errs in form.errors.items()}
            return JsonResponse({"errors": errors}, status=400)
        return _upload_page(request, form, status=400)
    from patients.ingest import ingest_uploaded_files

    result = ingest_uploaded_files(
        form.cleaned_data["team"],
        form.cleaned_data["files"],
        user=request.user,
        channel="browser",
        patient_identifier=form.cleaned_data["patient_identifier"] or None,
    )
    summary = f"{result.accepted_count} files accepted, {result.refused_count} refused"
    record(request, AuditAction.UPLOAD, result, summary=summary)
    url = reverse("upload-detail", args=[result.pk])
    if _wants_json(request):
        return JsonResponse({"upload_id": result.pk, "url": url}, status=201)
    return redirect(url)


@login_required
@require_GET
def upload_detail(request: HttpRequest, upload_id: int) -> HttpResponse:
    upload = queries.upload_detail(request.user, upload_id)
    report = upload.report or {}
    context = {
        "upload": upload,
        "series": queries.upload_series(request.user, upload),
        "refused": [r for r in report.get("refused", []) if isinstance(r, dict)],
        "notes": [str(n) for n in report.get("notes", [])],
    }
    return render(request, "frontend/upload_detail.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def team_settings(request: HttpRequest, slug: str) -> HttpResponse:
    team = queries.admin_team(request.user, slug)
    form = TeamSettingsForm(request.POST or None, instance=team)
    if request.method == "POST" and form.is_valid():
        form.save()
        changed = ", ".join(f"{name}={form.cleaned_data[name]}" for name in form.changed_data)
        record(request, AuditAction.CHANGE, team, team=team, summary=f"team settings: {changed or 'no change'}")
        messages.success(request, f"Settings of {team.name} saved.")
        return redirect("team-settings", slug=team.slug)
    context = {
        "team": team,
        "form": form,
        "default_threshold": SUSPECTED_RATIO_THRESHOLD,
        "normal_share": HIGHEST_NORMAL_SHARE,
        "pneumonia_share": LOWEST_PNEUMONIA_SHARE,
    }
    return render(request, "frontend/team_settings.html", context)
