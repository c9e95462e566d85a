"""Small synthetic scans written to disk as real DICOM files, for upload tests."""

from __future__ import annotations

from datetime import date
from pathlib import Path


def write_phantom_series(folder: Path, *, patient_id: str = "UP-0001", seed: int = 3) -> list[Path]:
    """A mild-infection phantom at 10 mm and a 64 x 64 matrix (27 slices of a few KB each)."""
    from analysis.phantoms import make_phantom, random_spec
    from analysis.pipeline.volume import write_dicom_series

    phantom = make_phantom(random_spec(seed, "mild"), slice_thickness_mm=10.0, pixel_spacing_mm=6.0, matrix=64)
    return write_dicom_series(
        phantom.volume,
        folder,
        patient_id=patient_id,
        study_date=date(2026, 2, 14),
        series_description="Upload test 10 mm",
        accession_number="UPL-1",
        sex="F",
        birth_year=1958,
    )
