"""Safe expansion of uploaded .zip archives.

An archive is judged as a whole before anything is written: an entry whose path would land outside
the target (zip-slip), an archive whose declared contents exceed the expansion limit (zip bomb), or an
encrypted or corrupt archive is refused with an `ArchiveError` that says why. Entries are never
written under their own path: each lands in a numbered folder under the target with only its base
name, so even a missed check could not escape. Sizes are counted again while streaming, since the
sizes an archive declares can lie.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

CHUNK = 1024 * 1024
MB = 1024 * 1024
# Folders and files that archivers add beside the real content.
JUNK_PREFIXES = ("__MACOSX/",)


class ArchiveError(ValueError):
    """The archive as a whole is refused; the message says why."""


@dataclass(frozen=True)
class ArchiveMember:
    """One file of an archive: its name inside the archive and where it was written.

    `path` is None when the member was not extracted because it is larger than the per-file limit
    (`size` then says how large it claims to be) or because it is a link.
    """

    name: str
    size: int
    path: Path | None
    skipped_reason: str = ""


def looks_like_zip(path: Path) -> bool:
    """True for a file that starts like a zip archive (and is not a DICOM file with a zip preamble)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return head[:4] == b"PK\x03\x04" and head[128:132] != b"DICM"


def _escapes(name: str) -> bool:
    normalised = name.replace("\\", "/")
    if normalised.startswith("/") or (len(normalised) > 1 and normalised[1] == ":"):
        return True
    return any(part == ".." for part in PurePosixPath(normalised).parts)


def _is_link(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def extract_zip(
    archive: Path,
    target: Path,
    *,
    max_expanded_bytes: int,
    max_member_bytes: int,
    max_members: int,
) -> list[ArchiveMember]:
    """Expand `archive` into `target` (created), returning its file members in archive order.

    Raises ArchiveError, leaving nothing extracted behind, when the archive is corrupt or encrypted,
    holds an entry escaping the archive, holds more than `max_members` files, or expands beyond
    `max_expanded_bytes`. Members over `max_member_bytes` are listed but not extracted.
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir() and not i.filename.startswith(JUNK_PREFIXES)]
            for info in infos:
                if _escapes(info.filename):
                    raise ArchiveError(f"zip entry {info.filename!r} escapes the archive")
                if info.flag_bits & 0x1:
                    raise ArchiveError(f"zip entry {info.filename!r} is encrypted; upload an unencrypted archive")
            if len(infos) > max_members:
                raise ArchiveError(f"archive holds {len(infos)} files, over the {max_members} file limit")
            limit_mb = max_expanded_bytes // MB
            if sum(i.file_size for i in infos) > max_expanded_bytes:
                raise ArchiveError(f"archive expands beyond {limit_mb} MB")
            target.mkdir(parents=True, exist_ok=True)
            members: list[ArchiveMember] = []
            written = 0
            try:
                for number, info in enumerate(infos):
                    if _is_link(info):
                        members.append(ArchiveMember(info.filename, info.file_size, None, "a link, not a file"))
                        continue
                    if info.file_size > max_member_bytes:
                        members.append(ArchiveMember(info.filename, info.file_size, None))
                        continue
                    base = PurePosixPath(info.filename.replace("\\", "/")).name[:200] or "file"
                    folder = target / f"{number:06d}"
                    folder.mkdir()
                    destination = folder / base
                    with zf.open(info) as source, open(destination, "wb") as out:
                        while chunk := source.read(CHUNK):
                            written += len(chunk)
                            if written > max_expanded_bytes:
                                raise ArchiveError(f"archive expands beyond {limit_mb} MB")
                            out.write(chunk)
                    members.append(ArchiveMember(info.filename, destination.stat().st_size, destination))
            except BaseException:
                shutil.rmtree(target, ignore_errors=True)
                raise
    except zipfile.BadZipFile as exc:
        raise ArchiveError(f"not a readable zip archive ({exc})") from exc
    except (NotImplementedError, RuntimeError, EOFError, zipfile.LargeZipFile) as exc:
        # Unsupported compression methods and truncated streams surface as these.
        raise ArchiveError(f"the archive cannot be expanded: {exc}") from exc
    return members
