"""In Chromium: import reports with a preview, read a patient's course with report markers, and the agreement page."""

from __future__ import annotations

from datetime import date

import pytest

from tests.conftest import PASSWORD

from .browser import log_in, screenshot
from .test_report_pages import course

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CSV = (
    "patient_id;accession;study_date;impression\n"
    "P-1;P-1-2;;New ground-glass opacities, the known lesions have enlarged.\n"
    "P-1;;16.03.2026;Lesions partially absorbed, no new lesions.\n"
    "P-2;;09.03.2026;Opacities decreased.\n"
    "P-2;P-2-3;;No significant change.\n"
    "P-9;;2026-03-16;Stable.\n"
)


def test_clinician_imports_reports_and_reads_course_and_agreement(page, live_server, clinician, tmp_path):
    team = clinician.memberships.get().team
    patient, _ = course(team, "P-1")
    course(
        team,
        "P-2",
        points=((date(2026, 3, 2), 0.20, -420.0), (date(2026, 3, 9), 0.11, -520.0), (date(2026, 3, 16), 0.105, -525.0)),
        corona=(30.0, 24.0, 23.0),
    )
    log_in(page, live_server.url, clinician.username, PASSWORD)

    page.click("nav.mainnav >> text=Import reports")
    page.wait_for_selector("#import-form")
    csv_path = tmp_path / "reports.csv"
    csv_path.write_text(CSV, encoding="cp1252")
    page.set_input_files("#id_file", str(csv_path))
    page.click("#preview-import")
    page.wait_for_selector("#import-rows")
    assert page.locator("#import-rows tbody tr").count() == 5
    assert page.locator("tr.import-unmatched").inner_text().count("no patient 'P-9' in Team A") == 1
    assert page.locator("#import-rows mark").first.inner_text() == "New ground-glass"
    screenshot(page, "20-report-import-preview")
    page.click("#confirm-import")
    page.wait_for_selector("h1:has-text('Reports imported')")
    assert page.locator("tr.import-saved").count() == 4
    screenshot(page, "21-report-import-saved")

    page.goto(f"{live_server.url}/patients/{patient.pk}/")
    page.wait_for_selector("#timeline .main-svg", timeout=8000)
    assert page.locator("#changes tbody tr").count() == 2
    assert page.locator(".report-text mark").first.inner_text() == "partially absorbed"
    screenshot(page, "22-patient-course-with-reports")

    page.click("nav.mainnav >> text=Patients")
    page.wait_for_selector("#patients")
    assert page.locator("#patients svg.sparkline").count() == 2
    screenshot(page, "24-patient-list-with-course")

    page.click("nav.mainnav >> text=Reports")
    page.wait_for_selector("#kappa-plot .main-svg", timeout=8000)
    page.wait_for_selector("#change-plot .main-svg", timeout=8000)
    assert page.locator(".agreement").count() == 3
    screenshot(page, "23-agreement")


def test_team_admin_sets_tolerances_and_adds_a_lexicon_phrase(page, live_server, team_admin):
    team = team_admin.memberships.get().team
    log_in(page, live_server.url, team_admin.username, PASSWORD)
    page.goto(f"{live_server.url}/teams/{team.slug}/settings/")
    page.fill("#id_poi_tolerance_pp", "2.5")
    page.click("button:has-text('Save')")
    page.wait_for_selector(".message-success")
    team.refresh_from_db()
    assert team.poi_tolerance_pp == 2.5
    screenshot(page, "25-team-settings-tolerances")
    page.click("text=Report lexicon")
    page.wait_for_selector("#lexicon")
    page.fill("#id_phrase", "größenprogredient")
    page.select_option("#id_label", "progression")
    page.click("button:has-text('Save phrase')")
    page.wait_for_selector(".message-success")
    assert page.locator("#lexicon tr:has-text('größenprogredient')").inner_text().count("team") == 1
    screenshot(page, "26-report-lexicon")
