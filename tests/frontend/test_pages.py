"""Server-rendered pages: what each shows, to whom, and in how many queries."""

from __future__ import annotations

from datetime import date

import pytest
from django.urls import reverse

from analysis.choices import RunStatus
from patients.choices import SeriesStatus
from patients.models import HIGHEST_NORMAL_SHARE, LOWEST_PNEUMONIA_SHARE, SUSPECTED_RATIO_THRESHOLD, Upload
from tests.conftest import PASSWORD

from .records import add_results, make_patient, make_run, make_series, make_study

TIMES = "\u00d7"  # the multiplication sign the pages print between dimensions
EN_DASH = "\u2013"


@pytest.fixture
def as_user(client):
    def login(user):
        assert client.login(username=user.username, password=PASSWORD)
        return client

    return login


@pytest.fixture
def ward(team_a, team_b):
    """Two patients in team A (one scanned twice) and one in team B."""
    anna = make_patient(team_a, "A-0001", birth_year=1950)
    first = make_study(anna, date(2026, 1, 3), accession="ACC-1", description="CT chest first")
    second = make_study(anna, date(2026, 1, 17), accession="ACC-2", description="CT chest follow-up")
    old_series = make_series(first, description="Lung 5 mm")
    make_run(old_series, poi=0.30)
    new_series = make_series(second, description="Lung 1 mm", thickness=1.0, slices=320)
    succeeded = make_run(new_series, poi=0.042, ihu=-640.0)
    add_results(succeeded)
    rejected = make_series(
        second,
        description="Scout",
        status=SeriesStatus.REJECTED,
        status_message="only 1 slice: a localiser, not a chest CT",
    )
    failed_series = make_series(second, description="Soft tissue 3 mm", thickness=3.0)
    failed = make_run(failed_series, RunStatus.FAILED, error="The lungs could not be found in this scan.")
    queued_series = make_series(second, description="Bone 2 mm", thickness=2.0)
    running = make_run(queued_series, RunStatus.RUNNING, stage="infection", progress=45)
    ben = make_patient(team_a, "A-0002", birth_year=None)
    bert = make_patient(team_b, "B-0001")
    bert_series = make_series(make_study(bert, date(2026, 2, 1)), description="Other team's scan")
    bert_run = make_run(bert_series, RunStatus.FAILED, error="boom")
    return {
        "anna": anna,
        "ben": ben,
        "bert": bert,
        "succeeded": succeeded,
        "new_series": new_series,
        "old_series": old_series,
        "rejected": rejected,
        "failed": failed,
        "failed_series": failed_series,
        "running": running,
        "running_series": queued_series,
        "bert_series": bert_series,
        "bert_run": bert_run,
    }


def test_anonymous_visitor_is_sent_to_login(client, db):
    response = client.get(reverse("patient-list"))
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))
    page = client.get(reverse("login"))
    assert page.status_code == 200
    assert b'name="password"' in page.content


def test_header_names_the_user_their_team_and_role(as_user, clinician, team_a):
    content = as_user(clinician).get(reverse("patient-list")).content.decode()
    assert "carl-clinician" in content
    assert "Team A · Clinician" in content
    assert "Log out" in content
    assert f'href="{reverse("upload")}"' in content


def test_patient_list_shows_own_team_with_study_count_latest_date_and_latest_poi(as_user, clinician, ward):
    response = as_user(clinician).get(reverse("patient-list"))
    content = response.content.decode()
    assert "A-0001" in content
    assert "A-0002" in content
    assert "B-0001" not in content
    anna = next(p for p in response.context["page"] if p.identifier == "A-0001")
    assert anna.study_count == 2
    assert anna.latest_study_date == date(2026, 1, 17)
    # The latest study's succeeded run wins over the older (higher) one; failed/running runs are ignored.
    assert anna.latest_poi == pytest.approx(0.042)
    assert "4.2 %" in content
    ben = next(p for p in response.context["page"] if p.identifier == "A-0002")
    assert ben.study_count == 0
    assert ben.latest_poi is None


def test_patient_list_search_by_identifier(as_user, clinician, ward):
    response = as_user(clinician).get(reverse("patient-list"), {"q": "0002"})
    identifiers = [p.identifier for p in response.context["page"]]
    assert identifiers == ["A-0002"]
    nothing = as_user(clinician).get(reverse("patient-list"), {"q": "B-0001"})
    assert list(nothing.context["page"]) == []
    assert "No patient matches" in nothing.content.decode()


def test_patient_list_pages_by_fifty_without_n_plus_one(as_user, clinician, team_a, django_assert_max_num_queries):
    for number in range(120):
        patient = make_patient(team_a, f"P-{number:04d}")
        series = make_series(make_study(patient, date(2026, 1, 1 + number % 28)))
        make_run(series, poi=number / 1000)
    client = as_user(clinician)
    # session, user, cohorts for the filter, count, page rows (annotated), the page's runs (sparklines),
    # header memberships: independent of the number of patients.
    with django_assert_max_num_queries(7):
        response = client.get(reverse("patient-list"))
    assert len(response.context["page"].object_list) == 50
    assert response.context["page"].paginator.num_pages == 3
    last = client.get(reverse("patient-list"), {"page": 3})
    assert [p.identifier for p in last.context["page"]][-1] == "P-0119"
    assert len(last.context["page"].object_list) == 20
    assert "Page 3 of 3" in last.content.decode()


def test_patient_page_lists_studies_series_geometry_and_analysis_states(as_user, clinician, ward):
    response = as_user(clinician).get(reverse("patient-detail", args=[ward["anna"].pk]))
    assert response.status_code == 200
    content = response.content.decode()
    for text in (
        "ACC-1",
        "ACC-2",
        "CT chest follow-up",
        "2026-01-17",
        "Lung 1 mm",
        "320",
        "1.00 mm",
        f"0.742 {TIMES} 0.742 mm",
        "only 1 slice: a localiser, not a chest CT",
        "Rejected",
        "4.2 %",
        "-640",
        "The lungs could not be found in this scan.",
        "Running",
        "45 %",
        "Segmenting infection",
    ):
        assert text in content, text
    assert reverse("run-retry", args=[ward["failed"].pk]) in content
    assert reverse("series-detail", args=[ward["new_series"].pk]) in content
    # The course over time: one point per dated study, from its thinnest analysed series.
    poi = response.context["timeline"]["data"][0]
    assert poi["x"] == ["2026-01-03", "2026-01-17"]
    assert poi["y"] == pytest.approx([30.0, 4.2])
    assert poi["customdata"] == ["Lung 5 mm", "Lung 1 mm"]
    assert 'id="timeline-data"' in content


def test_patient_page_queries_do_not_grow_with_studies_and_series(
    as_user, clinician, team_a, django_assert_max_num_queries
):
    patient = make_patient(team_a, "MANY-1")
    for day in range(1, 9):
        study = make_study(patient, date(2026, 3, day))
        for number in range(3):
            make_run(make_series(study, description=f"S{number}"), poi=day / 100)
    client = as_user(clinician)
    # session, user, patient, studies, series, runs, reports, the run of each study, audit event, can_write,
    # header memberships.
    with django_assert_max_num_queries(11):
        response = client.get(reverse("patient-detail", args=[patient.pk]))
    assert response.content.decode().count('class="series-row"') == 24


def test_viewer_sees_the_failure_but_no_retry_button(as_user, viewer, ward):
    content = as_user(viewer).get(reverse("patient-detail", args=[ward["anna"].pk])).content.decode()
    assert "The lungs could not be found in this scan." in content
    assert reverse("run-retry", args=[ward["failed"].pk]) not in content
    assert f'href="{reverse("upload")}"' not in content


def test_other_teams_patient_series_and_status_are_not_found(as_user, clinician, ward):
    client = as_user(clinician)
    assert client.get(reverse("patient-detail", args=[ward["bert"].pk])).status_code == 404
    assert client.get(reverse("series-detail", args=[ward["bert_series"].pk])).status_code == 404
    assert client.get(reverse("series-status", args=[ward["bert_series"].pk])).status_code == 404
    assert client.post(reverse("run-retry", args=[ward["bert_run"].pk])).status_code == 404


def test_series_page_shows_geometry_and_results(as_user, clinician, ward):
    response = as_user(clinician).get(reverse("series-detail", args=[ward["new_series"].pk]))
    content = response.content.decode()
    assert response.status_code == 200
    for text in (
        f"512 {TIMES} 512 {TIMES} 320 slices",
        f"0.742 {TIMES} 0.742 mm",
        "Both lungs",
        "Right lung",
        "Left lower zone",
        "Right middle zone",
        "Ground-glass opacity",
        "Consolidation",
        "12.34",
        "41.5",
        f"8{EN_DASH}14",
        "Right lower zone",
        "lungs-unet",
        "hu-threshold",
        "Segmenting lungs",
        "3.25",
        "9 / 30",
        "Image viewer",
        "not lobes: the pipeline has no lobe model yet",
    ):
        assert text in content, text
    regions = [m.region for m in response.context["results"].regions]
    assert regions == [
        "both",
        "right",
        "left",
        "right_upper",
        "right_middle",
        "right_lower",
        "left_upper",
        "left_middle",
        "left_lower",
    ]
    # Largest opacity first.
    assert [o.index for o in response.context["results"].opacities] == [1, 2]
    # The per-slice profile is a plotly figure drawn by the plotly.js served from static.
    profile = response.context["slice_profile"]
    assert [trace["name"] for trace in profile["data"]] == ["Ground-glass", "Consolidation", "Lung"]
    assert profile["data"][0]["y"][6] == pytest.approx(22.0)  # 2200 mm² at the middle slice, in cm²
    assert 'id="slice-profile-data"' in content
    assert "frontend/vendor/plotly.min.js" in content


def test_series_page_while_running_polls_its_status(as_user, clinician, ward):
    client = as_user(clinician)
    content = client.get(reverse("series-detail", args=[ward["running_series"].pk])).content.decode()
    assert reverse("series-status", args=[ward["running_series"].pk]) in content
    assert "series_status.js" in content
    assert 'id="results"' not in content
    status = client.get(reverse("series-status", args=[ward["running_series"].pk])).json()
    assert status == {
        "status": "running",
        "label": "Running",
        "active": True,
        "stage": "infection",
        "stage_label": "Segmenting infection",
        "progress": 45,
        "error": "",
        "poi": None,
        "ihu": None,
        "run_id": ward["running"].pk,
    }


def test_status_of_a_failed_and_a_never_analysed_series(as_user, clinician, ward):
    client = as_user(clinician)
    failed = client.get(reverse("series-status", args=[ward["failed_series"].pk])).json()
    assert failed["status"] == "failed"
    assert failed["active"] is False
    assert failed["error"] == "The lungs could not be found in this scan."
    never = client.get(reverse("series-status", args=[ward["rejected"].pk])).json()
    assert never["status"] == "none"
    assert never["run_id"] is None
    page = client.get(reverse("series-detail", args=[ward["rejected"].pk])).content.decode()
    assert "This series cannot be analysed: only 1 slice" in page


def test_clinician_retries_a_failed_run_from_the_patient_page(
    as_user, clinician, ward, django_capture_on_commit_callbacks
):
    patient_page = reverse("patient-detail", args=[ward["anna"].pk])
    with django_capture_on_commit_callbacks(execute=False):
        response = as_user(clinician).post(reverse("run-retry", args=[ward["failed"].pk]), {"next": patient_page})
    assert response.status_code == 302
    assert response.url == patient_page
    ward["failed"].refresh_from_db()
    assert ward["failed"].status == RunStatus.QUEUED
    assert ward["failed"].error == ""
    page = as_user(clinician).get(patient_page).content.decode()
    assert "queued again" in page


def test_an_abandoned_run_can_be_retried(as_user, clinician, ward, django_capture_on_commit_callbacks):
    from django.utils import timezone

    from analysis.runs import STALE_AFTER

    running = ward["running"]
    running.heartbeat = timezone.now() - STALE_AFTER * 2
    running.save()
    client = as_user(clinician)
    series_page = client.get(reverse("series-detail", args=[ward["running_series"].pk])).content.decode()
    assert "this analysis seems abandoned" in series_page
    assert reverse("run-retry", args=[running.pk]) in series_page
    with django_capture_on_commit_callbacks(execute=False):
        client.post(reverse("run-retry", args=[running.pk]))
    running.refresh_from_db()
    assert running.status == RunStatus.QUEUED


def test_retry_never_redirects_off_site(as_user, team_admin, ward, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        response = as_user(team_admin).post(
            reverse("run-retry", args=[ward["failed"].pk]), {"next": "https://evil.example/phish"}
        )
    assert response.url == reverse("series-detail", args=[ward["failed_series"].pk])


def test_viewer_cannot_retry_a_run(as_user, viewer, ward):
    response = as_user(viewer).post(reverse("run-retry", args=[ward["failed"].pk]))
    assert response.status_code == 403
    ward["failed"].refresh_from_db()
    assert ward["failed"].status == RunStatus.FAILED


def test_retrying_a_run_that_did_not_fail_changes_nothing(as_user, clinician, ward):
    response = as_user(clinician).post(reverse("run-retry", args=[ward["running"].pk]), follow=True)
    assert "was not retried: analysis" in response.content.decode()
    assert "only failed or abandoned analyses can be retried" in response.content.decode()
    ward["running"].refresh_from_db()
    assert ward["running"].status == RunStatus.RUNNING
    assert ward["running"].progress == 45


def test_viewer_gets_403_on_upload(as_user, viewer):
    client = as_user(viewer)
    assert client.get(reverse("upload")).status_code == 403
    assert client.post(reverse("upload"), {}).status_code == 403


def test_upload_form_offers_only_teams_where_the_user_may_write(as_user, clinician, team_b):
    from patients.models import Membership, Team

    Membership.objects.create(user=clinician, team=team_b, role="viewer")
    client = as_user(clinician)
    response = client.get(reverse("upload"))
    content = response.content.decode()
    assert response.status_code == 200
    assert "webkitdirectory" in content
    assert 'type="file"' in content
    form = content.split('id="upload-form"')[1]
    # One team to write to: it is shown, not offered as a choice; the viewer-only team is absent.
    assert "<select" not in form
    assert "Team A" in form
    assert "Team B" not in form
    refused = client.post(reverse("upload"), {"team": team_b.pk}, HTTP_X_REQUESTED_WITH="XMLHttpRequest")
    assert refused.status_code == 400
    errors = refused.json()["errors"]
    assert "Choose one of your teams" in errors["team"][0]
    assert "Choose at least one file" in errors["files"][0]
    # A second team where the user is admin: now there is a choice of exactly the two writable teams.
    team_c = Team.objects.create(name="Team C", slug="team-c")
    Membership.objects.create(user=clinician, team=team_c, role="admin")
    form = client.get(reverse("upload")).content.decode().split('id="upload-form"')[1]
    select = form.split('<select name="team"')[1].split("</select>")[0]
    assert "Team A" in select
    assert "Team C" in select
    assert "Team B" not in select


def test_upload_without_javascript_shows_errors_on_the_form(as_user, clinician, team_a):
    response = as_user(clinician).post(reverse("upload"), {"team": team_a.pk})
    assert response.status_code == 400
    assert "Choose at least one file" in response.content.decode()


def test_upload_result_lists_series_and_refused_files(as_user, clinician, outsider, team_a, ward):
    upload = Upload.objects.create(
        team=team_a,
        user=clinician,
        file_count=3,
        accepted_count=1,
        refused_count=2,
        report={
            "series": [
                {
                    "id": ward["new_series"].pk,
                    "series_instance_uid": "1.2.3",
                    "patient": "A-0001",
                    "study_date": "2026-01-17",
                    "description": "Lung 1 mm",
                    "slices": 320,
                    "status": "ready",
                    "created": True,
                    "added_instances": 320,
                }
            ],
            "refused": [
                {"file": "notes.txt", "reason": "not a DICOM file (no DICM preamble)"},
                {"file": "scan/xr.dcm", "reason": "modality CR is not CT"},
            ],
            "notes": ["2 files were refused"],
        },
    )
    content = as_user(clinician).get(reverse("upload-detail", args=[upload.pk])).content.decode()
    for text in (
        "Lung 1 mm",
        "A-0001",
        "notes.txt",
        "not a DICOM file (no DICM preamble)",
        "scan/xr.dcm",
        "modality CR is not CT",
        "2 files were refused",
        "4.2 %",
    ):
        assert text in content, text
    assert reverse("series-detail", args=[ward["new_series"].pk]) in content
    outsider_client = as_user(outsider)
    assert outsider_client.get(reverse("upload-detail", args=[upload.pk])).status_code == 404


def test_series_page_shows_the_corona_score_relative_to_the_first_scan_and_the_flag(as_user, clinician, ward):
    from analysis.models import AnalysisRun

    old_run = AnalysisRun.objects.get(series=ward["old_series"])
    new_run = AnalysisRun.objects.get(series=ward["new_series"])
    AnalysisRun.objects.filter(pk=old_run.pk).update(corona_score_ml=400.0, positive_ratio=0.10)
    AnalysisRun.objects.filter(pk=new_run.pk).update(corona_score_ml=600.0, positive_ratio=0.45)

    new_page = as_user(clinician).get(reverse("series-detail", args=[ward["new_series"].pk])).content.decode()
    old_page = as_user(clinician).get(reverse("series-detail", args=[ward["old_series"].pk])).content.decode()

    assert "600" in new_page
    assert f"1.50{TIMES}" in new_page
    assert "45.0 %" in new_page
    assert "suspected" in new_page
    assert f"1.00{TIMES}" in old_page
    assert "not flagged" in old_page


def test_team_admin_sets_the_suspected_threshold_and_the_flag_follows(as_user, team_admin, clinician, ward):
    from analysis.models import AnalysisRun

    AnalysisRun.objects.filter(series=ward["new_series"]).update(corona_score_ml=600.0, positive_ratio=0.45)
    settings_url = reverse("team-settings", args=["team-a"])
    admin = as_user(team_admin)
    page = admin.get(settings_url).content.decode()
    assert f'value="{SUSPECTED_RATIO_THRESHOLD}"' in page
    assert f"The default, {SUSPECTED_RATIO_THRESHOLD}, lies half way" in page  # the hint names the real default
    assert f"normal test scans ({HIGHEST_NORMAL_SHARE:.2f})" in page
    assert f"pneumonia scans ({LOWEST_PNEUMONIA_SHARE:.2f})" in page

    refused = admin.post(settings_url, {"suspected_ratio_threshold": "1.5"})
    assert "less than or equal to 1" in refused.content.decode()
    assert admin.post(settings_url, {"suspected_ratio_threshold": "0.5"}).status_code == 302
    ward["anna"].team.refresh_from_db()
    assert ward["anna"].team.suspected_ratio_threshold == 0.5

    series_page = admin.get(reverse("series-detail", args=[ward["new_series"].pk])).content.decode()
    assert "not flagged" in series_page  # 45 % of slices is now below the team's 50 %


def test_only_a_teams_admins_reach_its_settings(as_user, clinician, outsider, team_a):
    url = reverse("team-settings", args=["team-a"])
    assert as_user(clinician).get(url).status_code == 403
    assert as_user(clinician).post(url, {"suspected_ratio_threshold": "0.9"}).status_code == 403
    team_a.refresh_from_db()
    assert team_a.suspected_ratio_threshold == pytest.approx(SUSPECTED_RATIO_THRESHOLD)
    assert as_user(outsider).get(url).status_code == 404
