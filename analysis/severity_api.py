"""REST API for cohorts and severity models (registered on covidsite.api.router).

`GET /api/cohorts/` and `GET /api/severity-models/?cohort=<id>` list the user's teams' records;
`POST /api/cohorts/<id>/fit/` fits every feature set (team admins; 400 with the reason when a class has
too few scans) and `POST /api/severity-models/<id>/activate/` makes a model the team's active one (team
admins). Querysets start from `for_user`, so another team's records are a 404; other members get a 403.
"""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from covidsite.api import router
from patients.choices import ADMIN_ROLES
from patients.models import Cohort, teams_of

from .models import SeverityModel
from .serializers import CohortSerializer, SeverityModelSerializer
from .severity import activate as activate_model
from .severity import fit_cohort
from .stats.severity import SeverityFitError


def _require_admin(user, team_id: int, what: str) -> None:
    if not teams_of(user, ADMIN_ROLES).filter(pk=team_id).exists():
        raise PermissionDenied(f"only the team's admins may {what}")


class CohortViewSet(viewsets.ReadOnlyModelViewSet):
    """Cohorts of the user's teams, with their patients' ids."""

    serializer_class = CohortSerializer

    def get_queryset(self) -> QuerySet[Cohort]:
        return Cohort.objects.for_user(self.request.user).prefetch_related("patients").order_by("name", "id")

    @extend_schema(request=None, responses={201: SeverityModelSerializer(many=True)})
    @action(detail=True, methods=["post"])
    def fit(self, request: Request, pk: str | None = None) -> Response:
        """Fit POI, iHU, POI + iHU (and corona / CT severity score where present) on the cohort's scans."""
        cohort = self.get_object()
        _require_admin(request.user, cohort.team_id, "fit severity models")
        try:
            outcome = fit_cohort(cohort, request.user)
        except SeverityFitError as exc:
            raise ValidationError({"detail": str(exc)}) from None
        body = {
            "models": SeverityModelSerializer(outcome.models, many=True).data,
            "skipped": [{"name": name, "reason": reason} for name, reason in outcome.skipped],
        }
        return Response(body, status=status.HTTP_201_CREATED)


@extend_schema_view(list=extend_schema(parameters=[OpenApiParameter("cohort", int, description="cohort id")]))
class SeverityModelViewSet(viewsets.ReadOnlyModelViewSet):
    """Fitted severity models of the user's teams, newest first."""

    serializer_class = SeverityModelSerializer

    def get_queryset(self) -> QuerySet[SeverityModel]:
        queryset = SeverityModel.objects.for_user(self.request.user).select_related("created_by")
        raw = self.request.query_params.get("cohort")
        if self.action == "list" and raw not in (None, ""):
            if not raw.isdigit():
                raise ValidationError({"cohort": [f"must be an integer id, got {raw!r}"]})
            queryset = queryset.filter(cohort_id=int(raw))
        return queryset.order_by("-created", "id")

    @extend_schema(request=None, responses={200: SeverityModelSerializer})
    @action(detail=True, methods=["post"])
    def activate(self, request: Request, pk: str | None = None) -> Response:
        """Make this model the team's active severity model (the previous one stops scoring)."""
        model = self.get_object()
        _require_admin(request.user, model.team_id, "choose the active severity model")
        return Response(SeverityModelSerializer(activate_model(model)).data)


router.register("cohorts", CohortViewSet, basename="cohort")
router.register("severity-models", SeverityModelViewSet, basename="severity-model")
