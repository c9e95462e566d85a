"""Cohort pages: list and create, the cohort page (members, labels, Table 2, ROC, box plots), labels,
severity CSV import, fitting, activating a model and the bio-marker CSV export.

Views validate, call one function and render; lookups are `frontend.cohort_queries` (scoped to the user's
teams), the work is `analysis.cohorts` and `analysis.severity`.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from analysis import cohorts, severity
from analysis.choices import SeverityLabel
from analysis.stats.severity import SeverityFitError
from audit.choices import AuditAction
from audit.log import record
from patients.deidentify import team_key

from . import cohort_queries
from .cohort_forms import CohortForm, SeverityImportForm
from .downloads import csv_download


@login_required
@require_GET
def cohort_list(request: HttpRequest) -> HttpResponse:
    context = {
        "cohorts": cohort_queries.cohort_list(request.user),
        "can_create": cohort_queries.admin_teams(request.user).exists(),
    }
    return render(request, "frontend/cohort_list.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def cohort_create(request: HttpRequest) -> HttpResponse:
    if not cohort_queries.admin_teams(request.user).exists():
        raise PermissionDenied("Only team admins can create cohorts.")
    form = CohortForm(request.POST or None, request.FILES or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        cohort = cohorts.create_cohort(data["team"], data["name"], data["description"], form.members)
        messages.success(request, f"Cohort “{cohort.name}” created with {len(form.members)} patients.")
        return redirect("cohort-detail", cohort_id=cohort.pk)
    status = 400 if request.method == "POST" else 200
    return render(request, "frontend/cohort_create.html", {"form": form}, status=status)


@login_required
@require_GET
def cohort_detail(request: HttpRequest, cohort_id: int) -> HttpResponse:
    context = cohort_queries.cohort_page(request.user, cohort_id)
    record(request, AuditAction.VIEW, context["cohort"], summary="cohort page")
    context["labels"] = SeverityLabel.choices
    context["import_form"] = SeverityImportForm()
    return render(request, "frontend/cohort_detail.html", context)


@login_required
@require_POST
def cohort_labels(request: HttpRequest, cohort_id: int) -> HttpResponse:
    cohort = cohort_queries.cohort_for_writer(request.user, cohort_id)
    labels: dict[int, str] = {}
    for key, value in request.POST.items():
        if key.startswith("severity-") and key.removeprefix("severity-").isdigit():
            labels[int(key.removeprefix("severity-"))] = value
    try:
        changed = cohorts.record_labels(cohort, request.user, labels)
    except ValueError as exc:
        messages.error(request, f"Nothing was saved: {exc}.")
    else:
        record(request, AuditAction.CHANGE, cohort, summary=f"clinical severity labels: {changed} changed")
        messages.success(request, f"Clinical severity saved ({changed} changed).")
    return redirect("cohort-detail", cohort_id=cohort.pk)


@login_required
@require_POST
def cohort_members(request: HttpRequest, cohort_id: int) -> HttpResponse:
    cohort = cohort_queries.cohort_for_admin(request.user, cohort_id)
    try:
        added = cohorts.add_members(cohort, request.POST.get("identifiers", ""))
    except ValueError as exc:
        messages.error(request, f"Nothing was added: {exc}.")
    else:
        record(request, AuditAction.CHANGE, cohort, summary=f"{added} patients added")
        messages.success(request, f"{added} patient{'s' if added != 1 else ''} added to “{cohort.name}”.")
    return redirect("cohort-detail", cohort_id=cohort.pk)


@login_required
@require_POST
def cohort_import(request: HttpRequest, cohort_id: int) -> HttpResponse:
    cohort = cohort_queries.cohort_for_writer(request.user, cohort_id)
    form = SeverityImportForm(request.POST, request.FILES)
    if not form.is_valid():
        return render(request, "frontend/cohort_import.html", {"cohort": cohort, "form": form}, status=400)
    report = cohorts.import_labels(cohort, request.user, form.cleaned_data["file"])
    record(request, AuditAction.CHANGE, cohort, summary="clinical severity CSV import")
    return render(request, "frontend/cohort_import.html", {"cohort": cohort, "form": form, "report": report})


@login_required
@require_POST
def cohort_fit(request: HttpRequest, cohort_id: int) -> HttpResponse:
    cohort = cohort_queries.cohort_for_admin(request.user, cohort_id)
    try:
        outcome = severity.fit_cohort(cohort, request.user)
    except SeverityFitError as exc:
        messages.error(request, f"No model was fitted: {exc}.")
    else:
        record(request, AuditAction.CHANGE, cohort, summary=f"{len(outcome.models)} severity models fitted")
        messages.success(request, f"{len(outcome.models)} severity models fitted on “{cohort.name}”.")
        for name, reason in outcome.skipped:
            messages.warning(request, f"{name} was not fitted: {reason}.")
    return redirect("cohort-detail", cohort_id=cohort.pk)


@login_required
@require_POST
def severity_model_activate(request: HttpRequest, model_id: int) -> HttpResponse:
    model = cohort_queries.severity_model_for_admin(request.user, model_id)
    severity.activate(model)
    record(request, AuditAction.CHANGE, model, team=model.team, summary=f"active severity model: {model.name}")
    messages.success(request, f"“{model.name}” is now {model.team.name}'s active severity model.")
    return redirect("cohort-detail", cohort_id=model.cohort_id)


@login_required
@require_GET
def cohort_export(request: HttpRequest, cohort_id: int) -> StreamingHttpResponse:
    cohort = cohort_queries.cohort(request.user, cohort_id)
    deidentified = request.GET.get("deidentified") == "1"
    key = team_key(settings.SECRET_KEY, cohort.team.slug) if deidentified else None
    rows = cohorts.export_rows(severity.cohort_scans(cohort), pseudonym_key=key)
    kind = "de-identified" if deidentified else "identified"
    record(request, AuditAction.EXPORT, cohort, summary=f"bio-markers CSV ({kind})")
    name = slugify(cohort.name) or f"cohort-{cohort.pk}"
    suffix = "-deidentified" if deidentified else ""
    return csv_download(rows, f"{name}-biomarkers{suffix}.csv")
