"""The analyses API: team scoping, nested results, polling fields, retry permissions, query counts.

`clinician`, `colleague`, `team_admin` and `viewer` share team A; `outsider` is a clinician of team B.
"""

from __future__ import annotations

import itertools

import pytest
from rest_framework.test import APIClient

from analysis.choices import OpacityKind, Region, RunStatus
from analysis.execute import execute_run
from analysis.models import AnalysisRun, Opacity, RegionMeasurement
from analysis.pipeline.errors import NO_LUNGS_MESSAGE
from analysis.pipeline.run import run_pipeline
from analysis.runs import queue_analysis
from patients.choices import SeriesStatus
from patients.models import Patient, Series, Study

_uid = itertools.count(1)


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def make_run(team, *, status: str = RunStatus.SUCCEEDED, opacities: int = 2, error: str = "") -> AnalysisRun:
    """A run with nine region rows and `opacities` opacity rows, written directly (no pipeline)."""
    number = next(_uid)
    patient = Patient.objects.create(team=team, identifier=f"P-{number:04d}")
    study = Study.objects.create(patient=patient, study_instance_uid=f"1.2.826.0.1.{number}")
    series = Series.objects.create(
        study=study, series_instance_uid=f"1.2.826.0.2.{number}", slice_count=30, status=SeriesStatus.READY
    )
    succeeded = status == RunStatus.SUCCEEDED
    run = AnalysisRun.objects.create(
        series=series,
        pipeline_version="0.1.0",
        status=status,
        poi=0.05 * number,
        error=error,
        progress=100,
        corona_score_ml=100.0 * number if succeeded else None,
        positive_ratio=0.3 if succeeded else None,
    )
    RegionMeasurement.objects.bulk_create(
        RegionMeasurement(
            run=run,
            region=region,
            lung_volume_ml=4000.0,
            infection_volume_ml=200.0,
            ggo_volume_ml=150.0,
            consolidation_volume_ml=50.0,
            poi=0.05,
            ihu=-500.0,
        )
        for region in Region.values
    )
    Opacity.objects.bulk_create(
        Opacity(
            run=run,
            index=i + 1,
            kind=OpacityKind.GGO,
            volume_ml=10.0 - i,
            longest_diameter_mm=30.0,
            longest_axial_diameter_mm=25.0,
            mean_hu=-550.0,
            centroid_voxel=[5, 60, 40],
            centroid_mm=[-80.0, 10.0, 50.0],
            slice_first=3,
            slice_last=7,
            zone=Region.RIGHT_LOWER,
        )
        for i in range(opacities)
    )
    return run


def test_clinicians_see_only_their_teams_runs(clinician, team_a, team_b):
    mine = make_run(team_a)
    theirs = make_run(team_b)

    response = api(clinician).get("/api/analyses/")

    assert response.status_code == 200
    assert [r["id"] for r in response.json()["results"]] == [mine.pk]
    assert api(clinician).get(f"/api/analyses/{theirs.pk}/").status_code == 404


def test_runs_can_be_listed_for_one_series_or_status(viewer, team_a):
    first = make_run(team_a)
    failed = make_run(team_a, status=RunStatus.FAILED, error=NO_LUNGS_MESSAGE)
    client = api(viewer)

    by_series = client.get("/api/analyses/", {"series": first.series_id}).json()["results"]
    by_status = client.get("/api/analyses/", {"status": "failed"}).json()["results"]

    assert [r["id"] for r in by_series] == [first.pk]
    assert [(r["id"], r["error"]) for r in by_status] == [(failed.pk, NO_LUNGS_MESSAGE)]
    bad = client.get("/api/analyses/", {"series": "abc"})
    assert (bad.status_code, bad.json()) == (400, {"series": ["must be an integer id, got 'abc'"]})
    assert client.get("/api/analyses/", {"status": "done"}).status_code == 400


def test_anonymous_requests_are_refused(team_a):
    make_run(team_a)
    assert APIClient().get("/api/analyses/").status_code in (401, 403)


def test_a_run_shows_the_pipelines_results_with_regions_and_opacities(clinician, phantom_series):
    run = queue_analysis(phantom_series)
    execute_run(run.pk, pipeline=run_pipeline)
    run.refresh_from_db()

    body = api(clinician).get(f"/api/analyses/{run.pk}/").json()

    assert {k: body[k] for k in ("status", "stage", "progress", "error", "poi", "ihu", "series")} == {
        "status": "succeeded",
        "stage": "",
        "progress": 100,
        "error": "",
        "poi": run.poi,
        "ihu": run.ihu,
        "series": phantom_series.pk,
    }
    assert body["patient"] == phantom_series.study.patient_id
    assert [r["region"] for r in body["regions"]] == [m.region for m in run.regions.order_by("id")]
    assert (body["region_scheme"]["kind"], body["region_scheme"]["lobes"]) == ("zones", False)
    both = next(r for r in body["regions"] if r["region"] == "both")
    assert (both["poi"], both["lung_volume_ml"]) == (run.poi, run.lung_volume_ml)
    volumes = [o["volume_ml"] for o in body["opacities"]]
    assert volumes == sorted(volumes, reverse=True)
    assert len(volumes) == run.opacities.count()
    assert len(body["slice_metrics"]) == phantom_series.slice_count
    assert [m["stage"] for m in body["models_used"]] == ["lungs", "infection"]
    # Server-side details stay server-side.
    assert not {"traceback", "claim", "lungs_file", "infection_file"} & set(body)


def test_the_list_leaves_per_slice_data_to_the_detail_view(clinician, team_a):
    make_run(team_a)
    [row] = api(clinician).get("/api/analyses/").json()["results"]
    assert "slice_metrics" not in row
    assert len(row["regions"]) == len(Region.values)
    assert len(row["opacities"]) == 2


def test_listing_runs_costs_the_same_queries_for_two_or_twelve_runs(clinician, team_a, django_assert_num_queries):
    client = api(clinician)
    for _ in range(2):
        make_run(team_a)
    # count, runs (with series), regions, opacities, and the team's active severity model (once per team)
    with django_assert_num_queries(5) as two:
        assert len(client.get("/api/analyses/").json()["results"]) == 2
    for _ in range(10):
        make_run(team_a, opacities=5)
    with django_assert_num_queries(len(two.captured_queries)):
        assert len(client.get("/api/analyses/").json()["results"]) == 12


@pytest.mark.parametrize("actor", ["clinician", "team_admin"])
def test_clinicians_and_admins_can_retry_a_failed_run(actor, request, team_a, django_capture_on_commit_callbacks):
    user = request.getfixturevalue(actor)
    run = make_run(team_a, status=RunStatus.FAILED, error=NO_LUNGS_MESSAGE)

    with django_capture_on_commit_callbacks(execute=False) as enqueued:
        response = api(user).post(f"/api/analyses/{run.pk}/retry/")

    assert response.status_code == 202
    assert (response.json()["status"], response.json()["error"]) == ("queued", "")
    assert AnalysisRun.objects.get(pk=run.pk).status == RunStatus.QUEUED
    # The old results are gone with the retry, and the task is sent once the transaction commits.
    assert not RegionMeasurement.objects.filter(run=run).exists()
    assert len(enqueued) == 1


def test_a_viewer_cannot_retry(viewer, team_a):
    run = make_run(team_a, status=RunStatus.FAILED, error=NO_LUNGS_MESSAGE)

    response = api(viewer).post(f"/api/analyses/{run.pk}/retry/")

    assert response.status_code == 403
    assert response.json()["detail"] == "only clinicians and admins of the team may retry an analysis"
    assert AnalysisRun.objects.get(pk=run.pk).status == RunStatus.FAILED


def test_an_outsider_cannot_see_or_retry_another_teams_run(outsider, team_a):
    run = make_run(team_a, status=RunStatus.FAILED, error=NO_LUNGS_MESSAGE)

    assert api(outsider).post(f"/api/analyses/{run.pk}/retry/").status_code == 404
    assert AnalysisRun.objects.get(pk=run.pk).status == RunStatus.FAILED


def test_retrying_a_succeeded_run_is_a_conflict(colleague, team_a):
    run = make_run(team_a)

    response = api(colleague).post(f"/api/analyses/{run.pk}/retry/")

    assert response.status_code == 409
    assert response.json() == {
        "detail": f"analysis {run.pk} is succeeded: only failed or abandoned analyses can be retried"
    }
    assert AnalysisRun.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED


def test_the_workers_pipeline_stores_the_corona_score_and_the_api_relates_it_to_the_first_scan(
    clinician, phantom_series
):
    from analysis.execute import default_pipeline

    first = queue_analysis(phantom_series)
    execute_run(first.pk, pipeline=default_pipeline)
    first.refresh_from_db()
    assert first.status == RunStatus.SUCCEEDED
    assert first.corona_score_ml is not None
    assert 0.0 <= first.positive_ratio <= 1.0
    assert first.heatmap_file.endswith(".npz")
    assert [m["stage"] for m in first.models_used] == ["lungs", "infection", "classifier"]
    probabilities = [s["abnormal_probability"] for s in first.slice_metrics if s["lung_area_mm2"] > 0]
    assert probabilities
    assert all(0.0 <= p <= 1.0 for p in probabilities)

    # A later scan of the same patient, with twice the score, reads 2.0 relative to the first.
    later_study = Study.objects.create(
        patient=phantom_series.study.patient,
        study_instance_uid="1.2.826.0.1.999",
        study_date=phantom_series.study.study_date.replace(month=phantom_series.study.study_date.month + 1),
    )
    later_series = Series.objects.create(
        study=later_study, series_instance_uid="1.2.826.0.2.999", slice_count=30, status=SeriesStatus.READY
    )
    later = AnalysisRun.objects.create(
        series=later_series,
        pipeline_version="0.1.0",
        status=RunStatus.SUCCEEDED,
        progress=100,
        corona_score_ml=2 * first.corona_score_ml,
        positive_ratio=0.9,
    )

    body = api(clinician).get(f"/api/analyses/{first.pk}/").json()
    assert body["corona_score_ml"] == pytest.approx(first.corona_score_ml)
    assert body["relative_corona_score"] == pytest.approx(1.0)
    assert body["suspected"] == (first.positive_ratio >= phantom_series.study.patient.team.suspected_ratio_threshold)
    later_body = api(clinician).get(f"/api/analyses/{later.pk}/").json()
    assert later_body["relative_corona_score"] == pytest.approx(2.0)
    assert later_body["suspected"] is True
