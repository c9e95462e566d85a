"""REST API for radiology reports (registered on covidsite.api.router).

`GET /api/reports/?study=<id>` lists the reports of the user's teams; `POST /api/reports/` stores one
report of a study (clinicians and admins of its team); `POST /api/reports/import/` imports a CSV file
(multipart: file, team, language, dry_run) and answers row by row what was saved, what was already
stored and what matched no study, with the reason. With dry_run nothing is saved.
"""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from covidsite.api import router

from .choices import WRITE_ROLES, ReportSource
from .models import RadiologyReport, Study
from .permissions import writable_team, writes_anywhere
from .radiology import save_report
from .report_csv import MAX_BYTES, CsvError
from .report_import import ImportOutcome, import_reports, preview
from .serializers import RadiologyReportSerializer, ReportImportRequestSerializer


def _study_param(request: Request) -> int | None:
    """The optional `?study=` filter; a malformed one is a 400 that names it."""
    raw = request.query_params.get("study")
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValidationError({"study": [f"must be an integer id, got {raw!r}"]}) from None


def outcome_data(outcome: ImportOutcome) -> dict:
    """An import's result as JSON: file facts, counts per status, and every row with its status and reason."""
    return {
        "saved": outcome.saved,
        "encoding": outcome.parsed.encoding,
        "delimiter": outcome.parsed.delimiter,
        "columns": outcome.parsed.columns,
        "counts": outcome.counts,
        "rows": [
            {
                "line": item.row.line,
                "patient": item.row.patient,
                "accession": item.row.accession,
                "study_date": item.row.date_text,
                "status": item.status,
                "reason": item.reason,
                "study": item.study.pk if item.study else None,
                "label": item.extraction.label if item.extraction else None,
                "phrase": item.extraction.phrase if item.extraction else None,
                "span_start": item.extraction.start if item.extraction else None,
                "span_end": item.extraction.end if item.extraction else None,
                "report": item.report_id,
            }
            for item in outcome.rows
        ],
    }


@extend_schema_view(list=extend_schema(parameters=[OpenApiParameter("study", int, description="study id")]))
class RadiologyReportViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """Radiology reports of the user's teams, newest first; create one per study, or import a CSV file."""

    serializer_class = RadiologyReportSerializer
    queryset = RadiologyReport.objects.none()  # the real one is get_queryset's, scoped to the user
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    def get_queryset(self) -> QuerySet[RadiologyReport]:
        queryset = RadiologyReport.objects.for_user(self.request.user).select_related("created_by")
        study = _study_param(self.request)
        if study is not None:
            queryset = queryset.filter(study_id=study)
        return queryset.order_by("-created", "-id")

    def create(self, request: Request, *args, **kwargs) -> Response:
        form = RadiologyReportSerializer(data=request.data)
        # Only the user's studies exist here: another team's study is a 404, like a missing one.
        form.fields["study"].queryset = Study.objects.for_user(request.user)
        if not form.is_valid():
            if any(getattr(e, "code", "") == "does_not_exist" for e in form.errors.get("study", [])):
                raise NotFound(f"no study {request.data.get('study')!r} in your teams")
            raise ValidationError(form.errors)
        study: Study = form.validated_data["study"]
        if not Study.objects.for_user(request.user, WRITE_ROLES).filter(pk=study.pk).exists():
            raise PermissionDenied("only clinicians and team admins may add radiology reports")
        try:
            saved = save_report(
                study,
                form.validated_data["text"],
                source=ReportSource.API,
                user=request.user,
                report_date=form.validated_data.get("report_date"),
                language=form.validated_data.get("language") or "en",
            )
        except ValueError as exc:
            raise ValidationError({"text": [str(exc)]}) from None
        code = status.HTTP_201_CREATED if saved.created else status.HTTP_200_OK
        return Response(RadiologyReportSerializer(saved.report).data, status=code)

    @extend_schema(
        request={"multipart/form-data": ReportImportRequestSerializer},
        responses={200: dict, 201: dict},
        description="Import a CSV of reports; with dry_run=true only preview. 201 when saved, 200 for a dry run.",
    )
    @action(detail=False, methods=["post"], url_path="import", parser_classes=[MultiPartParser, FormParser])
    def import_csv(self, request: Request) -> Response:
        if not writes_anywhere(request.user):  # refuse before reading what was sent
            raise PermissionDenied("only clinicians and team admins may add radiology reports")
        form = ReportImportRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        team = writable_team(request.user, form.validated_data.get("team") or None, action="add radiology reports")
        upload = form.validated_data["file"]
        if upload.size > MAX_BYTES:
            raise ValidationError({"file": [f"larger than {MAX_BYTES // (1024 * 1024)} MB; split it"]})
        data = upload.read()
        language = form.validated_data["language"].lower()
        try:
            if form.validated_data["dry_run"]:
                return Response(outcome_data(preview(team, data, language)), status=status.HTTP_200_OK)
            outcome = import_reports(team, data, user=request.user, source=ReportSource.CSV, language=language)
        except CsvError as exc:
            raise ValidationError({"file": [str(exc)]}) from None
        return Response(outcome_data(outcome), status=status.HTTP_201_CREATED)


router.register("reports", RadiologyReportViewSet, basename="report")
