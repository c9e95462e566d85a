"""In Chromium: log in, browse the team's patients, open a patient and a series that updates live."""

from __future__ import annotations

from datetime import date

import pytest

from analysis.choices import RunStatus
from patients.choices import SeriesStatus
from tests.conftest import PASSWORD

from .browser import log_in, screenshot
from .records import add_results, make_patient, make_run, make_series, make_study, slice_metrics

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_clinician_browses_patients_and_watches_an_analysis_finish(page, live_server, clinician, team_b):
    anna = make_patient(clinician.memberships.get().team, "A-0001", birth_year=1950)
    for day, poi in ((3, 0.12), (9, 0.19)):  # two earlier scans, for the course over time
        make_run(make_series(make_study(anna, date(2026, 1, day)), description="Lung 5 mm"), poi=poi, ihu=-560.0)
    study = make_study(anna, date(2026, 1, 17), accession="ACC-2", description="CT chest follow-up")
    done = make_series(study, description="Lung 1 mm", thickness=1.0, slices=320)
    add_results(make_run(done, poi=0.042, ihu=-640.0))
    make_series(study, description="Scout", status=SeriesStatus.REJECTED, status_message="only 1 slice: a localiser")
    failed = make_series(study, description="Soft tissue 3 mm", thickness=3.0)
    make_run(failed, RunStatus.FAILED, error="The lungs could not be found in this scan.")
    live = make_series(study, description="Lung 5 mm")
    running = make_run(live, RunStatus.RUNNING, stage="lungs", progress=20)
    make_patient(clinician.memberships.get().team, "A-0002", birth_year=None)
    make_patient(team_b, "B-0001")

    screenshot_login = page.goto(f"{live_server.url}/login/")
    assert screenshot_login.ok
    screenshot(page, "01-login")
    log_in(page, live_server.url, clinician.username, PASSWORD)
    rows = page.locator("#patients tbody tr")
    assert rows.count() == 2
    assert "B-0001" not in page.content()
    assert "4.2 %" in rows.first.inner_text()
    screenshot(page, "02-patient-list")

    page.click("text=A-0001")
    page.wait_for_selector("h1:has-text('Patient A-0001')")
    assert page.locator("tr.series-row").count() == 6
    assert page.locator("button:has-text('Retry')").count() == 1
    page.wait_for_selector("#timeline .main-svg", timeout=8000)  # plotly.js drew the course over time
    screenshot(page, "03-patient")

    page.click(f"a[href='/series/{live.pk}/']")
    page.wait_for_selector("#analysis-status")
    assert page.locator("[data-role=stage]").inner_text() == "Segmenting lungs"
    screenshot(page, "04-series-running")
    # The worker moves on: the page follows without a reload, then shows the results when it succeeds.
    running.stage, running.progress = "infection", 70
    running.save()
    page.wait_for_function("document.querySelector('[data-role=percent]').textContent === '70'", timeout=8000)
    assert page.locator("[data-role=stage]").inner_text() == "Segmenting infection"
    running.status, running.progress, running.poi, running.ihu, running.ct_severity_score = (
        RunStatus.SUCCEEDED,
        100,
        0.25,
        -500.0,
        12,
    )
    running.save()
    running.slice_metrics = slice_metrics(12)
    running.save()
    add_results(running)
    page.wait_for_selector("#results", timeout=8000)
    assert page.locator("#results tbody tr").count() == 9
    assert page.locator("#opacities tbody tr").count() == 2
    page.wait_for_selector("#slice-profile .main-svg", timeout=8000)  # plotly.js drew the figure
    screenshot(page, "05-series-results")

    page.go_back()
    page.goto(f"{live_server.url}/patients/{anna.pk}/")
    page.click("text=Soft tissue 3 mm")
    page.wait_for_selector("text=The lungs could not be found in this scan.")
    screenshot(page, "06-series-failed")


def test_outsider_gets_not_found_for_another_teams_patient(page, live_server, clinician, outsider):
    anna = make_patient(clinician.memberships.get().team, "A-0001")
    log_in(page, live_server.url, outsider.username, PASSWORD)
    assert page.locator("#patients tbody tr").inner_text().startswith("No patients yet.")
    response = page.goto(f"{live_server.url}/patients/{anna.pk}/")
    assert response.status == 404
    assert "A-0001" not in page.content()
    screenshot(page, "12-not-found")


def test_team_admin_opens_team_settings_from_the_header_and_saves(page, live_server, team_admin, team_a):
    log_in(page, live_server.url, team_admin.username, PASSWORD)
    page.click("header >> text=Team A")
    page.wait_for_selector("#id_suspected_ratio_threshold")
    page.fill("#id_suspected_ratio_threshold", "0.35")
    screenshot(page, "13-team-settings")
    page.click("button:has-text('Save')")
    page.wait_for_selector(".message-success")
    team_a.refresh_from_db()
    assert team_a.suspected_ratio_threshold == 0.35
