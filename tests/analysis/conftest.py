"""Fixtures for the worker-side tests: a small phantom scan stored as a READY series through ingest.

The phantom (severe, 10 mm slices, 128 x 128 at 2.8 mm: 27 slices) is generated once per session;
each test writes it as DICOM into its own folder and ingests it, so the worker reads real files.
"""

from __future__ import annotations

import functools
from datetime import date
from pathlib import Path

import numpy as np
import pytest

PHANTOM_SEED = 5


@functools.cache
def small_phantom():
    """A severe-infection phantom (exact truth on `.truth`), small enough for many tests."""
    from analysis.phantoms import make_phantom, random_spec

    return make_phantom(random_spec(PHANTOM_SEED, "severe"), slice_thickness_mm=10.0, pixel_spacing_mm=2.8, matrix=128)


def no_lung_volume():
    """A chest-sized cylinder of soft tissue in air: a valid CT volume that holds no lungs."""
    from analysis.pipeline.volume import CTVolume

    _, y, x = np.mgrid[0:12, 0:128, 0:128]
    hu = np.where((y - 64) ** 2 + (x - 64) ** 2 < 55**2, 40, -1000).astype(np.int16)
    return CTVolume(hu=hu, spacing=(10.0, 2.8, 2.8), origin=(-179.2, -179.2, 0.0))


def ingest_volume(team, folder: Path, volume, *, patient_id: str):
    """Write `volume` as a DICOM series into `folder`, ingest it for `team`; returns the READY Series."""
    from analysis.pipeline.volume import write_dicom_series
    from patients.choices import SeriesStatus
    from patients.ingest import ingest_paths
    from patients.models import Series

    write_dicom_series(
        volume, folder, patient_id=patient_id, study_date=date(2026, 3, 2), series_description="Chest 10 mm"
    )
    upload = ingest_paths(team, [folder])
    assert upload.refused_count == 0, upload.report["refused"]
    [entry] = upload.report["series"]
    series = Series.objects.get(pk=entry["id"])
    assert series.status == SeriesStatus.READY
    return series


@pytest.fixture
def phantom_series(team_a, tmp_path):
    """The small phantom stored as a READY DICOM series of team A's patient PH-0005."""
    return ingest_volume(team_a, tmp_path / "phantom", small_phantom().volume, patient_id="PH-0005")


@pytest.fixture
def no_lung_series(team_a, tmp_path):
    """A READY series that holds no lungs (the pipeline refuses it)."""
    return ingest_volume(team_a, tmp_path / "nolungs", no_lung_volume(), patient_id="NL-0001")
