"""Sending an analysis back to the PACS: a pynetdicom storage SCP in the test plays the PACS."""

from __future__ import annotations

import socket

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from pynetdicom import AE, evt
from pynetdicom.sop_class import Comprehensive3DSRStorage, SegmentationStorage

from audit.choices import AuditAction
from audit.models import AuditEvent

from .exported import series_with_run


@pytest.fixture
def pacs(settings):
    """A PACS that keeps what it receives; `accepts` lists the SOP classes it stores."""

    class Pacs:
        received: list = []

        def start(self, accepts=(SegmentationStorage, Comprehensive3DSRStorage)):
            ae = AE(ae_title="TESTPACS")
            for sop_class in accepts:
                ae.add_supported_context(sop_class)

            def on_store(event):
                self.received.append(event.dataset)
                return 0x0000

            self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
            settings.PACS_HOST, settings.PACS_PORT = self.server.server_address[:2]
            settings.PACS_AE_TITLE = "TESTPACS"

    server = Pacs()
    server.received = []
    yield server
    if hasattr(server, "server"):
        server.server.shutdown()


def post_send(user, run):
    client = Client()
    client.force_login(user)
    return client.post(reverse("run-send-to-pacs", args=[run.pk]))


def flash(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_clinician_sends_seg_and_sr_to_the_pacs(pacs, clinician, team_a, tmp_path):
    pacs.start()
    series, run, _ = series_with_run(team_a, tmp_path / "series")

    response = post_send(clinician, run)

    assert response.status_code == 302
    assert response["Location"] == reverse("series-detail", args=[series.pk])
    assert [str(ds.SOPClassUID) for ds in pacs.received] == [SegmentationStorage, Comprehensive3DSRStorage]
    seg, report = pacs.received
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series.series_instance_uid
    assert report.StudyInstanceUID == series.study.study_instance_uid
    assert flash(response) == ["Sent to the PACS: DICOM SEG, DICOM SR."]
    assert AuditEvent.objects.filter(action=AuditAction.EXPORT, summary__startswith="sent to the PACS").exists()


def test_viewer_may_not_send_and_another_team_does_not_see_the_run(pacs, viewer, outsider, team_a, tmp_path):
    pacs.start()
    _, run, _ = series_with_run(team_a, tmp_path / "series")

    assert post_send(viewer, run).status_code == 403
    assert post_send(outsider, run).status_code == 404
    assert pacs.received == []


def test_an_unreachable_pacs_is_reported_and_nothing_is_recorded(settings, clinician, team_a, tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        settings.PACS_HOST, settings.PACS_PORT = probe.getsockname()
    _, run, _ = series_with_run(team_a, tmp_path / "series")

    response = post_send(clinician, run)

    assert response.status_code == 302
    [message] = flash(response)
    assert message.startswith("Nothing was sent to the PACS: the PACS PACS at 127.0.0.1:")
    assert "did not accept an association" in message
    assert not AuditEvent.objects.filter(action=AuditAction.EXPORT).exists()


def test_a_pacs_that_does_not_store_reports_says_so(pacs, clinician, team_a, tmp_path):
    pacs.start(accepts=(SegmentationStorage,))
    _, run, _ = series_with_run(team_a, tmp_path / "series")

    [message] = flash(post_send(clinician, run))

    assert "does not accept Comprehensive 3D SR Storage" in message


def test_series_page_offers_sending_only_to_writers_when_a_pacs_is_configured(
    settings, clinician, viewer, team_a, tmp_path
):
    series, run, _ = series_with_run(team_a, tmp_path / "series")
    url = reverse("series-detail", args=[series.pk])
    button = reverse("run-send-to-pacs", args=[run.pk])

    def page(user) -> str:
        client = Client()
        client.force_login(user)
        return client.get(url).content.decode()

    settings.PACS_HOST = ""
    assert button not in page(clinician)
    assert reverse("run-export", args=[run.pk, "seg"]) in page(viewer)
    settings.PACS_HOST = "pacs.example"
    assert button in page(clinician)
    assert button not in page(viewer)
