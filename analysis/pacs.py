"""Send an analysis back to the hospital's PACS: its DICOM SEG and SR, by C-STORE.

The PACS is configured in settings (`PACS_HOST`, `PACS_PORT`, `PACS_AE_TITLE`; this site calls as
`DICOM_LISTENER_AE_TITLE`); with no host configured, sending is off. Failures (no association, a
refused object) raise `PacsError` with a message that says what the PACS answered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from pydicom.dataset import Dataset
from pynetdicom import AE

from .models import AnalysisRun
from .run_exports import check_exportable, seg_dataset, sr_dataset

logger = logging.getLogger(__name__)

SUCCESS = 0x0000
# C-STORE warnings (coercion, elements discarded) still mean stored.
WARNING_STATUSES = {0x0001, 0xB000, 0xB006, 0xB007}


class PacsError(RuntimeError):
    """The PACS could not be reached or did not store an object; the message says what happened."""


@dataclass(frozen=True)
class PacsTarget:
    """Where results go: the PACS' address and AE title, and the AE title this site calls as."""

    host: str
    port: int
    ae_title: str
    calling_ae_title: str
    timeout: float = 30.0

    @classmethod
    def from_settings(cls) -> PacsTarget | None:
        """The configured PACS, or None when sending back is not configured."""
        if not settings.PACS_HOST:
            return None
        return cls(settings.PACS_HOST, settings.PACS_PORT, settings.PACS_AE_TITLE, settings.DICOM_LISTENER_AE_TITLE)

    def __str__(self) -> str:
        return f"{self.ae_title} at {self.host}:{self.port}"


def send_datasets(target: PacsTarget, datasets: list[Dataset]) -> None:
    """C-STORE `datasets` to `target` in one association; raises PacsError unless every one was stored."""
    ae = AE(ae_title=target.calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = target.timeout
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class)
    association = ae.associate(target.host, target.port, ae_title=target.ae_title)
    if not association.is_established:
        raise PacsError(f"the PACS {target} did not accept an association (is it running, and does it know us?)")
    try:
        for ds in datasets:
            try:
                answer = association.send_c_store(ds)
            except ValueError as exc:  # no accepted presentation context for this SOP class
                raise PacsError(f"the PACS {target} does not accept {ds.SOPClassUID.name}: {exc}") from exc
            state = answer.get("Status") if answer else None
            if state is None:
                raise PacsError(f"the PACS {target} did not answer when sent {ds.SOPClassUID.name}")
            if state != SUCCESS and state not in WARNING_STATUSES:
                raise PacsError(f"the PACS {target} refused {ds.SOPClassUID.name} (status 0x{state:04X})")
    finally:
        association.release()


def send_run(run: AnalysisRun, target: PacsTarget | None = None) -> list[str]:
    """Send the run's SEG and SR in one association; returns what was sent, by name."""
    target = target or PacsTarget.from_settings()
    if target is None:
        raise PacsError("no PACS is configured (PACS_HOST is empty)")
    check_exportable(run)
    datasets = [seg_dataset(run), sr_dataset(run)]
    send_datasets(target, datasets)
    sent = ["DICOM SEG", "DICOM SR"]
    logger.info("analysis %s sent to %s: %s", run.pk, target, ", ".join(sent))
    return sent
