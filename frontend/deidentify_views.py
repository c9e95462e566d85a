"""Download of a de-identified copy of a series (clinicians and team admins; audited)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpRequest
from django.views.decorators.http import require_GET

from audit.choices import AuditAction
from audit.log import record
from patients.choices import WRITE_ROLES
from patients.deidentify import team_key, write_deidentified_zip
from patients.models import Series

from . import queries

# Zips up to this size stay in memory; larger ones spill to a temporary file.
IN_MEMORY_BYTES = 32 * 1024 * 1024


@login_required
@require_GET
def deidentified_series(request: HttpRequest, series_id: int) -> FileResponse:
    series = queries.series_detail(request.user, series_id)
    team = series.study.patient.team
    if not Series.objects.for_user(request.user, WRITE_ROLES).filter(pk=series.pk).exists():
        raise PermissionDenied("Only clinicians and team admins can export scans.")
    files = [
        Path(settings.MEDIA_ROOT) / name for name in series.instances.order_by("index").values_list("file", flat=True)
    ]
    if not files:
        raise Http404("This series has no stored DICOM files to export (a NIfTI upload holds no DICOM).")
    stream = tempfile.SpooledTemporaryFile(max_size=IN_MEMORY_BYTES)  # noqa: SIM115 (FileResponse closes it)
    count = write_deidentified_zip(files, team_key(settings.SECRET_KEY, team.slug), stream)
    stream.seek(0)
    record(request, AuditAction.EXPORT, series, summary=f"de-identified DICOM, {count} files")
    response = FileResponse(stream, as_attachment=True, filename=f"series-{series.pk}-deidentified.zip")
    response["Cache-Control"] = "no-store"
    return response
