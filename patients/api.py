"""REST API for patients, studies, series and uploads (registered on covidsite.api.router).

Every queryset starts from `Model.objects.for_user(request.user)`, so another team's records are
simply not there (404). Uploads call `patients.ingest.ingest_uploaded_files` and nothing else.
"""

from __future__ import annotations

from django.core.files.uploadhandler import TemporaryFileUploadHandler
from django.db.models import QuerySet
from django.http import HttpRequest
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import filters, mixins, status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from audit.api import AuditedRetrieveMixin
from audit.choices import AuditAction
from audit.log import record
from covidsite.api import router

from .ingest import ingest_uploaded_files
from .models import Patient, Series, Study, Upload
from .permissions import writable_team
from .serializers import (
    PatientSerializer,
    SeriesSerializer,
    StudySerializer,
    UploadRequestSerializer,
    UploadSerializer,
)


def _id_param(request: Request, name: str) -> int | None:
    """An optional integer query parameter; a malformed one is a 400 that names it."""
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValidationError({name: [f"must be an integer id, got {raw!r}"]}) from None


class PatientViewSet(AuditedRetrieveMixin, viewsets.ReadOnlyModelViewSet):
    """Patients of the user's teams; `?search=` matches the identifier."""

    serializer_class = PatientSerializer
    filter_backends = [filters.SearchFilter]
    search_fields = ["identifier"]

    def get_queryset(self) -> QuerySet[Patient]:
        return Patient.objects.for_user(self.request.user).select_related("team").order_by("identifier", "id")


@extend_schema_view(list=extend_schema(parameters=[OpenApiParameter("patient", int, description="patient id")]))
class StudyViewSet(AuditedRetrieveMixin, viewsets.ReadOnlyModelViewSet):
    """Studies of the user's teams, optionally of one patient (`?patient=<id>`)."""

    serializer_class = StudySerializer

    def get_queryset(self) -> QuerySet[Study]:
        queryset = Study.objects.for_user(self.request.user).select_related("patient")
        patient = _id_param(self.request, "patient")
        if patient is not None:
            queryset = queryset.filter(patient_id=patient)
        return queryset.order_by("patient__identifier", "study_date", "id")


@extend_schema_view(list=extend_schema(parameters=[OpenApiParameter("study", int, description="study id")]))
class SeriesViewSet(AuditedRetrieveMixin, viewsets.ReadOnlyModelViewSet):
    """Series of the user's teams, optionally of one study (`?study=<id>`)."""

    serializer_class = SeriesSerializer

    def get_queryset(self) -> QuerySet[Series]:
        queryset = Series.objects.for_user(self.request.user)
        study = _id_param(self.request, "study")
        if study is not None:
            queryset = queryset.filter(study_id=study)
        return queryset.order_by("study_id", "series_number", "id")


class UploadViewSet(mixins.CreateModelMixin, mixins.RetrieveModelMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """`POST /api/uploads/` (multipart: files, team, patient_identifier) ingests; GET shows the outcome."""

    serializer_class = UploadSerializer
    parser_classes = [MultiPartParser, FormParser]

    def initialize_request(self, request: HttpRequest, *args, **kwargs) -> Request:
        # A study is hundreds of files: stream every one to disk instead of holding small ones in memory.
        # This must happen before anything (the CSRF check of session authentication) parses the body.
        if request.method == "POST":
            request.upload_handlers = [TemporaryFileUploadHandler(request)]
        return super().initialize_request(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[Upload]:
        return Upload.objects.for_user(self.request.user).select_related("team", "user").order_by("-created", "-id")

    @extend_schema(request={"multipart/form-data": UploadRequestSerializer}, responses={201: UploadSerializer})
    def create(self, request: Request, *args, **kwargs) -> Response:
        form = UploadRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        team = writable_team(request.user, form.validated_data.get("team") or None, action="upload scans")
        upload = ingest_uploaded_files(
            team,
            form.validated_data["files"],
            user=request.user,
            channel="api",
            patient_identifier=form.validated_data.get("patient_identifier") or None,
        )
        summary = f"{upload.accepted_count} files accepted, {upload.refused_count} refused"
        record(request, AuditAction.UPLOAD, upload, summary=summary)
        return Response(UploadSerializer(upload).data, status=status.HTTP_201_CREATED)


router.register("patients", PatientViewSet, basename="patient")
router.register("studies", StudyViewSet, basename="study")
router.register("series", SeriesViewSet, basename="series")
router.register("uploads", UploadViewSet, basename="upload")
