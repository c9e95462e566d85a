"""In Chromium: a clinician downloads an analysis as CSV and DICOM SEG, and sends it to the PACS."""

from __future__ import annotations

import csv
import io

import highdicom as hd
import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import Comprehensive3DSRStorage, SegmentationStorage

from tests.analysis.exported import series_with_run
from tests.conftest import PASSWORD

from .browser import log_in, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_clinician_downloads_exports_and_sends_them_to_the_pacs(
    page, live_server, clinician, team_a, settings, tmp_path
):
    received = []
    pacs = AE(ae_title="TESTPACS")
    pacs.add_supported_context(SegmentationStorage)
    pacs.add_supported_context(Comprehensive3DSRStorage)
    server = pacs.start_server(
        ("127.0.0.1", 0),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, lambda event: received.append(event.dataset.SOPClassUID) or 0x0000)],
    )
    settings.PACS_HOST, settings.PACS_PORT = server.server_address[:2]
    settings.PACS_AE_TITLE = "TESTPACS"
    try:
        series, run, _ = series_with_run(team_a, tmp_path / "series", orientation="transposed")
        log_in(page, live_server.url, clinician.username, PASSWORD)
        page.goto(f"{live_server.url}/series/{series.pk}/")
        exports = page.locator("[data-role=exports]")
        assert exports.locator("a").all_inner_texts() == [
            "DICOM SEG",
            "DICOM SR",
            "CSV",
            "NIfTI lungs",
            "NIfTI infection",
        ]
        screenshot(page, "exports-01-series")

        with page.expect_download() as csv_download:
            exports.locator("a", has_text="CSV").click()
        assert csv_download.value.suggested_filename == f"analysis-{run.pk}.csv"
        [row] = list(csv.DictReader(io.StringIO(csv_download.value.path().read_text())))
        assert float(row["poi"]) == pytest.approx(run.poi)

        with page.expect_download() as seg_download:
            exports.locator("a", has_text="DICOM SEG").click()
        seg = hd.seg.segread(seg_download.value.path())
        assert int(seg.NumberOfFrames) == 3 * series.slice_count

        page.click("button:has-text('Send SEG and SR to the PACS')")
        page.wait_for_selector(".message:has-text('Sent to the PACS')")
        assert received == [SegmentationStorage, Comprehensive3DSRStorage]
        screenshot(page, "exports-02-sent-to-pacs")
    finally:
        server.shutdown()
