"""REST API for analysis runs (registered on covidsite.api.router).

`GET /api/analyses/?series=<id>&status=<status>` lists the runs of the user's teams (newest first);
`GET /api/analyses/<id>/` adds per-slice metrics; `POST /api/analyses/<id>/retry/` queues a failed
or abandoned run again (clinicians and admins of its team); `GET /api/analyses/<id>/export/<kind>/`
downloads it as DICOM SEG or SR, CSV or a NIfTI label map (`analysis.run_exports`). The queryset starts from
`AnalysisRun.objects.for_user`, so another team's runs are simply not there (404).
"""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from audit.choices import AuditAction
from audit.log import record
from covidsite.api import router
from patients.choices import WRITE_ROLES
from patients.dicomweb import AnyAccept

from .choices import RunStatus
from .export import ExportError
from .models import AnalysisRun, Opacity
from .run_exports import ExportKind, export_run
from .runs import NotRetryable, retry_run, with_first_corona_score
from .serializers import AnalysisRunDetailSerializer, AnalysisRunSerializer


def _series_param(request: Request) -> int | None:
    raw = request.query_params.get("series")
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValidationError({"series": [f"must be an integer id, got {raw!r}"]}) from None


def _status_param(request: Request) -> str | None:
    raw = request.query_params.get("status")
    if raw in (None, ""):
        return None
    if raw not in RunStatus.values:
        raise ValidationError({"status": [f"must be one of {', '.join(RunStatus.values)}, got {raw!r}"]})
    return raw


@extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter("series", int, description="series id"),
            OpenApiParameter("status", str, enum=RunStatus.values, description="run status"),
        ]
    )
)
class AnalysisRunViewSet(viewsets.ReadOnlyModelViewSet):
    """Analysis runs of the user's teams with their region measurements and opacities."""

    def get_serializer_class(self):
        return AnalysisRunDetailSerializer if self.action != "list" else AnalysisRunSerializer

    def get_queryset(self) -> QuerySet[AnalysisRun]:
        queryset = (
            with_first_corona_score(AnalysisRun.objects.for_user(self.request.user))
            .select_related("series__study__patient__team")
            .prefetch_related(
                "regions", Prefetch("opacities", queryset=Opacity.objects.order_by("-volume_ml", "index"))
            )
        )
        if self.action == "list":
            queryset = queryset.defer("slice_metrics", "traceback", "timings", "models_used")
            series = _series_param(self.request)
            if series is not None:
                queryset = queryset.filter(series_id=series)
            run_status = _status_param(self.request)
            if run_status is not None:
                queryset = queryset.filter(status=run_status)
        return queryset.order_by("-created", "-id")

    @extend_schema(request=None, responses={202: AnalysisRunDetailSerializer})
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str | None = None) -> Response:
        """Queue a failed or abandoned run again: 403 for viewers, 409 when there is nothing to retry."""
        run = self.get_object()
        if not AnalysisRun.objects.for_user(request.user, WRITE_ROLES).filter(pk=run.pk).exists():
            raise PermissionDenied("only clinicians and admins of the team may retry an analysis")
        try:
            run = retry_run(run)
        except NotRetryable as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(
            AnalysisRunDetailSerializer(run, context=self.get_serializer_context()).data,
            status=status.HTTP_202_ACCEPTED,
        )

    @extend_schema(
        parameters=[OpenApiParameter("kind", str, OpenApiParameter.PATH, enum=ExportKind.values)],
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY, 409: OpenApiTypes.STR},
    )
    @action(detail=True, methods=["get"], url_path=r"export/(?P<kind>[a-z-]+)", content_negotiation_class=AnyAccept)
    def export(self, request: Request, pk: str | None = None, kind: str = "") -> HttpResponse:
        """The run as DICOM SEG, DICOM SR, CSV or a NIfTI label map (`kind`); 409 says why one cannot be made."""
        run = self.get_object()
        if kind not in ExportKind.values:
            raise NotFound(f"no export called {kind!r}; choose one of {', '.join(ExportKind.values)}")
        try:
            exported = export_run(run, kind)
        except ExportError as exc:
            return HttpResponse(str(exc), status=status.HTTP_409_CONFLICT, content_type="text/plain; charset=utf-8")
        record(request, AuditAction.EXPORT, run, summary=f"{ExportKind(kind).label} ({exported.filename}) via API")
        response = HttpResponse(exported.content, content_type=exported.content_type)
        response["Content-Disposition"] = f'attachment; filename="{exported.filename}"'
        return response


router.register("analyses", AnalysisRunViewSet, basename="analysis")
