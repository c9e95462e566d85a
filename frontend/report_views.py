"""Report pages: CSV import with a preview, one report per study, the team lexicon, and the agreement
between the software's progression labels and the reports. Views validate, call one function, render.

Between the preview and the confirmation the uploaded file travels back in a signed form field (it
expires after an hour), so no file is left on the server and the saved rows are exactly those previewed.
"""

from __future__ import annotations

import base64

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core import signing
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from analysis import progression
from audit.choices import AuditAction
from audit.log import record
from patients import radiology
from patients.choices import PhraseLabel, ReportSource
from patients.models import ReportPhrase
from patients.report_csv import MAX_BYTES, CsvError
from patients.report_import import import_reports, preview
from patients.reports import DEFAULT_LANGUAGE

from . import queries, report_figures, report_queries
from .downloads import attachment
from .report_forms import PhraseForm, ReportForm, ReportImportForm

PREVIEW_SALT = "frontend.report-import"
PREVIEW_MAX_AGE = 3600  # seconds a preview may wait for its confirmation


def _import_page(request: HttpRequest, context: dict, status: int = 200) -> HttpResponse:
    context.setdefault("max_mb", MAX_BYTES // (1024 * 1024))
    return render(request, "frontend/report_import.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def report_import(request: HttpRequest) -> HttpResponse:
    if not report_queries.import_teams(request.user).exists():
        raise PermissionDenied("Only clinicians and team admins can import radiology reports.")
    if request.method == "POST" and "payload" in request.POST:
        return _confirm_import(request)
    form = ReportImportForm(request.POST or None, request.FILES or None, user=request.user)
    if request.method == "GET":
        return _import_page(request, {"form": form})
    if not form.is_valid():
        return _import_page(request, {"form": form}, status=400)
    upload = form.cleaned_data["file"]
    if upload.size > MAX_BYTES:
        form.add_error("file", f"The file is larger than {MAX_BYTES // (1024 * 1024)} MB; split it into smaller files.")
        return _import_page(request, {"form": form}, status=400)
    data = upload.read()
    team, language = form.cleaned_data["team"], form.cleaned_data["language"]
    try:
        outcome = preview(team, data, language)
    except CsvError as exc:
        form.add_error("file", f"{upload.name}: {exc}")
        return _import_page(request, {"form": form}, status=400)
    payload = signing.dumps(
        {"team": team.pk, "language": language, "name": upload.name, "data": base64.b64encode(data).decode()},
        salt=PREVIEW_SALT,
        compress=True,
    )
    context = {"outcome": outcome, "team": team, "payload": payload, "file_name": upload.name}
    return _import_page(request, context)


def _confirm_import(request: HttpRequest) -> HttpResponse:
    try:
        payload = signing.loads(request.POST["payload"], salt=PREVIEW_SALT, max_age=PREVIEW_MAX_AGE)
    except signing.SignatureExpired:
        messages.warning(request, "The preview is more than an hour old: upload the file again.")
        return redirect("report-import")
    except signing.BadSignature:
        return HttpResponseBadRequest("The preview was altered or damaged: upload the file again.")
    team = report_queries.import_team(request.user, payload.get("team"))
    data = base64.b64decode(payload["data"])
    try:
        outcome = import_reports(team, data, user=request.user, source=ReportSource.CSV, language=payload["language"])
    except CsvError as exc:  # the file was readable at the preview; this is a safety net
        messages.error(request, f"{payload.get('name', 'The file')}: {exc}")
        return redirect("report-import")
    summary = f"{outcome.counts['saved']} reports saved from {payload.get('name', 'a CSV file')}"
    record(request, AuditAction.UPLOAD, None, team=team, summary=summary)
    return _import_page(request, {"outcome": outcome, "team": team, "file_name": payload.get("name", "")})


@login_required
@require_POST
def add_report(request: HttpRequest, study_id: int) -> HttpResponse:
    study = report_queries.writable_study(request.user, study_id)
    form = ReportForm(request.POST)
    target = reverse("patient-detail", args=[study.patient_id]) + f"#study-{study.pk}"
    if not form.is_valid():
        messages.error(request, f"The report of {study} was not saved: {form.errors['text'][0]}")
        return redirect(target)
    saved = radiology.save_report(study, form.cleaned_data["text"], source=ReportSource.MANUAL, user=request.user)
    if saved.created:
        record(request, AuditAction.CHANGE, saved.report, summary="radiology report added")
        label = saved.report.get_label_display().lower()
        messages.success(request, f"Report of {study} saved ({label}).")
    else:
        messages.info(request, f"This report text is already stored for {study}.")
    return redirect(target)


@login_required
@require_http_methods(["GET", "POST"])
def lexicon(request: HttpRequest, slug: str) -> HttpResponse:
    team = queries.admin_team(request.user, slug)
    language = (request.GET.get("language") or DEFAULT_LANGUAGE).strip().lower()[:8]
    form = PhraseForm(initial={"language": language})
    status = 200
    if request.method == "POST" and request.POST.get("delete"):
        entry = get_object_or_404(ReportPhrase.objects.for_team(team), pk=request.POST["delete"])
        radiology.remove_phrase(entry)
        record(request, AuditAction.CHANGE, None, team=team, summary=f"lexicon: removed {entry.phrase!r}")
        messages.success(request, f"“{entry.phrase}” removed from the lexicon; the team's reports were read again.")
        return redirect(f"{reverse('report-lexicon', args=[team.slug])}?language={entry.language}")
    if request.method == "POST":
        form = PhraseForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                entry = radiology.add_phrase(team, data["phrase"], data["label"], data["language"], user=request.user)
            except radiology.LexiconError as exc:
                form.add_error("phrase", str(exc))
            else:
                summary = f"lexicon: {entry.phrase!r} = {entry.label}"
                record(request, AuditAction.CHANGE, None, team=team, summary=summary)
                messages.success(
                    request,
                    f"“{entry.phrase}” now reads as {PhraseLabel(entry.label).label.lower()}; "
                    "the team's reports were read again.",
                )
                return redirect(f"{reverse('report-lexicon', args=[team.slug])}?language={entry.language}")
        status = 400
    context = {
        "team": team,
        "language": language,
        "languages": sorted({DEFAULT_LANGUAGE, language, *radiology.team_languages(team)}),
        "rows": radiology.lexicon_rows(team, language),
        "form": form,
    }
    return render(request, "frontend/lexicon.html", context, status=status)


def _int_or_none(raw: str | None) -> int | None:
    if raw in (None, ""):
        return None
    return int(raw)


@login_required
@require_GET
def agreement(request: HttpRequest) -> HttpResponse:
    try:
        cohort_id = _int_or_none(request.GET.get("cohort"))
    except ValueError:
        return HttpResponseBadRequest("cohort must be a cohort id (a whole number).")
    scope = report_queries.agreement_scope(request.user, request.GET.get("team", "")[:60], cohort_id)
    items = progression.changes(scope.patients)
    results = progression.agreements(items)
    download = request.GET.get("format", "")
    if download in ("csv", "pairs"):
        body = progression.agreement_csv(results) if download == "csv" else progression.changes_csv(items)
        name = "agreement" if download == "csv" else "progression-pairs"
        record(request, AuditAction.EXPORT, None, team=scope.team, summary=f"{name}.csv of {scope.title}")
        return attachment(body, f"{name}.csv")
    context = {
        "scope": scope,
        "changes": items,
        "results": results,
        "kappa_figure": report_figures.kappa_forest(results),
        "changes_figure": report_figures.change_scatter(items),
        "query": request.GET.urlencode(),
    }
    return render(request, "frontend/agreement.html", context)
