"""Read-side queries for the report pages (import, lexicon, agreement), each scoped to the user's teams."""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404
from django.shortcuts import get_object_or_404

from patients.choices import WRITE_ROLES
from patients.models import Cohort, Patient, Study, Team, teams_of


def writable_study(user, study_id: int) -> Study:
    """A study the user may add a report to: 404 outside the user's teams, PermissionDenied for viewers."""
    study = get_object_or_404(Study.objects.for_user(user).select_related("patient__team"), pk=study_id)
    if not teams_of(user, WRITE_ROLES).filter(pk=study.patient.team_id).exists():
        raise PermissionDenied("Only clinicians and team admins can add radiology reports.")
    return study


def import_teams(user) -> QuerySet[Team]:
    """Teams whose reports the user may import (clinician or admin)."""
    return teams_of(user, WRITE_ROLES).order_by("name")


def import_team(user, team_id: object) -> Team:
    """A team the user may import into (the id comes back from a signed preview); else 404 / 403."""
    team = teams_of(user).filter(pk=team_id).first() if isinstance(team_id, int) else None
    if team is None:
        raise Http404("No such team among yours.")
    if not import_teams(user).filter(pk=team.pk).exists():
        raise PermissionDenied("Only clinicians and team admins can import radiology reports.")
    return team


@dataclass(frozen=True)
class AgreementScope:
    """Which patients the agreement page compares, and the choices it offers."""

    patients: QuerySet[Patient]
    teams: list[Team]
    cohorts: list[Cohort]
    team: Team | None
    cohort: Cohort | None

    @property
    def title(self) -> str:
        if self.cohort is not None:
            return f"cohort {self.cohort.name} ({self.cohort.team.name})"
        if self.team is not None:
            return self.team.name
        return "all your teams"


def agreement_scope(user, team_slug: str = "", cohort_id: int | None = None) -> AgreementScope:
    """The user's patients, narrowed to one team and/or one cohort of the user's teams (else 404)."""
    teams = list(teams_of(user).order_by("name"))
    patients = Patient.objects.for_user(user)
    team = cohort = None
    if team_slug:
        team = next((t for t in teams if t.slug == team_slug), None)
        if team is None:
            raise Http404("No such team among yours.")
        patients = patients.filter(team=team)
    cohorts = Cohort.objects.for_user(user).select_related("team").order_by("team__name", "name")
    if team is not None:
        cohorts = cohorts.filter(team=team)
    if cohort_id is not None:
        cohort = get_object_or_404(cohorts, pk=cohort_id)
        patients = patients.filter(pk__in=cohort.patients.values("pk"))
    return AgreementScope(patients, teams, list(cohorts), team, cohort)
