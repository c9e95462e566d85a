"""In Chromium: a team admin builds a cohort, labels a study, fits severity models, activates one and sees P(severe)."""

from __future__ import annotations

from datetime import date

import pytest

from tests.analysis.severity_cohort import build_cohort
from tests.conftest import PASSWORD

from .browser import log_in, screenshot
from .records import make_patient, make_run, make_series, make_study

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_admin_fits_a_cohort_and_new_scans_show_p_severe(page, live_server, team_admin, team_a):
    cohort = build_cohort(team_a, n_per_class=10)
    new = make_run(make_series(make_study(make_patient(team_a, "NEW-1"), date(2026, 6, 1))), poi=0.38, ihu=-505.0)
    log_in(page, live_server.url, team_admin.username, PASSWORD)

    page.click("nav.mainnav >> text=Cohorts")
    page.wait_for_selector("#cohorts")
    assert page.locator("#cohorts tbody tr").count() == 1

    page.click("text=New cohort")
    page.fill("#id_name", "Wards")
    page.fill("#id_identifiers", "S-001\nNOPE-7")
    page.click("button:has-text('Create cohort')")
    page.wait_for_selector("#unknown-identifiers")
    assert "NOPE-7: no patient with this identifier in Team A." in page.locator("#unknown-identifiers").inner_text()
    assert page.input_value("#id_identifiers") == "S-001\nNOPE-7"
    screenshot(page, "cohort-01-create-refused")

    page.goto(f"{live_server.url}/cohorts/{cohort.pk}/")
    assert "No active severity model" in page.locator("#active-model").inner_text()
    page.select_option("select[aria-label^='Clinical severity of S-001']", "unknown")
    page.click("#save-labels")
    page.wait_for_selector("text=Clinical severity saved (1 changed).")
    assert page.locator("#summary").inner_text().count("9") >= 1

    page.click("#fit")
    page.wait_for_selector("#table-2")
    assert page.locator("#table-2 tbody tr").count() == 3
    assert "POI \u2265" in page.locator("#table-2").inner_text()
    page.wait_for_selector("#roc .main-svg", timeout=10000)  # plotly.js drew the ROC curves
    page.wait_for_selector("#box-poi .main-svg", timeout=10000)
    page.wait_for_selector("#box-ihu .main-svg", timeout=10000)
    screenshot(page, "cohort-02-fitted")

    page.locator("#table-2 tbody tr", has_text="POI + iHU").locator("button:has-text('Make active')").click()
    page.wait_for_selector("text=is now Team A's active severity model")
    assert "ICU 2026: POI + iHU" in page.locator("#active-model").inner_text()
    screenshot(page, "cohort-03-active")

    page.goto(f"{live_server.url}/series/{new.series_id}/")
    severity = page.locator("[data-role=severity]").inner_text()
    assert "P(severe)" in severity
    assert "ICU 2026: POI + iHU" in severity
    screenshot(page, "cohort-04-series-p-severe")
