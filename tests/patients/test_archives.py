"""Zip uploads: a study in a zip is ingested; escaping entries, bombs and nested archives are refused whole."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from patients.archives import ArchiveError, extract_zip
from patients.ingest import ingest_paths, ingest_uploaded_files
from patients.models import Series
from tests.patients.scans import ct_series, stored_files


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def series_entries(folder: Path, prefix: str, **kwargs) -> dict[str, bytes]:
    return {f"{prefix}/{p.name}": p.read_bytes() for p in ct_series(folder, **kwargs)}


def test_a_zipped_study_is_ingested_and_junk_inside_is_named(team_a, tmp_path, settings):
    entries = series_entries(tmp_path / "s", "export/CT/series1", slices=6)
    entries["export/README.txt"] = b"exported by PACS"
    entries["__MACOSX/export/._x"] = b"resource fork"
    archive = SimpleUploadedFile("study.zip", zip_bytes(entries), content_type="application/zip")

    upload = ingest_uploaded_files(team_a, [archive])

    assert upload.report["refused"] == [{"file": "study.zip/export/README.txt", "reason": "not a DICOM file"}]
    assert (upload.file_count, upload.accepted_count, upload.refused_count) == (7, 6, 1)
    assert Series.objects.get().slice_count == 6
    kept = stored_files(settings.MEDIA_ROOT)
    assert len(kept) == 6
    assert all(p.suffix == ".dcm" for p in kept)


def test_a_zip_entry_escaping_the_archive_refuses_the_whole_archive(team_a, tmp_path, settings):
    entries = series_entries(tmp_path / "s", "ok", slices=6)
    entries["../../evil.dcm"] = next(iter(entries.values()))
    archive = tmp_path / "upload.zip"
    archive.write_bytes(zip_bytes(entries))

    upload = ingest_paths(team_a, [archive])

    assert upload.report["refused"] == [
        {"file": "upload.zip", "reason": "zip entry '../../evil.dcm' escapes the archive"}
    ]
    assert not Series.objects.exists()
    assert stored_files(settings.MEDIA_ROOT) == []
    assert not (tmp_path.parent / "evil.dcm").exists()


@pytest.mark.parametrize("name", ["/etc/cron.d/evil", "..\\..\\evil.dcm", "C:/Windows/evil.dcm", "a/../../b.dcm"])
def test_every_kind_of_escaping_name_is_caught(tmp_path, name):
    archive = tmp_path / "a.zip"
    archive.write_bytes(zip_bytes({name: b"x"}))

    with pytest.raises(ArchiveError, match="escapes the archive"):
        extract_zip(archive, tmp_path / "out", max_expanded_bytes=10**6, max_member_bytes=10**6, max_members=10)
    assert not (tmp_path / "out").exists()


def test_an_archive_expanding_beyond_the_limit_is_refused(team_a, tmp_path, settings):
    settings.UPLOAD_MAX_ARCHIVE_EXPANDED_MB = 1
    archive = SimpleUploadedFile("bomb.zip", zip_bytes({"zeros.dcm": bytes(3 * 1024 * 1024)}))
    assert archive.size < 50_000  # small on the wire

    upload = ingest_uploaded_files(team_a, [archive])

    assert upload.report["refused"] == [{"file": "bomb.zip", "reason": "archive expands beyond 1 MB"}]
    assert stored_files(settings.MEDIA_ROOT) == []


def test_a_member_over_the_file_limit_is_refused_alone(team_a, tmp_path, settings):
    settings.UPLOAD_MAX_FILE_MB = 1
    entries = series_entries(tmp_path / "s", "ok", slices=6)
    entries["huge.dcm"] = bytes(2 * 1024 * 1024)
    archive = tmp_path / "mixed.zip"
    archive.write_bytes(zip_bytes(entries))

    upload = ingest_paths(team_a, [archive])

    assert upload.report["refused"] == [{"file": "mixed.zip/huge.dcm", "reason": "file is 2 MB, over the 1 MB limit"}]
    assert Series.objects.get().slice_count == 6


def test_nested_and_corrupt_archives_are_refused(team_a, tmp_path):
    inner = zip_bytes(series_entries(tmp_path / "s", "ok", slices=6))
    nested = tmp_path / "outer.zip"
    nested.write_bytes(zip_bytes({"inner.zip": inner}))
    broken = tmp_path / "broken.zip"
    broken.write_bytes(inner[: len(inner) // 2])

    upload = ingest_paths(team_a, [nested, broken])

    refused = {r["file"]: r["reason"] for r in upload.report["refused"]}
    assert refused["outer.zip/inner.zip"] == "an archive inside an archive: upload the inner archive itself"
    assert refused["broken.zip"].startswith("not a readable zip archive")
    assert not Series.objects.exists()


def test_an_archive_with_more_files_than_allowed_is_refused(team_a, tmp_path, settings):
    settings.UPLOAD_MAX_FILES = 3
    archive = SimpleUploadedFile("many.zip", zip_bytes(series_entries(tmp_path / "s", "x", slices=6)))

    upload = ingest_uploaded_files(team_a, [archive])

    assert upload.report["refused"] == [{"file": "many.zip", "reason": "archive holds 6 files, over the 3 file limit"}]
