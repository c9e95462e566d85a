"""Downloads of an analysis for other systems (DICOM SEG and SR, CSV, NIfTI label maps) and sending it to the PACS.

The views validate and call `analysis.run_exports` or `analysis.pacs`; another team's run is a 404, a
run that cannot be exported (not finished, NIfTI source for a DICOM export) a 409 that says why, and a
viewer asking to send to the PACS a 403.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_GET, require_POST

from analysis.export import ExportError
from analysis.models import AnalysisRun
from analysis.pacs import PacsError, send_run
from analysis.run_exports import ExportKind, export_run, scoped_run
from audit.choices import AuditAction
from audit.log import record
from patients.choices import WRITE_ROLES

from .downloads import attachment


@login_required
@require_GET
def run_export(request: HttpRequest, run_id: int, kind: str) -> HttpResponse:
    if kind not in ExportKind.values:
        raise Http404(f"no export called {kind!r}")
    run = scoped_run(request.user, run_id)
    if run is None:
        raise Http404("no such analysis")
    try:
        exported = export_run(run, kind)
    except ExportError as exc:
        return HttpResponse(str(exc), status=409, content_type="text/plain; charset=utf-8")
    record(request, AuditAction.EXPORT, run, summary=f"{ExportKind(kind).label} ({exported.filename})")
    return attachment(exported.content, exported.filename, exported.content_type)


@login_required
@require_POST
def run_send_to_pacs(request: HttpRequest, run_id: int) -> HttpResponse:
    run = scoped_run(request.user, run_id)
    if run is None:
        raise Http404("no such analysis")
    if not AnalysisRun.objects.for_user(request.user, WRITE_ROLES).filter(pk=run.pk).exists():
        raise PermissionDenied("only clinicians and admins of the team may send results to the PACS")
    try:
        sent = send_run(run)
    except (PacsError, ExportError) as exc:
        messages.error(request, f"Nothing was sent to the PACS: {exc}")
    else:
        record(request, AuditAction.EXPORT, run, summary=f"sent to the PACS: {', '.join(sent)}")
        messages.success(request, f"Sent to the PACS: {', '.join(sent)}.")
    return redirect("series-detail", run.series_id)
