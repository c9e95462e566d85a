"""Small synthetic CT series for ingest tests, written as real DICOM files by the pipeline's writer.

Variants (a gap, another modality, no pixel data, a coronal plane) are made by editing the written
files with pydicom, the way a real export would differ.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import pydicom
from django.core.files.uploadedfile import SimpleUploadedFile
from pydicom.dataset import Dataset

from analysis.pipeline.volume import CTVolume, write_dicom_series


def ct_series(
    folder: Path,
    *,
    patient_id: str = "PAT-001",
    slices: int = 8,
    slice_spacing: float = 5.0,
    matrix: int = 64,
    study_uid: str | None = None,
    series_uid: str | None = None,
    study_date: date = date(2024, 3, 1),
    description: str = "Chest 5 mm",
    first_z: float = -100.0,
    seed: int = 0,
) -> list[Path]:
    """Write a small CT series (HU -1024..400) into `folder`; paths come back in order feet to head."""
    hu = np.random.default_rng(seed).integers(-1024, 400, size=(slices, matrix, matrix)).astype(np.int16)
    volume = CTVolume(hu=hu, spacing=(slice_spacing, 0.8, 0.8), origin=(-25.0, -25.0, first_z))
    return write_dicom_series(
        volume,
        folder,
        patient_id=patient_id,
        study_uid=study_uid,
        series_uid=series_uid,
        study_date=study_date,
        series_description=description,
        accession_number="ACC-" + patient_id,
        sex="F",
        birth_year=1958,
    )


def edit(paths: list[Path], change: Callable[[Dataset], None]) -> None:
    """Rewrite each file after `change` edited its dataset."""
    for path in paths:
        ds = pydicom.dcmread(path)
        change(ds)
        ds.save_as(path, enforce_file_format=True)


def uploaded(paths: list[Path], *, names: list[str] | None = None) -> list[SimpleUploadedFile]:
    """The files as a browser would send them."""
    names = names or [p.name for p in paths]
    return [
        SimpleUploadedFile(name, p.read_bytes(), content_type="application/dicom")
        for p, name in zip(paths, names, strict=True)
    ]


def stored_files(media_root: Path) -> list[Path]:
    """Every file under MEDIA_ROOT, staging leftovers included."""
    return sorted(p for p in Path(media_root).rglob("*") if p.is_file())
