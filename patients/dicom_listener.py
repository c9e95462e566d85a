"""A DICOM listener (C-ECHO and C-STORE SCP) that feeds received CT images into the upload ingest.

A scanner or PACS pushes a series image by image, often over several associations, and never says
when a series is complete. So received images are staged per series, and a series is ingested (by
`patients.ingest.ingest_paths`, the same judging and storing as an upload, channel "dicom") once no
image of it arrived for a quiet period (`DICOM_LISTENER_QUIET_SECONDS`). A READY series is then
analysed as after any upload. Images arriving after their series was ingested are staged again and
added to the stored series by the next ingest, which accepts slices that keep the volume consistent.

Staging lives under MEDIA_ROOT/incoming/listener-<team>/; images staged when the listener stopped are
ingested after the quiet period once it runs again, so a restart loses nothing that was acknowledged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections, connection
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    EnhancedCTImageStorage,
    LegacyConvertedEnhancedCTImageStorage,
    Verification,
)

from .ingest import ingest_paths
from .models import Team, Upload

logger = logging.getLogger(__name__)

CHANNEL = "dicom"
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
CT_STORAGE = (CTImageStorage, EnhancedCTImageStorage, LegacyConvertedEnhancedCTImageStorage)


@dataclass
class _Pending:
    """A series being received: its staging folder and when its last image arrived."""

    folder: Path
    last: float
    count: int = 0


class SeriesCollector:
    """Stages received images per series and ingests each series once it has been quiet long enough.

    Thread-safe: the network threads call `add`, one flusher thread calls `flush_due`.
    """

    def __init__(
        self, team: Team, staging: Path, quiet_seconds: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if quiet_seconds < 0:
            raise ValueError(f"the quiet period must not be negative, got {quiet_seconds}")
        self.team = team
        self.staging = Path(staging)
        self.quiet_seconds = quiet_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self.staging.mkdir(parents=True, exist_ok=True)
        # Left from a previous run: acknowledged to the sender, so they must still be ingested.
        for folder in sorted(p for p in self.staging.iterdir() if p.is_dir()):
            count = sum(1 for _ in folder.glob("*.dcm"))
            if count:
                self._pending[folder.name] = _Pending(folder, self.clock(), count)
            else:
                shutil.rmtree(folder, ignore_errors=True)

    def add(self, study_uid: str, series_uid: str, sop_uid: str, encoded: bytes) -> Path:
        """Stage one received image (a complete DICOM file's bytes); returns where it was written."""
        key = _folder_name(study_uid, series_uid)
        with self._lock:
            pending = self._pending.get(key)
            if pending is None:
                pending = self._pending[key] = _Pending(self.staging / key, self.clock())
                pending.folder.mkdir(parents=True, exist_ok=True)
            destination = pending.folder / f"{_safe(sop_uid or uuid.uuid4().hex)}.dcm"
            temporary = pending.folder / f".{destination.name}.{uuid.uuid4().hex}.part"
            temporary.write_bytes(encoded)
            os.replace(temporary, destination)  # the ingest never sees half an image
            pending.last = self.clock()
            pending.count += 1
        return destination

    @property
    def pending_series(self) -> int:
        with self._lock:
            return len(self._pending)

    def flush_due(self, *, everything: bool = False) -> list[Upload]:
        """Ingest every series quiet for the quiet period (or all, with `everything`); returns the Uploads."""
        now = self.clock()
        batches = []
        with self._lock:
            for key, pending in list(self._pending.items()):
                if everything or now - pending.last >= self.quiet_seconds:
                    del self._pending[key]
                    # Renamed under the lock: an image arriving from now on starts a new folder.
                    batch = pending.folder.with_name(f".ingest-{key}-{uuid.uuid4().hex[:8]}")
                    os.replace(pending.folder, batch)
                    batches.append((batch, pending.count))
        uploads = []
        for batch, count in batches:
            try:
                upload = ingest_paths(self.team, [batch], channel=CHANNEL)
            except Exception:  # a database outage must not kill the listener; the images stay staged
                logger.exception("ingest of %d received image(s) failed; kept in %s", count, batch)
                self._restage(batch, count)
                continue
            logger.info(
                "received series ingested for %s: %d image(s), %d accepted, %d refused (upload %s)",
                self.team.slug,
                count,
                upload.accepted_count,
                upload.refused_count,
                upload.pk,
            )
            for refused in upload.report.get("refused", [])[:5]:
                logger.warning("refused %s: %s", refused["file"], refused["reason"])
            shutil.rmtree(batch, ignore_errors=True)
            uploads.append(upload)
        return uploads

    def _restage(self, batch: Path, count: int) -> None:
        key = batch.name.removeprefix(".ingest-").rsplit("-", 1)[0]
        with self._lock:
            pending = self._pending.get(key)
            if pending is None:
                os.replace(batch, self.staging / key)
                self._pending[key] = _Pending(self.staging / key, self.clock(), count)
            else:  # new images arrived meanwhile: merge the failed batch into their folder
                for file in batch.iterdir():
                    os.replace(file, pending.folder / file.name)
                pending.count += count
                shutil.rmtree(batch, ignore_errors=True)


class DicomListener:
    """The storage SCP: accepts C-ECHO, and C-STORE of CT images into a `SeriesCollector`."""

    def __init__(
        self,
        team: Team,
        *,
        port: int,
        ae_title: str,
        quiet_seconds: float,
        host: str = "0.0.0.0",
        staging: Path | None = None,
    ) -> None:
        if not re.fullmatch(r"[ -~]{1,16}", ae_title) or ae_title.strip() == "" or "\\" in ae_title:
            raise ValueError(f"an AE title is 1 to 16 printable characters without a backslash, got {ae_title!r}")
        self.team = team
        self.host = host
        self.port = port
        self.ae_title = ae_title
        staging = staging or Path(settings.MEDIA_ROOT) / "incoming" / f"listener-{team.slug}"
        self.collector = SeriesCollector(team, staging, quiet_seconds)
        self.ae = AE(ae_title=ae_title)
        self.ae.add_supported_context(Verification)
        for sop_class in CT_STORAGE:
            self.ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
        self._server = None
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """Where the server listens (the real port when started on port 0)."""
        if self._server is None:
            return self.host, self.port
        return self._server.server_address[:2]

    def start(self) -> None:
        """Listen in background threads; returns at once."""
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_C_ECHO, lambda event: SUCCESS)]
        self._server = self.ae.start_server((self.host, self.port), block=False, evt_handlers=handlers)
        self._stop.clear()
        self._flusher = threading.Thread(target=self._flush_loop, name="dicom-listener-flush", daemon=True)
        self._flusher.start()
        logger.info("DICOM listener %s on %s:%s for team %s", self.ae_title, *self.address, self.team.slug)

    def stop(self, *, flush: bool = True) -> None:
        """Stop listening; with `flush`, ingest what was received without waiting for the quiet period."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
            self._flusher = None
        if flush:
            self.collector.flush_due(everything=True)

    def serve_forever(self) -> None:
        self.start()
        try:
            while not self._stop.wait(3600):
                pass
        except KeyboardInterrupt:
            logger.info("DICOM listener stopping")
        finally:
            self.stop()

    def _on_store(self, event) -> int:
        try:
            dataset = event.dataset
            study_uid = str(dataset.get("StudyInstanceUID", "") or "")
            series_uid = str(dataset.get("SeriesInstanceUID", "") or "")
            sop_uid = str(event.request.AffectedSOPInstanceUID or "")
        except Exception:  # an undecodable dataset: tell the sender, who can log it
            logger.exception("received a dataset that cannot be read")
            return CANNOT_UNDERSTAND
        try:
            self.collector.add(study_uid, series_uid, sop_uid, event.encoded_dataset(include_meta=True))
        except OSError:
            logger.exception("cannot stage a received image")
            return OUT_OF_RESOURCES
        return SUCCESS

    def _flush_loop(self) -> None:
        interval = min(1.0, max(self.collector.quiet_seconds / 4, 0.05))
        try:
            while not self._stop.wait(interval):
                try:
                    self.collector.flush_due()
                except Exception:  # keep listening; the next round tries again
                    logger.exception("flushing received series failed")
                finally:
                    close_old_connections()
        finally:
            connection.close()  # this thread's database connection


def _folder_name(study_uid: str, series_uid: str) -> str:
    """A folder name for one series: readable when the UID is plain, unique in every case."""
    digest = hashlib.sha256(f"{study_uid}|{series_uid}".encode()).hexdigest()[:12]
    return f"{_safe(series_uid or 'no-series-uid')[:64]}-{digest}"


def _safe(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z._-]", "_", text).lstrip(".") or "x"
