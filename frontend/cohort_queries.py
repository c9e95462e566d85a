"""Cohort and severity-model lookups for the pages, scoped to the requesting user's teams.

Another team's cohort or model is a 404; a member without the needed role gets PermissionDenied (403).
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.shortcuts import get_object_or_404

from analysis.models import SeverityModel
from patients.choices import ADMIN_ROLES, WRITE_ROLES
from patients.models import Cohort, Team, teams_of


def cohort_list(user) -> QuerySet[Cohort]:
    """The user's teams' cohorts with their member counts, in one query."""
    return (
        Cohort.objects.for_user(user)
        .select_related("team")
        .annotate(member_count=Count("patients", distinct=True))
        .order_by("team__name", "name")
    )


def admin_teams(user) -> QuerySet[Team]:
    """Teams where the user may create cohorts and fit or activate models."""
    return teams_of(user, ADMIN_ROLES).order_by("name")


def cohort(user, cohort_id: int) -> Cohort:
    """One of the user's teams' cohorts; else 404."""
    return get_object_or_404(Cohort.objects.for_user(user).select_related("team"), pk=cohort_id)


def cohort_for_writer(user, cohort_id: int) -> Cohort:
    """A cohort whose severity labels the user may record (clinicians and admins); 404 / 403 otherwise."""
    found = cohort(user, cohort_id)
    if not teams_of(user, WRITE_ROLES).filter(pk=found.team_id).exists():
        raise PermissionDenied("Only clinicians and team admins can record clinical severity.")
    return found


def cohort_for_admin(user, cohort_id: int) -> Cohort:
    """A cohort the user may fit models on (team admins); 404 / 403 otherwise."""
    found = cohort(user, cohort_id)
    if not teams_of(user, ADMIN_ROLES).filter(pk=found.team_id).exists():
        raise PermissionDenied("Only team admins can change cohorts and fit severity models.")
    return found


def severity_model_for_admin(user, model_id: int) -> SeverityModel:
    """A severity model the user may make active (team admins); 404 / 403 otherwise."""
    found = get_object_or_404(SeverityModel.objects.for_user(user).select_related("team", "cohort"), pk=model_id)
    if not teams_of(user, ADMIN_ROLES).filter(pk=found.team_id).exists():
        raise PermissionDenied("Only team admins can choose the active severity model.")
    return found


def roles_in(user, team_id: int) -> dict[str, bool]:
    """What the page offers: `can_write` (record labels) and `can_admin` (fit, activate)."""
    return {
        "can_write": teams_of(user, WRITE_ROLES).filter(pk=team_id).exists(),
        "can_admin": teams_of(user, ADMIN_ROLES).filter(pk=team_id).exists(),
    }


def cohort_page(user, cohort_id: int) -> dict:
    """Everything the cohort page shows: members' studies with bio-markers and labels, the latest fit's
    models (Table 2) with their ROC curves, box plots of POI and iHU by group, and the team's active model."""
    from analysis.severity import (
        active_model,
        cohort_scans,
        feature_set_name,
        group_values,
        latest_fit,
        training_scans,
    )
    from analysis.stats.severity import MIN_PER_CLASS

    from . import cohort_figures

    found = cohort(user, cohort_id)
    scans = cohort_scans(found)
    members = list(found.patients.order_by("identifier"))
    with_studies = {s.patient.pk for s in scans}
    training = training_scans(scans)
    models = latest_fit(found)
    for model in models:
        model.label = feature_set_name(tuple(model.features))
    groups = [group_values(scans, feature) for feature in ("poi", "ihu")]
    return {
        "cohort": found,
        "scans": scans,
        "members": members,
        "without_studies": [p for p in members if p.pk not in with_studies],
        "n_severe": sum(1 for s in training if s.label == "severe"),
        "n_non_severe": sum(1 for s in training if s.label == "non_severe"),
        "min_per_class": MIN_PER_CLASS,
        "models": models,
        "active": active_model(found.team_id),
        "roc": cohort_figures.roc_curves(models),
        "boxes": [
            {"id": f"box-{g.feature}", "script_id": f"box-{g.feature}-data", "figure": figure, "group": g}
            for g in groups
            if (figure := cohort_figures.group_box_plot(g)) is not None
        ],
        **roles_in(user, found.team_id),
    }
