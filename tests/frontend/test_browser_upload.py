"""In Chromium: upload a phantom series with the progress bar and land on the result page."""

from __future__ import annotations

import re

import pytest

from patients.models import Series, Upload
from tests.conftest import PASSWORD

from .browser import log_in, screenshot
from .scans import write_phantom_series

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_clinician_uploads_dicom_files_and_sees_created_and_refused(page, live_server, clinician, tmp_path):
    files = write_phantom_series(tmp_path / "scan", patient_id="UP-0042")
    junk = tmp_path / "readme.txt"
    junk.write_text("this is not a scan")
    log_in(page, live_server.url, clinician.username, PASSWORD)
    page.click("nav >> text=Upload")
    page.wait_for_selector("#upload-form")
    page.fill("#id_patient_identifier", "")
    page.set_input_files("#id_files", [str(p) for p in files] + [str(junk)])
    assert page.locator("#chosen").inner_text().startswith(f"{len(files) + 1} files")
    screenshot(page, "07-upload-chosen")

    # Slow the upload down (about 100 KB/s) so the progress bar is seen moving part-way.
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 100 * 1024},
    )
    page.click("#upload-submit")
    page.wait_for_function(
        "() => { const w = parseFloat(document.getElementById('upload-bar').style.width); return w > 0 && w < 100; }",
        timeout=10000,
    )
    assert page.locator("#upload-text").inner_text().startswith("Uploading")
    screenshot(page, "08-upload-progress")
    page.wait_for_url(re.compile(r".*/uploads/\d+/$"), timeout=30000)
    upload = Upload.objects.get()
    series = Series.objects.get(study__patient__identifier="UP-0042")
    assert page.url.endswith(f"/uploads/{upload.pk}/")
    assert page.locator("#created-series tbody tr").count() == 1
    assert page.locator(f"#created-series a[href='/series/{series.pk}/']").count() == 1
    refused_row = page.locator("#refused tbody tr")
    assert refused_row.count() == 1
    assert "readme.txt" in refused_row.inner_text()
    assert upload.report["refused"][0]["reason"] in refused_row.inner_text()
    screenshot(page, "09-upload-result")

    page.click(f"#created-series a[href='/series/{series.pk}/']")
    page.wait_for_selector("#analysis-status")
    assert page.locator("[data-role=badge]").inner_text() == "Queued"
    screenshot(page, "10-uploaded-series-queued")
    # Play the worker in this process (its own pipeline): the open page notices and shows the results.
    from analysis.execute import default_pipeline, execute_run

    execute_run(series.analysis_runs.get().pk, pipeline=default_pipeline)
    page.wait_for_selector("#results", timeout=10000)
    page.wait_for_selector("#slice-profile .main-svg", timeout=8000)
    assert page.locator("#results tbody tr").count() == 9
    assert "corona score" in page.locator("[data-role=corona]").inner_text()
    assert page.locator("#slice-profile .legendtext", has_text="P(abnormal slice)").count() == 1
    screenshot(page, "10-uploaded-series-results")


def test_viewer_has_no_upload_link_and_is_refused(page, live_server, viewer):
    log_in(page, live_server.url, viewer.username, PASSWORD)
    assert page.locator("nav >> text=Upload").count() == 0
    response = page.goto(f"{live_server.url}/upload/")
    assert response.status == 403
    assert "Only clinicians and team admins can upload scans." in page.content()
    screenshot(page, "11-upload-forbidden")


def test_too_many_files_are_refused_before_sending(page, live_server, clinician, tmp_path, settings):
    settings.UPLOAD_MAX_FILES = 5
    files = write_phantom_series(tmp_path / "scan", patient_id="UP-0099")
    log_in(page, live_server.url, clinician.username, PASSWORD)
    page.goto(f"{live_server.url}/upload/")
    page.set_input_files("#id_files", [str(p) for p in files])
    page.click("#upload-submit")
    error = page.locator("#upload-error")
    error.wait_for(state="visible")
    assert error.inner_text().startswith(f"{len(files)} files is more than the 5 files one upload may hold")
    assert page.locator("#upload-progress").is_hidden()
    assert not Upload.objects.exists()
