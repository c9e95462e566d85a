"""De-identified exports: DICOM series with the patient's identity removed, and pseudonyms for CSV files.

DICOM uses dicognito, which follows the DICOM basic confidentiality profile (names, IDs, addresses,
institution, equipment and every UID replaced; dates moved back by one offset). Private elements, where
vendors hide anything, are dropped as well. The replacements are seeded with a key derived from the
site's SECRET_KEY and the team, so that the same patient, study and series get the same pseudonyms in every
export of that team (a researcher can link a follow-up to its baseline) while nobody without the key can
link them back, and two teams' exports cannot be linked to each other.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import pydicom
from dicognito.anonymizer import Anonymizer

PSEUDONYM_PREFIX = "ANON-"


def team_key(secret: str, team_slug: str) -> str:
    """The team's de-identification key: stable for the site, different for every team."""
    return hmac.new(secret.encode(), f"deidentify:{team_slug}".encode(), hashlib.sha256).hexdigest()


def pseudonym(key: str, identifier: str) -> str:
    """A stable, non-reversible stand-in for a patient identifier in de-identified CSV files."""
    digest = hmac.new(key.encode(), identifier.encode(), hashlib.sha256).hexdigest()
    return PSEUDONYM_PREFIX + digest[:12].upper()


def deidentify_dataset(dataset: pydicom.Dataset, anonymizer: Anonymizer) -> pydicom.Dataset:
    """Remove the identity from one dataset in place (and return it)."""
    dataset.remove_private_tags()
    anonymizer.anonymize(dataset)
    dataset.PatientIdentityRemoved = "YES"
    return dataset


def write_deidentified_zip(files: Iterable[Path], key: str, stream: BinaryIO) -> int:
    """Write a zip of the de-identified copies of the DICOM files to `stream`; returns how many went in.

    Entries are named by their new SOP Instance UIDs; the stored originals are not touched.
    """
    anonymizer = Anonymizer(seed=key)
    count = 0
    with zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for count, path in enumerate(files, start=1):
            dataset = deidentify_dataset(pydicom.dcmread(path), anonymizer)
            out = io.BytesIO()
            dataset.save_as(out, enforce_file_format=True)
            archive.writestr(f"{count:04d}_{dataset.SOPInstanceUID}.dcm", out.getvalue())
    return count
