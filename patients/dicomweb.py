"""A DICOMweb subset over the stored series: QIDO-RS search, WADO-RS retrieve, STOW-RS store.

Mounted under /dicomweb/ (covidsite/urls.py). Clients authenticate with a REST token
(``Authorization: Token <key>``) or a session. Every query starts from the `for_user` querysets, so a
client sees only its teams' studies: another team's study is absent from searches and a 404 on
retrieval, exactly like one that does not exist.

* QIDO-RS: ``GET studies``, ``series``, ``instances`` (also below a study or a series), matching on
  the UIDs, PatientID (``*`` and ``?`` wildcards), StudyDate (a date or a ``from-to`` range),
  AccessionNumber, Modality, SeriesNumber and InstanceNumber; ``limit`` and ``offset``; results as
  ``application/dicom+json``.
* WADO-RS: a study, series or instance as ``multipart/related; type="application/dicom"`` (stored
  files as they are; decompressed when the client does not accept their transfer syntax), their
  ``metadata`` as JSON, an instance's ``frames/1`` as native pixel bytes and its ``rendered`` image
  (or ``frames/1/rendered``) as PNG or JPEG, windowed with ``?window=center,width,linear`` or the
  image's own window.
* STOW-RS: ``POST studies`` (or ``studies/{uid}``) with ``multipart/related; type="application/dicom"``.
  The parts go through the same ingest and checks as an upload (`patients.ingest.ingest_paths`, channel
  "dicomweb") for the client's team (``?team=<slug>`` when it writes for several); the answer lists
  stored and failed instances, and a ``Warning`` header carries the readable reasons of the failures.
"""

from __future__ import annotations

import io
import mmap
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pydicom
from django.conf import settings
from django.db.models import Count, Q, QuerySet
from django.http import HttpResponse, StreamingHttpResponse
from django.urls import path
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.exceptions import NotFound, ParseError, PermissionDenied
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from audit.choices import AuditAction
from audit.log import record

from .choices import WRITE_ROLES, SeriesSource, SeriesStatus
from .ingest import ingest_paths
from .models import Instance, Series, Study, Team, teams_of

DICOM_JSON = "application/dicom+json"
CHUNK = 1024 * 1024
MB = 1024 * 1024
# STOW-RS failure reasons (PS3.18 / PS3.4 status codes).
PROCESSING_FAILURE = 0x0110
CANNOT_UNDERSTAND = 0xC000
WRONG_STUDY = 0xA900
# Window used for rendered images when neither the request nor the image names one (lung window).
DEFAULT_WINDOW = (-600.0, 1500.0)

# Query keys each level matches on (keyword -> tag); tags are accepted in place of keywords.
STUDY_KEYS = {
    "StudyInstanceUID": "0020000D",
    "PatientID": "00100020",
    "StudyDate": "00080020",
    "AccessionNumber": "00080050",
}
SERIES_KEYS = {"SeriesInstanceUID": "0020000E", "Modality": "00080060", "SeriesNumber": "00200011"}
INSTANCE_KEYS = {"SOPInstanceUID": "00080018", "InstanceNumber": "00200013"}
# Query keys that control the search rather than match.
CONTROL_KEYS = {"limit", "offset", "includefield", "fuzzymatching"}


class AnyAccept(BaseContentNegotiation):
    """DICOMweb media types are chosen by the views themselves; errors are always JSON."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class DicomWebView(APIView):
    """Base of the DICOMweb endpoints: token or session authentication, no Accept-based 406."""

    authentication_classes = [TokenAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated]
    renderer_classes = [JSONRenderer]
    content_negotiation_class = AnyAccept
    schema = None  # DICOMweb is specified by PS3.18, not by the REST API's OpenAPI document


# --- scoping ---------------------------------------------------------------------------------------


def scoped_instances(user, study: str | None = None, series: str | None = None) -> QuerySet[Instance]:
    """Stored instances of `user`'s teams' ready DICOM series, optionally of one study and series."""
    instances = Instance.objects.for_user(user).filter(
        series__status=SeriesStatus.READY, series__source=SeriesSource.DICOM
    )
    if study is not None:
        instances = instances.filter(series__study__study_instance_uid=study)
    if series is not None:
        instances = instances.filter(series__series_instance_uid=series)
    return instances


def _scoped_series(user) -> QuerySet[Series]:
    return Series.objects.for_user(user).filter(status=SeriesStatus.READY, source=SeriesSource.DICOM)


# --- QIDO-RS ---------------------------------------------------------------------------------------


def _query(request: Request, allowed: dict[str, str]) -> dict[str, str]:
    """The matching keys of the query string, by keyword; an unsupported key is a 400 that lists the others."""
    by_tag = {tag: keyword for keyword, tag in allowed.items()}
    matches = {}
    for key, value in request.query_params.items():
        if key in CONTROL_KEYS:
            continue
        keyword = key if key in allowed else by_tag.get(key.upper())
        if keyword is None:
            raise ParseError(f"cannot search on {key!r} here; supported: {', '.join(allowed)}, limit, offset")
        if value != "":
            matches[keyword] = value
    return matches


def _page(request: Request, items: QuerySet) -> QuerySet:
    def number(name: str) -> int | None:
        raw = request.query_params.get(name)
        if raw in (None, ""):
            return None
        if not raw.isdigit():
            raise ParseError(f"{name} must be a non-negative integer, got {raw!r}")
        return int(raw)

    offset, limit = number("offset") or 0, number("limit")
    return items[offset : offset + limit] if limit is not None else items[offset:]


def _text_match(field: str, value: str) -> Q:
    """A QIDO match on a string attribute: exact, a comma-separated UID list, or with * and ? wildcards."""
    if "*" in value or "?" in value:
        pattern = "^" + "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in value) + "$"
        return Q(**{f"{field}__regex": pattern})
    if "," in value:
        return Q(**{f"{field}__in": [v.strip() for v in value.split(",") if v.strip()]})
    return Q(**{field: value})


def _date_match(field: str, value: str) -> Q:
    """A StudyDate match: YYYYMMDD, or a range YYYYMMDD-YYYYMMDD with either end open."""

    def parse(text: str) -> date | None:
        text = text.strip()
        if not text:
            return None
        if not re.fullmatch(r"\d{8}", text):
            raise ParseError(f"StudyDate must be YYYYMMDD or a range YYYYMMDD-YYYYMMDD, got {value!r}")
        try:
            return date(int(text[:4]), int(text[4:6]), int(text[6:]))
        except ValueError:
            raise ParseError(f"StudyDate {text!r} is not a calendar date") from None

    if "-" not in value:
        return Q(**{field: parse(value)})
    start, end = (parse(part) for part in value.split("-", 1))
    condition = Q()
    if start is not None:
        condition &= Q(**{f"{field}__gte": start})
    if end is not None:
        condition &= Q(**{f"{field}__lte": end})
    return condition


def _int_match(field: str, value: str, keyword: str) -> Q:
    try:
        return Q(**{field: int(value)})
    except ValueError:
        raise ParseError(f"{keyword} must be an integer, got {value!r}") from None


def _filters(matches: dict[str, str], prefix: str) -> Q:
    """Django filters for QIDO matches; `prefix` leads from the searched model to Series ('' for Series)."""
    study = f"{prefix}study__"
    fields = {
        "StudyInstanceUID": lambda v: _text_match(f"{study}study_instance_uid", v),
        "PatientID": lambda v: _text_match(f"{study}patient__identifier", v),
        "StudyDate": lambda v: _date_match(f"{study}study_date", v),
        "AccessionNumber": lambda v: _text_match(f"{study}accession_number", v),
        "SeriesInstanceUID": lambda v: _text_match(f"{prefix}series_instance_uid", v),
        "Modality": lambda v: _text_match(f"{prefix}modality", v),
        "SeriesNumber": lambda v: _int_match(f"{prefix}series_number", v, "SeriesNumber"),
        "SOPInstanceUID": lambda v: _text_match("sop_instance_uid", v),
        "InstanceNumber": lambda v: _int_match("instance_number", v, "InstanceNumber"),
    }
    condition = Q()
    for keyword, value in matches.items():
        condition &= fields[keyword](value)
    return condition


def _json_response(items: list[dict] | dict, status: int = 200) -> HttpResponse:
    import json

    return HttpResponse(json.dumps(items), status=status, content_type=DICOM_JSON)


def _base_url(request: Request) -> str:
    return request.build_absolute_uri("/dicomweb")


def _study_json(study: Study, base: str) -> dict:
    ds = Dataset()
    ds.StudyInstanceUID = study.study_instance_uid
    ds.StudyDate = study.study_date.strftime("%Y%m%d") if study.study_date else ""
    ds.AccessionNumber = study.accession_number
    ds.StudyDescription = study.description
    ds.PatientID = study.patient.identifier
    ds.PatientSex = study.patient.sex if study.patient.sex != "U" else ""
    ds.ModalitiesInStudy = sorted(set(study.modalities)) if study.modalities else ""
    ds.NumberOfStudyRelatedSeries = study.series_count
    ds.NumberOfStudyRelatedInstances = study.instance_count
    ds.RetrieveURL = f"{base}/studies/{study.study_instance_uid}"
    return ds.to_json_dict()


def _series_json(series: Series, base: str) -> dict:
    ds = Dataset()
    ds.StudyInstanceUID = series.study.study_instance_uid
    ds.SeriesInstanceUID = series.series_instance_uid
    ds.Modality = series.modality
    ds.SeriesDescription = series.description
    ds.SeriesNumber = series.series_number if series.series_number is not None else ""
    ds.NumberOfSeriesRelatedInstances = series.slice_count
    ds.RetrieveURL = f"{base}/studies/{series.study.study_instance_uid}/series/{series.series_instance_uid}"
    return ds.to_json_dict()


def _instance_json(instance: Instance, sop_class: str, base: str) -> dict:
    study_uid = instance.series.study.study_instance_uid
    series_uid = instance.series.series_instance_uid
    ds = Dataset()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = instance.sop_instance_uid
    ds.InstanceNumber = instance.instance_number if instance.instance_number is not None else ""
    ds.Rows, ds.Columns = instance.series.rows or 0, instance.series.columns or 0
    ds.NumberOfFrames = 1
    ds.RetrieveURL = f"{base}/studies/{study_uid}/series/{series_uid}/instances/{instance.sop_instance_uid}"
    return ds.to_json_dict()


def search_studies(request: Request) -> list[dict]:
    matches = _query(request, STUDY_KEYS)
    visible = _scoped_series(request.user)
    studies = (
        Study.objects.for_user(request.user).filter(pk__in=visible.values("study_id")).filter(_study_filters(matches))
    )
    studies = studies.annotate(
        series_count=Count("series", filter=Q(series__in=visible), distinct=True),
        instance_count=Count("series__instances", filter=Q(series__in=visible)),
    ).select_related("patient")
    base = _base_url(request)
    page = list(_page(request, studies.order_by("study_date", "id")))
    modalities = _modalities({study.pk for study in page}, visible)
    for study in page:
        study.modalities = modalities.get(study.pk, [])
    return [_study_json(study, base) for study in page]


def _study_filters(matches: dict[str, str]) -> Q:
    """Study-level matches relative to Study (the shared filters are written relative to Series)."""
    fields = {
        "StudyInstanceUID": lambda v: _text_match("study_instance_uid", v),
        "PatientID": lambda v: _text_match("patient__identifier", v),
        "StudyDate": lambda v: _date_match("study_date", v),
        "AccessionNumber": lambda v: _text_match("accession_number", v),
    }
    condition = Q()
    for keyword, value in matches.items():
        condition &= fields[keyword](value)
    return condition


def _modalities(study_ids: set[int], visible: QuerySet[Series]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for study_id, modality in visible.filter(study_id__in=study_ids).values_list("study_id", "modality").distinct():
        found.setdefault(study_id, []).append(modality)
    return found


def search_series(request: Request, study: str | None = None) -> list[dict]:
    matches = _query(request, {**STUDY_KEYS, **SERIES_KEYS} if study is None else SERIES_KEYS)
    series = _scoped_series(request.user).filter(_filters(matches, prefix=""))
    if study is not None:
        series = series.filter(study__study_instance_uid=study)
    base = _base_url(request)
    page = _page(
        request, series.select_related("study").order_by("study__study_date", "study_id", "series_number", "id")
    )
    return [_series_json(s, base) for s in page]


def search_instances(request: Request, study: str | None = None, series: str | None = None) -> list[dict]:
    allowed = dict(INSTANCE_KEYS)
    if series is None:
        allowed.update(SERIES_KEYS)
    if study is None:
        allowed.update(STUDY_KEYS)
    matches = _query(request, allowed)
    instances = scoped_instances(request.user, study, series).filter(_filters(matches, prefix="series__"))
    base = _base_url(request)
    page = list(
        _page(
            request,
            instances.select_related("series__study").order_by("series__study_id", "series_id", "index"),
        )
    )
    return [_instance_json(i, _sop_class(i), base) for i in page]


def _sop_class(instance: Instance) -> str:
    try:
        header = pydicom.dcmread(_file(instance), stop_before_pixels=True, specific_tags=["SOPClassUID"])
        return str(header.get("SOPClassUID", ""))
    except (OSError, InvalidDicomError):
        return ""


# --- WADO-RS ---------------------------------------------------------------------------------------


def _file(instance: Instance) -> Path:
    return Path(settings.MEDIA_ROOT) / instance.file


def _found(instances: QuerySet[Instance]) -> list[Instance]:
    found = list(instances.order_by("series_id", "index"))
    if not found:
        raise NotFound("no such study, series or instance")
    return found


def _audit(request: Request, found: list[Instance], what: str) -> None:
    """One EXPORT event per retrieved series (frames and rendered images of one instance are not audited)."""
    counts: dict[int, int] = {}
    for instance in found:
        counts[instance.series_id] = counts.get(instance.series_id, 0) + 1
    for series in Series.objects.filter(pk__in=counts).select_related("study__patient__team"):
        record(request, AuditAction.EXPORT, series, summary=f"{what} of {counts[series.pk]} instance(s)")


def _accepted_syntaxes(request: Request) -> set[str]:
    """Transfer syntaxes the client accepts for application/dicom parts ('*' for any)."""
    accept = request.META.get("HTTP_ACCEPT", "")
    syntaxes = set()
    for item in accept.split(","):
        if "application/dicom" not in item and "*/*" not in item:
            continue
        match = re.search(r'transfer-syntax\s*=\s*"?([0-9.*]+)"?', item)
        syntaxes.add(match.group(1) if match else ("*" if "*/*" in item else ExplicitVRLittleEndian))
    return syntaxes or {"*"}


def _dicom_bytes(instance: Instance, accepted: set[str]) -> bytes:
    path = _file(instance)
    if "*" in accepted or instance.transfer_syntax_uid in accepted or not instance.transfer_syntax_uid:
        return path.read_bytes()
    # The client cannot read the stored (compressed) syntax: send it decompressed.
    ds = pydicom.dcmread(path)
    ds.decompress()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _multipart(parts: Iterable[bytes], part_type: str) -> StreamingHttpResponse:
    boundary = uuid.uuid4().hex

    def body() -> Iterator[bytes]:
        for content in parts:
            yield f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode()
            yield content
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    return StreamingHttpResponse(body(), content_type=f'multipart/related; type="{part_type}"; boundary={boundary}')


def retrieve(request: Request, instances: QuerySet[Instance]) -> StreamingHttpResponse:
    found = _found(instances)
    _audit(request, found, "DICOMweb retrieve")
    accepted = _accepted_syntaxes(request)
    return _multipart((_dicom_bytes(i, accepted) for i in found), "application/dicom")


def metadata(request: Request, instances: QuerySet[Instance]) -> HttpResponse:
    items = []
    found = _found(instances)
    _audit(request, found, "DICOMweb metadata")
    for instance in found:
        header = pydicom.dcmread(_file(instance), stop_before_pixels=True)
        items.append(header.to_json_dict(bulk_data_threshold=4096, bulk_data_element_handler=lambda element: ""))
    return _json_response(items)


def _frame_number(frames: str) -> None:
    numbers = [part.strip() for part in frames.split(",")]
    if any(not n.isdigit() for n in numbers):
        raise ParseError(f"frame numbers must be positive integers separated by commas, got {frames!r}")
    if any(int(n) != 1 for n in numbers):
        raise NotFound("these are single-frame images: only frame 1 exists")


def frames(request: Request, instances: QuerySet[Instance], frame_list: str) -> StreamingHttpResponse:
    _frame_number(frame_list)
    [instance] = _found(instances)
    pixels = pydicom.dcmread(_file(instance)).pixel_array
    return _multipart([np.ascontiguousarray(pixels).tobytes()], "application/octet-stream")


def rendered(request: Request, instances: QuerySet[Instance]) -> HttpResponse:
    from PIL import Image

    [instance] = _found(instances)
    ds = pydicom.dcmread(_file(instance))
    values = ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1) or 1)
    values += float(ds.get("RescaleIntercept", 0) or 0)
    center, width = _window(request, ds)
    low = center - width / 2
    scaled = np.clip((values - low) / width * 255.0, 0, 255).astype(np.uint8)
    accept = request.META.get("HTTP_ACCEPT", "")
    jpeg = "image/jpeg" in accept and "image/png" not in accept
    out = io.BytesIO()
    Image.fromarray(scaled).save(out, format="JPEG" if jpeg else "PNG")
    return HttpResponse(out.getvalue(), content_type="image/jpeg" if jpeg else "image/png")


def _window(request: Request, ds: Dataset) -> tuple[float, float]:
    raw = request.query_params.get("window")
    if raw:
        parts = raw.split(",")
        try:
            center, width = float(parts[0]), float(parts[1])
        except (IndexError, ValueError):
            raise ParseError(f"window must be center,width[,function], got {raw!r}") from None
        if width <= 0:
            raise ParseError(f"window width must be positive, got {width:g}")
        return center, width
    try:
        center = ds.WindowCenter
        width = ds.WindowWidth
        center = float(center[0] if isinstance(center, pydicom.multival.MultiValue) else center)
        width = float(width[0] if isinstance(width, pydicom.multival.MultiValue) else width)
        if width > 0:
            return center, width
    except (AttributeError, TypeError, ValueError):
        pass
    return DEFAULT_WINDOW


# --- STOW-RS ---------------------------------------------------------------------------------------


class StowError(ValueError):
    """The request as a whole cannot be stored; the message says why."""


def target_team(user, slug: str | None) -> Team:
    """The team a STOW request stores into: the one named, or the user's only team with write access."""
    writable = teams_of(user, WRITE_ROLES)
    if slug:
        team = writable.filter(slug=slug).first()
        if team is None:
            if teams_of(user).filter(slug=slug).exists():
                raise PermissionDenied(f"you may not store images for team {slug} (viewers cannot)")
            raise NotFound(f"no team {slug!r} among yours")
        return team
    teams = list(writable[:2])
    if not teams:
        raise PermissionDenied("only clinicians and admins may store images; you are a viewer in all your teams")
    if len(teams) > 1:
        names = ", ".join(writable.values_list("slug", flat=True))
        raise ParseError(f"you store for several teams ({names}): name one with ?team=<slug>")
    return teams[0]


def _boundary(content_type: str) -> bytes:
    media_type, *parameters = [part.strip() for part in content_type.split(";")]
    if media_type.lower() != "multipart/related":
        raise StowError(f'send multipart/related; type="application/dicom", not {media_type or "no content type"}')
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "boundary" and value.strip().strip('"'):
            return value.strip().strip('"').encode()
    raise StowError("the multipart content type names no boundary")


def split_parts(body: Path, boundary: bytes, folder: Path) -> list[Path]:
    """Write each part of a multipart body (a file) to its own file in `folder`; returns their paths in order."""
    delimiter = b"--" + boundary
    paths = []
    with open(body, "rb") as handle:
        if body.stat().st_size == 0:
            raise StowError("the request has no body")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            position = data.find(delimiter)
            if position < 0:
                raise StowError("the body holds no part with the announced boundary")
            while True:
                start = position + len(delimiter)
                if data[start : start + 2] == b"--":
                    break  # the closing delimiter
                following = data.find(b"\r\n" + delimiter, start)
                if following < 0:
                    raise StowError("the body is cut short: its last part does not end with the boundary")
                headers_end = data.find(b"\r\n\r\n", start)
                if headers_end < 0 or headers_end > following:
                    content_start = data.find(b"\r\n", start) + 2  # a part without headers
                else:
                    content_start = headers_end + 4
                part = folder / f"part-{len(paths) + 1:05d}.dcm"
                with open(part, "wb") as out:
                    for offset in range(content_start, following, CHUNK):
                        out.write(data[offset : min(offset + CHUNK, following)])
                paths.append(part)
                position = following + 2
    if not paths:
        raise StowError("the body holds no parts")
    return paths


def _part_uids(path: Path) -> tuple[str, str, str]:
    """(SOPClassUID, SOPInstanceUID, StudyInstanceUID) of a posted part; empty strings when unreadable."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # any damaged part is reported by ingest with its reason
        return "", "", ""
    return str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", "")), str(ds.get("StudyInstanceUID", ""))


def store(request: Request, study: str | None = None) -> HttpResponse:
    team = target_team(request.user, request.query_params.get("team"))
    length = int(request.META.get("CONTENT_LENGTH") or 0)
    limit = settings.UPLOAD_MAX_TOTAL_MB * MB
    if length > limit:
        raise ParseError(f"the request is {length / MB:.0f} MB, over the {settings.UPLOAD_MAX_TOTAL_MB} MB limit")
    incoming = Path(settings.MEDIA_ROOT) / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="stow-", dir=incoming))
    try:
        body = folder / "body"
        with open(body, "wb") as out:
            received = 0
            while chunk := request.read(CHUNK):
                received += len(chunk)
                if received > limit:
                    raise ParseError(f"the request is over the {settings.UPLOAD_MAX_TOTAL_MB} MB limit")
                out.write(chunk)
        parts_folder = folder / "parts"
        parts_folder.mkdir()
        try:
            parts = split_parts(body, _boundary(request.META.get("CONTENT_TYPE", "")), parts_folder)
        except StowError as exc:
            raise ParseError(str(exc)) from None
        body.unlink()
        return _stow_response(request, team, parts, study)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _stow_response(request: Request, team: Team, parts: list[Path], study: str | None) -> HttpResponse:
    uids = {part.name: _part_uids(part) for part in parts}
    failed: list[tuple[str, str, int, str]] = []  # class, instance, reason code, readable reason
    to_ingest = []
    for part in parts:
        sop_class, sop_uid, study_uid = uids[part.name]
        if study is not None and sop_uid and study_uid != study:
            failed.append((sop_class, sop_uid, WRONG_STUDY, f"{part.name}: belongs to study {study_uid}, not {study}"))
        else:
            to_ingest.append(part)
    upload = ingest_paths(team, to_ingest, user=request.user, channel="dicomweb") if to_ingest else None
    if upload is not None:
        summary = f"DICOMweb store: {upload.accepted_count} accepted, {upload.refused_count} refused"
        record(request, AuditAction.UPLOAD, upload, team=team, summary=summary)
    refused = {}
    if upload is not None:
        for item in upload.report.get("refused", []):
            refused.setdefault(item["file"], item["reason"])
    base = _base_url(request)
    stored = []
    for part in to_ingest:
        sop_class, sop_uid, study_uid = uids[part.name]
        if part.name in refused or not sop_uid:
            reason = refused.get(part.name, "not a DICOM instance")
            code = CANNOT_UNDERSTAND if not sop_uid else PROCESSING_FAILURE
            failed.append((sop_class, sop_uid, code, f"{part.name}: {reason}"))
        else:
            stored.append((sop_class, sop_uid, study_uid))

    answer = Dataset()
    if study is not None or len({s for _, _, s in stored}) == 1:
        answer.RetrieveURL = f"{base}/studies/{study or stored[0][2]}"
    if stored:
        answer.ReferencedSOPSequence = [
            _sop_item(sop_class, sop_uid, retrieve_url=f"{base}/studies/{study_uid}")
            for sop_class, sop_uid, study_uid in stored
        ]
    if failed:
        items = []
        for sop_class, sop_uid, code, _ in failed:
            item = _sop_item(sop_class, sop_uid)
            item.FailureReason = code
            items.append(item)
        answer.FailedSOPSequence = items
    status = 200 if not failed else 202 if stored else 409
    response = _json_response(answer.to_json_dict(), status=status)
    if failed:
        # PS3.18 answers warnings in the Warning header: the readable reason of each failure.
        reasons = " ".join("; ".join(reason for *_, reason in failed).replace('"', "'").split())
        response["Warning"] = f'299 covidsite "{reasons[:2000]}"'
    if upload is not None:
        response["X-Upload-Id"] = str(upload.pk)
    return response


def _sop_item(sop_class: str, sop_uid: str, retrieve_url: str | None = None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_uid
    if retrieve_url:
        item.RetrieveURL = retrieve_url
    return item


# --- endpoints -------------------------------------------------------------------------------------


class StudiesView(DicomWebView):
    """GET: QIDO-RS search for studies. POST: STOW-RS store."""

    def get(self, request: Request) -> HttpResponse:
        return _json_response(search_studies(request))

    def post(self, request: Request) -> HttpResponse:
        return store(request)


class StudyView(DicomWebView):
    """GET: WADO-RS retrieve a study. POST: STOW-RS store into this study."""

    def get(self, request: Request, study: str) -> HttpResponse:
        return retrieve(request, scoped_instances(request.user, study))

    def post(self, request: Request, study: str) -> HttpResponse:
        return store(request, study)


class SeriesSearchView(DicomWebView):
    def get(self, request: Request, study: str | None = None) -> HttpResponse:
        return _json_response(search_series(request, study))


class InstanceSearchView(DicomWebView):
    def get(self, request: Request, study: str | None = None, series: str | None = None) -> HttpResponse:
        return _json_response(search_instances(request, study, series))


class RetrieveView(DicomWebView):
    """WADO-RS retrieve of a series or an instance (study retrieval is `StudyView`)."""

    def get(self, request: Request, study: str, series: str, instance: str | None = None) -> HttpResponse:
        instances = scoped_instances(request.user, study, series)
        if instance is not None:
            instances = instances.filter(sop_instance_uid=instance)
        return retrieve(request, instances)


class MetadataView(DicomWebView):
    def get(self, request: Request, study: str, series: str | None = None, instance: str | None = None):
        instances = scoped_instances(request.user, study, series)
        if instance is not None:
            instances = instances.filter(sop_instance_uid=instance)
        return metadata(request, instances)


class FramesView(DicomWebView):
    def get(self, request: Request, study: str, series: str, instance: str, frame_list: str) -> HttpResponse:
        instances = scoped_instances(request.user, study, series).filter(sop_instance_uid=instance)
        return frames(request, instances, frame_list)


class RenderedView(DicomWebView):
    def get(self, request: Request, study: str, series: str, instance: str, frame_list: str | None = None):
        if frame_list is not None:
            _frame_number(frame_list)
        return rendered(request, scoped_instances(request.user, study, series).filter(sop_instance_uid=instance))


_S = "studies/<str:study>"
_SE = _S + "/series/<str:series>"
_I = _SE + "/instances/<str:instance>"

urlpatterns = [
    path("studies", StudiesView.as_view(), name="dicomweb-studies"),
    path(_S, StudyView.as_view(), name="dicomweb-study"),
    path(_S + "/metadata", MetadataView.as_view(), name="dicomweb-study-metadata"),
    path(_S + "/series", SeriesSearchView.as_view(), name="dicomweb-study-series"),
    path(_S + "/instances", InstanceSearchView.as_view(), name="dicomweb-study-instances"),
    path(_SE, RetrieveView.as_view(), name="dicomweb-series"),
    path(_SE + "/metadata", MetadataView.as_view(), name="dicomweb-series-metadata"),
    path(_SE + "/instances", InstanceSearchView.as_view(), name="dicomweb-series-instances"),
    path(_I, RetrieveView.as_view(), name="dicomweb-instance"),
    path(_I + "/metadata", MetadataView.as_view(), name="dicomweb-instance-metadata"),
    path(_I + "/rendered", RenderedView.as_view(), name="dicomweb-instance-rendered"),
    path(_I + "/frames/<str:frame_list>", FramesView.as_view(), name="dicomweb-frames"),
    path(_I + "/frames/<str:frame_list>/rendered", RenderedView.as_view(), name="dicomweb-frames-rendered"),
    path("series", SeriesSearchView.as_view(), name="dicomweb-all-series"),
    path("instances", InstanceSearchView.as_view(), name="dicomweb-all-instances"),
]
