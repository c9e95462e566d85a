"""DICOM and NIfTI ingest: from uploaded or local files to stored Patient/Study/Series/Instance rows.

Every file is judged and either kept or refused with a reason a person can act on; nothing
half-made is kept. The steps:

1. Gather files: plain files, folders (recursively), .zip archives (expanded safely, see
   `patients.archives`), browser uploads (streamed to a staging folder under MEDIA_ROOT).
2. Read each DICOM header with ``stop_before_pixels`` (pixel data is never decoded here; its
   presence and length are checked from the bytes where the reader stopped) and refuse what is not a CT image.
3. Group by study and series; judge each series on its own: its slices are sorted along the slice
   normal (``analysis.pipeline.dicom_geometry.order_slices``) and must form one regular axial volume.
   Instances are deduplicated by SOPInstanceUID, so a re-upload creates nothing new, and slices
   added to an existing series are accepted only if the whole still forms one consistent volume.
4. Store a good series: files first (each one appears atomically by ``os.replace``), then its rows
   in one transaction; if the transaction fails, the files written for it are removed. A series is
   READY only once all its rows are in, and `patients.signals.series_ready` is sent after commit.

NIfTI volumes (.nii/.nii.gz) carry no patient, so they are accepted only for a named patient.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path, PurePosixPath

import numpy as np
import pydicom
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import DatabaseError, IntegrityError, OperationalError, connection, transaction
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder
from pydicom.uid import UID

from analysis.pipeline.dicom_geometry import GeometryError, SliceGeometry, order_slices, plane_name
from analysis.pipeline.volume import AIR_HU, MIN_MATRIX, MIN_SLICES, NIFTI_SUFFIXES

from .archives import ArchiveError, extract_zip, looks_like_zip
from .choices import SeriesSource, SeriesStatus, Sex
from .models import Instance, Patient, Series, Study, Team, Upload
from .signals import series_ready

logger = logging.getLogger(__name__)

MB = 1024 * 1024
CHUNK = 1024 * 1024
# A stack shorter than this along the body axis cannot hold the lungs (a chest CT spans ~250-350 mm).
MIN_EXTENT_MM = 20.0
CT_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2"}
MEDIA_DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"
DEFLATED_SYNTAX = "1.2.840.10008.1.2.1.99"
IMPLICIT_SYNTAX = "1.2.840.10008.1.2"
UNDEFINED_LENGTH = 0xFFFFFFFF
SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
# Bytes read from the end of a file to find the end of compressed pixel data (past any trailing padding).
TAIL_BYTES = 4096
# Tag bytes of (7FE0,0010) Pixel Data, (7FE0,0008) Float and (7FE0,0009) Double Float Pixel Data.
PIXEL_TAGS_LE = (b"\xe0\x7f\x10\x00", b"\xe0\x7f\x08\x00", b"\xe0\x7f\x09\x00")
PIXEL_TAGS_BE = (b"\x7f\xe0\x00\x10", b"\x7f\xe0\x00\x08", b"\x7f\xe0\x00\x09")
# What tells one study, or one series of a study, from another when an export lacks their UIDs.
STUDY_IDENTITY = ("PatientID", "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "FrameOfReferenceUID")
SERIES_IDENTITY = (
    "FrameOfReferenceUID",
    "SeriesNumber",
    "SeriesDate",
    "SeriesTime",
    "SeriesDescription",
    "ConvolutionKernel",
    "SliceThickness",
    "ImageOrientationPatient",
)
OTHER_ARCHIVES = (".tar", ".tgz", ".tar.gz", ".gz", ".bz2", ".xz", ".7z", ".rar")


class NotIngestable(ValueError):
    """One file (or series) is refused; the message is the reason shown to the user."""


@dataclass(frozen=True)
class Limits:
    """Upload limits in bytes/files; `None` means no limit of that kind (command-line imports)."""

    max_file_bytes: int
    max_expanded_bytes: int
    max_total_bytes: int | None = None
    max_files: int | None = None

    @classmethod
    def from_settings(cls, *, whole_upload: bool) -> Limits:
        return cls(
            max_file_bytes=settings.UPLOAD_MAX_FILE_MB * MB,
            max_expanded_bytes=settings.UPLOAD_MAX_ARCHIVE_EXPANDED_MB * MB,
            max_total_bytes=settings.UPLOAD_MAX_TOTAL_MB * MB if whole_upload else None,
            max_files=settings.UPLOAD_MAX_FILES if whole_upload else None,
        )


@dataclass
class _Candidate:
    """A file to judge: the name the user knows it by, where it is now, and whether we own that copy."""

    name: str
    path: Path
    staged: bool


@dataclass
class _DicomFile:
    """A DICOM file that passed the per-file checks: its header (no pixels) and the UIDs that place it."""

    candidate: _Candidate
    header: Dataset
    sop_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax: str
    derived: tuple[str, ...] = ()  # UIDs the file lacked and ingest derived (anonymised exports)


@dataclass
class _SeriesGroup:
    """The files of one upload that belong to one series; judged together, stored or refused together."""

    study_uid: str
    series_uid: str
    files: list[_DicomFile] = field(default_factory=list)


# --- public entry points ---------------------------------------------------------------------------


def ingest_paths(
    team: Team,
    paths: Iterable[Path],
    *,
    user=None,
    channel: str = "cli",
    patient_identifier: str | None = None,
) -> Upload:
    """Ingest local files, folders (recursively) and .zip archives for `team`; returns the saved Upload.

    Per-file and archive-expansion limits apply; the whole-upload total and file-count limits do
    not (they protect the web server, and a command-line import of a PACS export may be large).
    """
    session = _Session(team, user, channel, patient_identifier, Limits.from_settings(whole_upload=False))
    with session:
        for raw in paths:
            path = Path(raw)
            if path.is_dir():
                files = sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path)))
                for file in files:
                    session.add(_Candidate(str(Path(path.name) / file.relative_to(path)), file, staged=False))
            elif path.is_file():
                session.add(_Candidate(path.name, path, staged=False))
            else:
                session.file_count += 1
                session.refuse(str(raw), "no such file or folder")
        return session.finish()


def ingest_uploaded_files(
    team: Team,
    files: Iterable[UploadedFile],
    *,
    user=None,
    channel: str = "browser",
    patient_identifier: str | None = None,
) -> Upload:
    """Ingest browser/API uploads (.zip, .dcm files, a folder's files, .nii/.nii.gz); returns the saved Upload.

    Each file is streamed to a staging folder first, so no upload is held in memory. All limits apply;
    an upload over the total size or file count is refused as a whole.
    """
    limits = Limits.from_settings(whole_upload=True)
    session = _Session(team, user, channel, patient_identifier, limits)
    files = list(files)
    with session:
        total = sum(f.size or 0 for f in files)
        if limits.max_files is not None and len(files) > limits.max_files:
            session.refuse_all(len(files), f"upload has {len(files)} files, over the {limits.max_files} file limit")
        elif limits.max_total_bytes is not None and total > limits.max_total_bytes:
            session.refuse_all(
                len(files),
                f"upload is {_mb(total)} MB in total, over the {limits.max_total_bytes // MB} MB limit",
            )
        else:
            for number, uploaded in enumerate(files):
                name = uploaded.name or f"file {number + 1}"
                # An archive is bounded by the expansion limit (checked in `add`), any other file by the file limit.
                if (uploaded.size or 0) > limits.max_file_bytes and not name.lower().endswith(".zip"):
                    session.file_count += 1
                    session.refuse(name, _too_large(uploaded.size, limits))
                    continue
                try:
                    staged = session.stage(uploaded, number)
                except OSError as exc:  # a full disk while receiving: refuse the file, keep judging the rest
                    session.file_count += 1
                    session.refuse(name, _storage_failure(exc, done="received"))
                    continue
                session.add(_Candidate(name, staged, staged=True))
        return session.finish()


# --- one ingest ------------------------------------------------------------------------------------


class _Session:
    """The state of one upload: files judged so far, DICOM headers grouped by series, the report."""

    def __init__(self, team: Team, user, channel: str, patient_identifier: str | None, limits: Limits) -> None:
        if patient_identifier is not None:
            patient_identifier = patient_identifier.strip() or None
        if patient_identifier is not None and len(patient_identifier) > 64:
            raise ValueError(f"patient identifier must be at most 64 characters, got {len(patient_identifier)}")
        self.team = team
        self.user = user if user is not None and getattr(user, "is_authenticated", False) else None
        self.channel = channel
        self.patient_identifier = patient_identifier
        self.limits = limits
        self.file_count = 0
        self.accepted = 0
        self.refused: list[dict] = []
        self.refused_files = 0
        self.notes: list[str] = []
        self.series_report: list[dict] = []
        self.groups: dict[tuple[str, str], _SeriesGroup] = {}
        self.niftis: list[_Candidate] = []
        self._staging: tempfile.TemporaryDirectory | None = None
        self._archive_count = 0

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, *exc) -> None:
        if self._staging is not None:
            self._staging.cleanup()

    # -- gathering --

    @property
    def staging(self) -> Path:
        """A private folder under MEDIA_ROOT (same file system as the store, so staged files can be moved)."""
        if self._staging is None:
            root = Path(settings.MEDIA_ROOT) / "incoming"
            root.mkdir(parents=True, exist_ok=True)
            self._staging = tempfile.TemporaryDirectory(prefix="upload-", dir=root)
        return Path(self._staging.name)

    def stage(self, uploaded: UploadedFile, number: int) -> Path:
        folder = self.staging / f"u{number:06d}"
        folder.mkdir()
        destination = folder / (Path(uploaded.name or "file").name[:200] or "file")
        if hasattr(uploaded, "temporary_file_path"):
            # Django already streamed it to a temporary file: on the same file system, move it instead
            # of writing it again (Django's clean-up accepts a temporary file that was moved away).
            try:
                os.replace(uploaded.temporary_file_path(), destination)
                return destination
            except OSError:
                pass  # another file system: copy below
        with open(destination, "wb") as out:
            for chunk in uploaded.chunks(CHUNK):
                out.write(chunk)
        return destination

    def refuse(self, name: str, reason: str) -> None:
        """Record one refused file (the caller has counted it in `file_count`)."""
        self.refused_files += 1
        self.refused.append({"file": name, "reason": reason})

    def refuse_all(self, count: int, reason: str) -> None:
        self.file_count += count
        self.refused_files += count
        self.refused.append({"file": "(whole upload)", "reason": reason})

    def add(self, candidate: _Candidate) -> None:
        """Judge one gathered file: expand archives, set NIfTI aside, read and check DICOM headers."""
        lower = candidate.name.lower()
        try:
            size = candidate.path.stat().st_size
        except OSError as exc:
            self.file_count += 1
            self.refuse(candidate.name, f"cannot be read: {exc.strerror}")
            return
        if lower.endswith(".zip") or looks_like_zip(candidate.path):
            self._add_archive(candidate, size)
            return
        self.file_count += 1
        if size > self.limits.max_file_bytes:
            self.refuse(candidate.name, _too_large(size, self.limits))
            return
        if lower.endswith(NIFTI_SUFFIXES):
            self.niftis.append(candidate)
            return
        try:
            item = _read_dicom(candidate)
        except NotIngestable as exc:
            if lower.endswith(OTHER_ARCHIVES) and str(exc) == "not a DICOM file":
                self.refuse(candidate.name, "only .zip archives are supported")
            else:
                self.refuse(candidate.name, str(exc))
            return
        if item is None:
            self.notes.append(f"{candidate.name}: DICOMDIR (an index of a disc's files) skipped")
            return
        key = (item.study_uid, item.series_uid)
        self.groups.setdefault(key, _SeriesGroup(*key)).files.append(item)

    def _add_archive(self, candidate: _Candidate, size: int) -> None:
        # The archive's own size is bounded by the expansion limit, its members by the per-file limit.
        if size > max(self.limits.max_expanded_bytes, self.limits.max_file_bytes):
            self.file_count += 1
            limit = self.limits.max_expanded_bytes // MB
            self.refuse(candidate.name, f"archive is {_mb(size)} MB, over the {limit} MB limit")
            return
        self._archive_count += 1
        target = self.staging / f"zip{self._archive_count:04d}"
        try:
            members = extract_zip(
                candidate.path,
                target,
                max_expanded_bytes=self.limits.max_expanded_bytes,
                max_member_bytes=self.limits.max_file_bytes,
                max_members=self.limits.max_files or 10**9,
            )
        except ArchiveError as exc:
            self.file_count += 1
            self.refuse(candidate.name, str(exc))
            return
        if candidate.staged:
            candidate.path.unlink(missing_ok=True)  # its content is now in `target`
        for member in members:
            name = f"{candidate.name}/{member.name}"
            if _hidden(PurePosixPath(member.name)):
                continue
            if member.path is None:
                self.file_count += 1
                self.refuse(name, member.skipped_reason or _too_large(member.size, self.limits))
            elif member.name.lower().endswith(".zip") or looks_like_zip(member.path):
                self.file_count += 1
                self.refuse(name, "an archive inside an archive: upload the inner archive itself")
            else:
                self.add(_Candidate(name, member.path, staged=True))

    # -- judging and storing --

    def finish(self) -> Upload:
        """Judge and store every series and NIfTI volume, then save and return the Upload with its report."""
        for group in self.groups.values():
            self._ingest_series(group)
        for candidate in self.niftis:
            self._ingest_nifti(candidate)
        refused_files = self.refused_files
        upload = Upload.objects.create(
            team=self.team,
            user=self.user,
            channel=self.channel,
            file_count=self.file_count,
            accepted_count=self.accepted,
            refused_count=refused_files,
            report={"series": self.series_report, "refused": self.refused, "notes": self.notes},
        )
        logger.info(
            "upload %s to %s: %d files, %d accepted, %d refused",
            upload.pk,
            self.team.slug,
            self.file_count,
            self.accepted,
            refused_files,
        )
        return upload

    def _refuse_files(self, files: Sequence[_DicomFile], reason: str) -> None:
        for item in files:
            self.refuse(item.candidate.name, reason)

    def _ingest_series(self, group: _SeriesGroup) -> None:
        label = _series_label(group)
        derived = sorted({name for item in group.files for name in item.derived})
        if derived:
            self.notes.append(
                f"{label}: the files carry no {' or '.join(derived)} (anonymised?); stable ones were derived "
                "from their other tags"
            )
        unique: dict[str, _DicomFile] = {}
        for item in group.files:
            if item.sop_uid in unique:
                self.notes.append(
                    f"{item.candidate.name} is the same image as {unique[item.sop_uid].candidate.name} "
                    "(same SOPInstanceUID); stored once"
                )
            else:
                unique[item.sop_uid] = item
        existing = (
            Series.objects.for_team(self.team)
            .filter(study__study_instance_uid=group.study_uid, series_instance_uid=group.series_uid)
            .select_related("study__patient")
            .first()
        )
        stored = dict(existing.instances.values_list("sop_instance_uid", "file")) if existing else {}
        new = [item for uid, item in unique.items() if uid not in stored]
        if existing is not None and not new:
            self.accepted += len(group.files)
            self.notes.append(f"{label}: already stored ({existing.slice_count} slices); nothing new")
            self.series_report.append(_series_entry(existing, created=False, added=0))
            return

        try:
            headers = [item.header for item in new]
            uid_of = {id(item.header): item.sop_uid for item in new}
            for uid, header in _stored_headers(stored).items():
                headers.append(header)
                uid_of[id(header)] = uid
            geometry = order_slices(headers, min_slices=MIN_SLICES)
            _check_volume(geometry)
            index_of = {uid_of[id(ds)]: i for i, ds in enumerate(geometry.datasets)}
        except (GeometryError, NotIngestable) as exc:
            reason = f"{label}: {exc}"
            if existing is not None:
                reason = (
                    f"{label}: adding {len(new)} slice(s) to the stored series ({existing.slice_count} slices) "
                    f"would make it inconsistent: {exc}"
                )
            self._refuse_files(group.files, reason)
            return
        try:
            identifier, sex, birth_year = self._patient_of(group)
        except NotIngestable as exc:
            self._refuse_files(group.files, f"{label}: {exc}")
            return

        if existing is None:
            clash = (
                Study.objects.for_team(self.team)
                .filter(study_instance_uid=group.study_uid)
                .exclude(patient__identifier=identifier)
                .select_related("patient")
                .first()
            )
            if clash is not None:
                self._refuse_files(
                    group.files,
                    f"{label}: study {group.study_uid} already belongs to patient {clash.patient.identifier}, "
                    f"not {identifier}",
                )
                return
        elif existing.study.patient.identifier != identifier:
            self.notes.append(f"{label}: kept under patient {existing.study.patient.identifier}, where it is stored")

        folder = _series_folder(self.team, group)
        written: list[Path] = []
        try:
            new_files: dict[str, tuple[Path, int]] = {}
            for item in new:
                destination = folder / f"{_safe_name(item.sop_uid)}.dcm"
                _place(item.candidate.path, destination, move=item.candidate.staged)
                written.append(destination)
                new_files[item.sop_uid] = (destination, destination.stat().st_size)
            with transaction.atomic():
                series, created = self._save_series(
                    group, existing, geometry, index_of, new, new_files, identifier, sex, birth_year
                )
        except (OSError, DatabaseError, NotIngestable) as exc:
            if isinstance(exc, DatabaseError):
                _drop_dead_connection()
            _remove_unreferenced(written)
            logger.warning("%s could not be stored: %s", label, exc)
            if isinstance(exc, NotIngestable):
                reason = str(exc)
            elif isinstance(exc, IntegrityError):
                reason = "another upload stored this series at the same moment; upload again to add what is missing"
            else:
                reason = _storage_failure(exc)
            self._refuse_files(group.files, f"{label}: {reason}")
            return
        self.accepted += len(group.files)
        self.series_report.append(_series_entry(series, created=created, added=len(new)))
        if not created:
            self.notes.append(f"{label}: {len(new)} slice(s) added to the stored series, now {series.slice_count}")

    def _patient_of(self, group: _SeriesGroup) -> tuple[str, str, int | None]:
        ids = {str(item.header.get("PatientID") or "").strip() for item in group.files}
        if self.patient_identifier:
            identifier = self.patient_identifier
        elif len(ids) > 1:
            raise NotIngestable(f"its files name {len(ids)} different patients ({', '.join(sorted(ids))})")
        else:
            identifier = ids.pop()
            if not identifier:
                raise NotIngestable("no PatientID in the files; give a patient identifier with the upload")
        first = group.files[0].header
        sex = str(first.get("PatientSex") or "").strip().upper()[:1]
        sex = sex if sex in Sex.values else Sex.UNKNOWN
        birth = str(first.get("PatientBirthDate") or "")
        birth_year = int(birth[:4]) if re.fullmatch(r"\d{8}", birth) and 1850 <= int(birth[:4]) <= 2200 else None
        return identifier[:64], sex, birth_year

    def _save_series(
        self,
        group: _SeriesGroup,
        existing: Series | None,
        geometry: SliceGeometry,
        index_of: dict[str, int],
        new: list[_DicomFile],
        new_files: dict[str, tuple[Path, int]],
        identifier: str,
        sex: str,
        birth_year: int | None,
    ) -> tuple[Series, bool]:
        header = new[0].header
        media = Path(settings.MEDIA_ROOT)
        if existing is None:
            patient, _ = Patient.objects.get_or_create(
                team=self.team, identifier=identifier, defaults={"sex": sex, "birth_year": birth_year}
            )
            _fill_patient(patient, sex, birth_year)
            study, _ = Study.objects.get_or_create(
                patient=patient,
                study_instance_uid=group.study_uid,
                defaults={
                    "accession_number": str(header.get("AccessionNumber") or "")[:64],
                    "study_date": _dicom_date(header.get("StudyDate")),
                    "description": str(header.get("StudyDescription") or "")[:200],
                },
            )
            series = Series(
                study=study,
                series_instance_uid=group.series_uid,
                modality=str(header.get("Modality") or "CT")[:16],
                description=str(header.get("SeriesDescription") or "")[:200],
                series_number=_int_or_none(header.get("SeriesNumber")),
                source=SeriesSource.DICOM,
                status=SeriesStatus.RECEIVING,
            )
            created = True
        else:
            series = Series.objects.select_for_update().get(pk=existing.pk)
            if series.instances.count() != existing.slice_count:
                raise NotIngestable("the stored series changed during this upload; upload again")
            created = False
        _apply_geometry(series, geometry)
        series.status = SeriesStatus.RECEIVING
        series.save()

        positions = geometry.positions
        if not created:
            kept = list(series.instances.all())
            for instance in kept:
                instance.index = index_of[instance.sop_instance_uid]
                instance.position = positions[instance.index]
            Instance.objects.bulk_update(kept, ["index", "position"])
        rows = []
        for item in new:
            path, size = new_files[item.sop_uid]
            index = index_of[item.sop_uid]
            rows.append(
                Instance(
                    series=series,
                    sop_instance_uid=item.sop_uid,
                    instance_number=_int_or_none(item.header.get("InstanceNumber")),
                    index=index,
                    position=positions[index],
                    file=path.relative_to(media).as_posix(),
                    file_size=size,
                    transfer_syntax_uid=item.transfer_syntax,
                )
            )
        Instance.objects.bulk_create(rows)
        # Complete: every slice is in and the geometry holds for all of them.
        series.status = SeriesStatus.READY
        series.status_message = ""
        series.save(update_fields=["status", "status_message"])
        transaction.on_commit(_announce(series))
        return series, created

    def _ingest_nifti(self, candidate: _Candidate) -> None:
        if not self.patient_identifier:
            self.refuse(
                candidate.name,
                "a NIfTI file carries no patient information: give a patient identifier with the upload",
            )
            return
        try:
            info = _nifti_geometry(candidate.path)
        except NotIngestable as exc:
            self.refuse(candidate.name, str(exc))
            return
        digest = _sha256(candidate.path)
        series_uid = _uid_from_digest(digest, "series")
        study_uid = _uid_from_digest(digest, "study")
        existing = (
            Series.objects.for_team(self.team)
            .filter(series_instance_uid=series_uid, source=SeriesSource.NIFTI)
            .select_related("study__patient")
            .first()
        )
        if existing is not None:
            self.accepted += 1
            self.notes.append(
                f"{candidate.name}: already stored for patient {existing.study.patient.identifier}; nothing new"
            )
            self.series_report.append(_series_entry(existing, created=False, added=0))
            return
        suffix = ".nii.gz" if candidate.name.lower().endswith(".gz") else ".nii"
        destination = Path(settings.MEDIA_ROOT) / "nifti" / self.team.slug / f"{series_uid}{suffix}"
        try:
            _place(candidate.path, destination, move=candidate.staged)
            with transaction.atomic():
                patient, _ = Patient.objects.get_or_create(team=self.team, identifier=self.patient_identifier)
                study, _ = Study.objects.get_or_create(
                    patient=patient,
                    study_instance_uid=study_uid,
                    defaults={"description": f"NIfTI upload {Path(candidate.name).name}"[:200]},
                )
                series = Series(
                    study=study,
                    series_instance_uid=series_uid,
                    description=Path(candidate.name).name[:200],
                    source=SeriesSource.NIFTI,
                    volume_file=destination.relative_to(Path(settings.MEDIA_ROOT)).as_posix(),
                    status=SeriesStatus.READY,
                    **info,
                )
                series.save()
                transaction.on_commit(_announce(series))
        except (OSError, DatabaseError) as exc:
            if isinstance(exc, DatabaseError):
                _drop_dead_connection()
            _remove_unreferenced_volume(destination)
            self.refuse(candidate.name, _storage_failure(exc))
            return
        self.accepted += 1
        self.series_report.append(_series_entry(series, created=True, added=0))


# --- reading and checking --------------------------------------------------------------------------


def _read_dicom(candidate: _Candidate) -> _DicomFile | None:
    """Read one file's header and check it is a CT slice with pixel data; None for a DICOMDIR."""
    try:
        with open(candidate.path, "rb") as handle:
            header = pydicom.dcmread(handle, stop_before_pixels=True)
            # The reader stops right before the pixel data element, if there is one.
            start = handle.tell()
            element = handle.read(12)
            handle.seek(-min(TAIL_BYTES, os.fstat(handle.fileno()).st_size), os.SEEK_END)
            tail = handle.read()
            remaining = os.fstat(handle.fileno()).st_size - start
    except InvalidDicomError as exc:
        raise NotIngestable("not a DICOM file") from exc
    except OSError as exc:  # permissions, a failing disk, a file removed while being read: not the file's content
        raise NotIngestable(f"cannot be read: {exc.strerror or exc}") from exc
    except Exception as exc:  # pydicom raises many types (struct.error, EOFError, ...) for damaged files
        raise NotIngestable(f"not a readable DICOM file ({type(exc).__name__}: {exc})") from exc
    header.filename = candidate.name  # messages from the geometry check name the file as the user knows it
    meta = getattr(header, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if str(header.get("SOPClassUID", "")) == MEDIA_DIRECTORY_SOP_CLASS or "DirectoryRecordSequence" in header:
        return None
    if syntax == DEFLATED_SYNTAX:
        if "PixelData" not in pydicom.dcmread(candidate.path, defer_size=1024):
            raise NotIngestable("DICOM without pixel data (a structured report?)")
    else:
        _check_pixel_element(header, syntax, element, remaining, tail)
    _check_ct(header)
    image_type = [str(v).upper() for v in (header.get("ImageType") or [])]
    if "LOCALIZER" in image_type:
        # Scanners often file the scout with the axial slices; it must not break the volume.
        raise NotIngestable("a localizer (scout) image, not a slice of a volume")
    sop_uid = _uid(header, "SOPInstanceUID") or (_uid(meta, "MediaStorageSOPInstanceUID") if meta else "")
    if not sop_uid:
        raise NotIngestable("DICOM without SOPInstanceUID: the image cannot be told apart from others")
    if syntax:
        try:
            decodable = get_decoder(UID(syntax)).is_available
        except NotImplementedError:
            decodable = False
        if not decodable:
            raise NotIngestable(f"transfer syntax {UID(syntax).name or syntax} cannot be decoded here")
    # Some anonymisers blank the study and series UIDs; derive stable ones from what identifies them.
    derived = []
    study_uid = _uid(header, "StudyInstanceUID")
    if not study_uid:
        study_uid = _derived_uid(header, "study", STUDY_IDENTITY)
        derived.append("StudyInstanceUID")
    series_uid = _uid(header, "SeriesInstanceUID")
    if not series_uid:
        series_uid = _derived_uid(header, f"series of {study_uid}", SERIES_IDENTITY)
        derived.append("SeriesInstanceUID")
    return _DicomFile(candidate, header, sop_uid, study_uid, series_uid, syntax, tuple(derived))


def _uid(dataset: Dataset, keyword: str) -> str:
    return str(dataset.get(keyword) or "").strip()


def _derived_uid(header: Dataset, kind: str, keywords: tuple[str, ...]) -> str:
    identity = "|".join([kind, *(str(header.get(k) or "").strip() for k in keywords)])
    return "2.25." + str(int(hashlib.sha256(identity.encode()).hexdigest()[:32], 16))


def _check_pixel_element(header: Dataset, syntax: str, element: bytes, remaining: int, tail: bytes) -> None:
    """Check, without decoding, that the pixel data element is there and whole (not cut off in transfer)."""
    tag = element[:4]
    if tag not in PIXEL_TAGS_LE and tag not in PIXEL_TAGS_BE:
        raise NotIngestable("DICOM without pixel data (a structured report?)")
    order = "big" if tag in PIXEL_TAGS_BE else "little"
    if syntax == IMPLICIT_SYNTAX:
        length, header_size = int.from_bytes(element[4:8], order), 8
    else:
        length, header_size = int.from_bytes(element[8:12], order), 12
    if length == UNDEFINED_LENGTH:
        # Compressed frames end with a sequence delimiter; a file cut short lacks it.
        if SEQUENCE_DELIMITER not in tail:
            raise NotIngestable("the file is cut short: its compressed pixel data does not end")
        return
    try:
        frames = int(header.get("NumberOfFrames") or 1)
        expected = int(header.Rows) * int(header.Columns) * int(header.get("SamplesPerPixel") or 1) * frames
        expected = expected * int(header.BitsAllocated) // 8
    except (AttributeError, TypeError, ValueError):
        return  # the image module itself is incomplete: the geometry check names what is missing
    if length < expected or remaining < header_size + length:
        raise NotIngestable(
            f"the file is cut short: {max(0, remaining - header_size)} bytes of pixel data where {expected} are needed"
        )


def _check_ct(header: Dataset) -> None:
    modality = str(header.get("Modality") or "").strip().upper()
    if modality and modality != "CT":
        raise NotIngestable(f"modality {modality} is not CT")
    if not modality:
        # Some exports drop Modality; a CT SOP class or a rescale to HU still says CT.
        rescale_type = str(header.get("RescaleType") or "HU").strip().upper()
        is_ct_class = str(header.get("SOPClassUID", "")) in CT_SOP_CLASSES
        if not is_ct_class and not ("RescaleIntercept" in header and rescale_type == "HU"):
            raise NotIngestable("no Modality tag, and neither a CT SOP class nor a rescale to HU: not known to be CT")
    samples = int(header.get("SamplesPerPixel") or 1)
    if samples != 1:
        raise NotIngestable(f"a colour image ({samples} samples per pixel), not a CT slice")
    bits = int(header.get("BitsAllocated") or 16)
    if bits <= 8:
        raise NotIngestable(f"an {bits}-bit image (a screenshot?), not CT in Hounsfield units")


def _check_volume(geometry: SliceGeometry) -> None:
    if min(geometry.rows, geometry.columns) < MIN_MATRIX:
        raise NotIngestable(f"images of {geometry.rows}x{geometry.columns} pixels are too small for a CT volume")
    extent = geometry.positions[-1] - geometry.positions[0]
    if extent < MIN_EXTENT_MM:
        raise NotIngestable(
            f"not a volume: {geometry.n_slices} slices cover only {extent:.1f} mm "
            f"(at least {MIN_EXTENT_MM:g} mm are needed to hold the lungs)"
        )


def _stored_headers(files: dict[str, str]) -> dict[str, Dataset]:
    """Headers of a stored series' files, by SOPInstanceUID (`files` maps it to the path under MEDIA_ROOT)."""
    media = Path(settings.MEDIA_ROOT)
    headers = {}
    for uid, relative in files.items():
        try:
            headers[uid] = pydicom.dcmread(media / relative, stop_before_pixels=True)
        except (OSError, InvalidDicomError) as exc:
            raise NotIngestable(f"a stored slice of this series cannot be read ({relative}): {exc}") from exc
    return headers


def _nifti_geometry(path: Path) -> dict:
    """Series geometry fields of a NIfTI CT from its header (LPS, like DICOM), after checks; no full read."""
    import nibabel as nib
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise NotIngestable("not a readable NIfTI file") from exc
    if reader.GetDimension() != 3 or reader.GetNumberOfComponents() != 1:
        raise NotIngestable(
            f"not a single 3-D greyscale volume ({reader.GetDimension()}-D, {reader.GetNumberOfComponents()} "
            "component(s))"
        )
    size = reader.GetSize()
    spacing = reader.GetSpacing()
    direction = np.array(reader.GetDirection()).reshape(3, 3)  # columns: LPS direction of each array axis
    # NIfTI's third array axis is the slice axis; the loader could turn a coronal stack, but not make it axial.
    plane = plane_name(direction[:, 2])
    if plane != "axial":
        raise NotIngestable(f"{plane} volume: only axial CT can be analysed")
    columns, rows, slices = size
    if slices < MIN_SLICES:
        raise NotIngestable(f"not a volume: only {slices} slice(s)")
    if min(rows, columns) < MIN_MATRIX:
        raise NotIngestable(f"images of {rows}x{columns} pixels are too small for a CT volume")
    extent = (slices - 1) * spacing[2]
    if extent < MIN_EXTENT_MM:
        raise NotIngestable(f"not a volume: {slices} slices cover only {extent:.1f} mm")
    # One middle slice is enough to tell HU from a mask or an 8-bit picture, without reading the volume.
    try:
        image = nib.load(str(path))
        middle = np.asarray(image.dataobj[:, :, slices // 2], dtype=np.float32)
    except Exception as exc:  # nibabel raises several types for a damaged file
        raise NotIngestable(f"the NIfTI data cannot be read ({exc})") from exc
    low, high = float(middle.min()), float(middle.max())
    if low > AIR_HU or high - low < 500:
        raise NotIngestable(
            f"values from {low:g} to {high:g} do not look like CT in Hounsfield units (air is near -1000)"
        )
    return {
        "modality": "CT",
        "rows": rows,
        "columns": columns,
        "slice_count": slices,
        "pixel_spacing_row": float(spacing[1]),
        "pixel_spacing_col": float(spacing[0]),
        "slice_spacing": float(spacing[2]),
        "slice_thickness": float(spacing[2]),
        # Like DICOM's ImageOrientationPatient: the directions of the first and second array axes.
        "orientation": [float(v) for v in (*direction[:, 0], *direction[:, 1])],
        "origin": [float(v) for v in reader.GetOrigin()],
    }


# --- storing ---------------------------------------------------------------------------------------


def _place(source: Path, destination: Path, *, move: bool) -> None:
    """Make `destination` appear complete or not at all: a temporary name in its folder, then os.replace."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    if move:
        try:
            os.replace(source, destination)  # staging is under MEDIA_ROOT: one file system, atomic
            return
        except OSError:
            pass  # another file system: copy below
    temporary = destination.parent / f".{destination.name}.{uuid.uuid4().hex}.part"
    try:
        shutil.copyfile(source, temporary)
        os.replace(temporary, destination)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _remove_unreferenced(paths: Iterable[Path]) -> None:
    """Remove files written for a series whose rows failed, unless a row (another upload's) points at them."""
    media = Path(settings.MEDIA_ROOT)
    for path in paths:
        try:
            referenced = Instance.objects.filter(file=path.relative_to(media).as_posix()).exists()
        except DatabaseError:
            referenced = False  # the database is unreachable: nothing can point at the file
        if not referenced:
            path.unlink(missing_ok=True)


def _remove_unreferenced_volume(path: Path) -> None:
    """Remove a NIfTI file written for a series whose row failed, unless a row points at it."""
    try:
        referenced = Series.objects.filter(volume_file=path.relative_to(Path(settings.MEDIA_ROOT)).as_posix()).exists()
    except DatabaseError:
        referenced = False  # the database is unreachable: nothing can point at the file
    if not referenced:
        path.unlink(missing_ok=True)


def _drop_dead_connection() -> None:
    """After a database error, close the connection if it is dead (server restarted, connection killed).

    The next query then opens a fresh one, so the rest of the upload (other series, the Upload row)
    is stored once the server is back, instead of failing on a connection that can never work again.
    Inside an outer transaction nothing can be done: that transaction is lost either way.
    """
    if connection.in_atomic_block or connection.connection is None:
        return
    if not connection.is_usable():
        connection.close()


def _storage_failure(exc: OSError | DatabaseError, *, done: str = "stored") -> str:
    """The reason shown for files that could not be received or stored (`done`) because of `exc`."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return f"could not be {done}: the server's disk is full; nothing was kept, upload again once space is freed"
    if isinstance(exc, OperationalError):
        return (
            f"could not be {done}: the connection to the database was lost ({str(exc).strip()}); "
            "nothing was kept, upload again"
        )
    if isinstance(exc, OSError):
        return f"could not be {done} ({exc.strerror or exc}); nothing was kept"
    return f"could not be {done} ({exc}); nothing was kept"


def _series_folder(team: Team, group: _SeriesGroup) -> Path:
    return Path(settings.MEDIA_ROOT) / "dicom" / team.slug / _safe_name(group.study_uid) / _safe_name(group.series_uid)


def _safe_name(uid: str) -> str:
    """A file name for a UID: kept as is when it is a plain UID, else cleaned and made unique by a hash."""
    if re.fullmatch(r"[0-9A-Za-z][0-9A-Za-z._-]{0,63}", uid):
        return uid
    cleaned = re.sub(r"[^0-9A-Za-z._-]", "_", uid).lstrip(".")[:48] or "uid"
    return f"{cleaned}-{hashlib.sha256(uid.encode()).hexdigest()[:12]}"


def _apply_geometry(series: Series, geometry: SliceGeometry) -> None:
    series.rows = geometry.rows
    series.columns = geometry.columns
    series.slice_count = geometry.n_slices
    series.pixel_spacing_row, series.pixel_spacing_col = geometry.pixel_spacing
    series.slice_spacing = geometry.slice_spacing
    series.slice_thickness = geometry.slice_thickness
    series.orientation = list(geometry.orientation)
    series.origin = list(geometry.image_positions[0])


def _fill_patient(patient: Patient, sex: str, birth_year: int | None) -> None:
    """Complete what an earlier upload did not know; never overwrite what it did."""
    changed = []
    if patient.sex == Sex.UNKNOWN and sex != Sex.UNKNOWN:
        patient.sex = sex
        changed.append("sex")
    if patient.birth_year is None and birth_year is not None:
        patient.birth_year = birth_year
        changed.append("birth_year")
    if changed:
        patient.save(update_fields=changed)


def _announce(series: Series) -> Callable[[], None]:
    def send() -> None:
        series_ready.send(sender=Series, series=series)

    return send


# --- small helpers ---------------------------------------------------------------------------------


def _series_entry(series: Series, *, created: bool, added: int) -> dict:
    study = series.study
    return {
        "id": series.pk,
        "series_instance_uid": series.series_instance_uid,
        "patient": study.patient.identifier,
        "study_date": study.study_date.isoformat() if study.study_date else None,
        "description": series.description,
        "slices": series.slice_count,
        "status": series.status,
        "created": created,
        "added_instances": added,
    }


def _series_label(group: _SeriesGroup) -> str:
    description = str(group.files[0].header.get("SeriesDescription") or "").strip()
    return f"series {group.series_uid}" + (f" ({description})" if description else "")


def _hidden(relative: Path | PurePosixPath) -> bool:
    """Dot-files and dot-folders (.DS_Store, .git) are never scans."""
    return any(part.startswith(".") for part in relative.parts)


def _too_large(size: int, limits: Limits) -> str:
    return f"file is {_mb(size)} MB, over the {limits.max_file_bytes // MB} MB limit"


def _mb(size: int) -> str:
    return f"{size / MB:.1f}".rstrip("0").rstrip(".")


def _dicom_date(value) -> date | None:
    text = str(value or "").strip()
    if not re.fullmatch(r"\d{8}", text):
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def _int_or_none(value) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _uid_from_digest(digest: str, kind: str) -> str:
    """A DICOM UID (2.25 + 128-bit integer) derived from the file's content, so a re-upload is recognised."""
    return "2.25." + str(int(hashlib.sha256(f"{kind}:{digest}".encode()).hexdigest()[:32], 16))
