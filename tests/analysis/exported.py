"""A stored DICOM series with a finished run whose label maps are known functions of the stored pixels.

Each label is a threshold of the image's own HU values, so a test can check an exported overlay
against the stored files directly, without trusting any geometry code: an overlay drawn on the wrong
slice, flipped or transposed, disagrees with the pixels under it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from analysis.choices import RunStatus
from analysis.execute import load_series_volume
from analysis.models import AnalysisRun
from analysis.pipeline.volume import CTVolume, write_dicom_series
from analysis.storage import save_label_map
from patients.ingest import ingest_paths
from patients.models import Series

LUNG_ABOVE, GGO_ABOVE, CONSOLIDATION_ABOVE = -200, 100, 250
# Stored orientations: the writer's own, rows along y (transposed, which also reverses the slice
# normal and so the slice order), and both in-plane axes reversed.
ORIENTATIONS = {
    "standard": [1, 0, 0, 0, 1, 0],
    "transposed": [0, 1, 0, 1, 0, 0],
    "flipped": [-1, 0, 0, 0, -1, 0],
}


def stored_hu(path: Path) -> np.ndarray:
    """The HU of one stored image, in its own rows and columns."""
    ds = pydicom.dcmread(path)
    return ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)


def labels_of(hu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lungs, infection) label maps of an HU array: 1/2 lungs split by column, 1 GGO, 2 consolidation."""
    columns = np.arange(hu.shape[-1]) >= hu.shape[-1] // 2
    lungs = np.where(hu > LUNG_ABOVE, np.where(columns, 2, 1), 0).astype(np.uint8)
    infection = np.where(hu > CONSOLIDATION_ABOVE, 2, np.where(hu > GGO_ABOVE, 1, 0)).astype(np.uint8)
    return lungs, infection


def series_with_run(team, folder: Path, *, orientation: str = "standard", patient_id: str = "EXP-0001"):
    """Ingest a 6-slice series stored in `orientation` and give it a finished run; returns (series, run, volume)."""
    hu = np.random.default_rng(7).integers(-1024, 400, size=(6, 64, 64)).astype(np.int16)
    paths = write_dicom_series(
        CTVolume(hu=hu, spacing=(5.0, 0.8, 0.8), origin=(-25.0, -25.0, -100.0)),
        folder,
        patient_id=patient_id,
        series_description=f"Chest {orientation}",
    )
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.ImageOrientationPatient = ORIENTATIONS[orientation]
        ds.save_as(path, enforce_file_format=True)
    upload = ingest_paths(team, [folder])
    assert upload.refused_count == 0, upload.report["refused"]
    series = Series.objects.get(pk=upload.report["series"][0]["id"])
    volume = load_series_volume(series)
    lungs, infection = labels_of(volume.hu)
    run = AnalysisRun.objects.create(
        series=series,
        pipeline_version="test-export",
        status=RunStatus.SUCCEEDED,
        progress=100,
        lung_volume_ml=float((lungs > 0).sum()) * volume.voxel_volume_ml,
        infection_volume_ml=float((infection > 0).sum()) * volume.voxel_volume_ml,
        ggo_volume_ml=float((infection == 1).sum()) * volume.voxel_volume_ml,
        consolidation_volume_ml=float((infection == 2).sum()) * volume.voxel_volume_ml,
        poi=float((infection > 0).sum() / (lungs > 0).sum()),
        ihu=float(volume.hu[infection > 0].mean()),
        ct_severity_score=17,
    )
    run.lungs_file = save_label_map(run, "lungs", lungs)
    run.infection_file = save_label_map(run, "infection", infection)
    run.save(update_fields=["lungs_file", "infection_file"])
    return series, run, volume
