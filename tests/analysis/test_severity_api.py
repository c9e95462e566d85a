"""The cohorts and severity-models API: scoping, who may fit and activate, refusals with the reason."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from analysis.models import SeverityModel
from analysis.severity import fit_cohort
from analysis.stats.severity import MIN_PER_CLASS

from .severity_cohort import build_cohort


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def cohort(team_a):
    return build_cohort(team_a, n_per_class=6)


def test_team_admin_fits_and_activates_through_the_api(cohort, team_admin):
    client = api(team_admin)
    fitted = client.post(f"/api/cohorts/{cohort.pk}/fit/")
    assert fitted.status_code == 201
    names = [m["name"] for m in fitted.json()["models"]]
    assert names == ["ICU 2026: POI", "ICU 2026: iHU", "ICU 2026: POI + iHU"]
    assert [s["name"] for s in fitted.json()["skipped"]] == ["Corona score", "CT severity score"]
    poi = fitted.json()["models"][0]
    assert poi["created_by"] == team_admin.username
    assert set(poi["metrics"]) >= {"auc", "auc_ci", "cutoff_probability", "sensitivity", "specificity", "roc"}

    listed = client.get("/api/severity-models/", {"cohort": cohort.pk}).json()["results"]
    assert len(listed) == 3
    activated = client.post(f"/api/severity-models/{poi['id']}/activate/")
    assert activated.status_code == 200
    assert activated.json()["is_active"] is True
    assert SeverityModel.objects.get(is_active=True).pk == poi["id"]


@pytest.mark.parametrize("actor", ["viewer", "clinician"])
def test_other_members_cannot_fit_or_activate(actor, request, cohort, team_admin):
    model = fit_cohort(cohort, team_admin).models[0]
    client = api(request.getfixturevalue(actor))
    assert client.get(f"/api/cohorts/{cohort.pk}/").status_code == 200
    assert client.post(f"/api/cohorts/{cohort.pk}/fit/").status_code == 403
    assert client.post(f"/api/severity-models/{model.pk}/activate/").status_code == 403
    assert SeverityModel.objects.count() == 3
    assert not SeverityModel.objects.filter(is_active=True).exists()


def test_another_teams_cohorts_and_models_are_not_there(cohort, team_admin, outsider):
    model = fit_cohort(cohort, team_admin).models[0]
    client = api(outsider)
    assert client.get("/api/cohorts/").json()["results"] == []
    assert client.get("/api/severity-models/").json()["results"] == []
    assert client.post(f"/api/cohorts/{cohort.pk}/fit/").status_code == 404
    assert client.post(f"/api/severity-models/{model.pk}/activate/").status_code == 404


def test_fitting_a_too_small_cohort_is_a_400_with_the_counts(team_a, team_admin):
    small = build_cohort(team_a, name="Pilot", n_per_class=MIN_PER_CLASS - 1, prefix="P")
    response = api(team_admin).post(f"/api/cohorts/{small.pk}/fit/")
    assert response.status_code == 400
    assert response.json()["detail"] == (
        f"too few scans: {MIN_PER_CLASS - 1} severe and {MIN_PER_CLASS - 1} non-severe; "
        f"at least {MIN_PER_CLASS} of each class are needed"
    )
    assert api(team_admin).get("/api/severity-models/", {"cohort": "x"}).status_code == 400
