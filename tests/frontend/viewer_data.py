"""A phantom series for the viewer tests: real DICOM files ingested, results written from the phantom's truth.

The label maps are the phantom's exact lungs and infection (not a pipeline's estimate), so a test
knows which stored pixels the overlays must cover; `reorient` re-stores the same anatomy flipped or
transposed, as scanners do.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
from django.utils import timezone

from analysis.choices import OpacityKind, Region, RunStatus
from analysis.models import AnalysisRun, Opacity, RegionMeasurement
from analysis.phantoms import LesionKind, LesionSpec, Phantom, PhantomSpec, Side, make_phantom
from analysis.storage import save_label_map
from patients.ingest import ingest_paths
from patients.models import Series, Team

from ..analysis.reoriented import reorient

# One consolidation in the right lung and one ground-glass opacity in the left, both well inside the lung.
LESIONS = (
    LesionSpec(
        kind=LesionKind.CONSOLIDATION, radius_mm=22.0, hu=0.0, lung=Side.RIGHT, height_frac=0.45, depth_frac=0.3
    ),
    LesionSpec(kind=LesionKind.GGO, radius_mm=16.0, hu=-550.0, lung=Side.LEFT, height_frac=0.6, depth_frac=0.4),
)


@dataclass
class ViewerPhantom:
    series: Series
    run: AnalysisRun
    phantom: Phantom
    orientation: str


def make_viewer_phantom(
    team: Team,
    folder: Path,
    *,
    orientation: str = "identity",
    slices: int = 64,
    matrix: int = 128,
    patient_id: str = "VIEW-0001",
    heat_map: bool = True,
) -> ViewerPhantom:
    """Ingest a `slices`-slice phantom stored with `orientation` and give it a succeeded run with its truth."""
    thickness = 270.0 / slices
    phantom = make_phantom(
        PhantomSpec(seed=11, lesions=LESIONS, description="viewer phantom"),
        slice_thickness_mm=thickness,
        pixel_spacing_mm=360.0 / matrix,
        matrix=matrix,
    )
    paths = _write(phantom, folder, patient_id)
    reorient(paths, orientation)
    upload = ingest_paths(team, [folder])
    series = Series.objects.get(pk=upload.report["series"][0]["id"])
    run = _store_truth(series, phantom, heat_map=heat_map)
    return ViewerPhantom(series=series, run=run, phantom=phantom, orientation=orientation)


def _write(phantom: Phantom, folder: Path, patient_id: str) -> list[Path]:
    from analysis.pipeline.volume import write_dicom_series

    return write_dicom_series(
        phantom.volume,
        folder,
        patient_id=patient_id,
        study_date=date(2026, 3, 2),
        series_description="Viewer phantom",
    )


def lesion_centroid(phantom: Phantom, number: int) -> tuple[float, float, float]:
    """Canonical (z, y, x) centroid of lesion `number` (1-based, as in phantom.lesions)."""
    return tuple(float(v) for v in np.argwhere(phantom.lesions == number).mean(axis=0))  # type: ignore[return-value]


def _heat(phantom: Phantom) -> np.ndarray:
    # A smooth bump around the consolidation: enough to see the colour map, exact enough to test.
    z, y, x = lesion_centroid(phantom, 1)
    zz, yy, xx = np.indices(phantom.lungs.shape)
    distance2 = ((zz - z) / 3) ** 2 + ((yy - y) / 12) ** 2 + ((xx - x) / 12) ** 2
    return np.rint(255 * np.exp(-distance2) * (phantom.lungs > 0)).astype(np.uint8)


def _store_truth(series: Series, phantom: Phantom, *, heat_map: bool) -> AnalysisRun:
    run = AnalysisRun.objects.filter(series=series).first() or AnalysisRun(series=series, pipeline_version="truth")
    truth = phantom.truth
    volume = phantom.volume
    run.status = RunStatus.SUCCEEDED
    run.finished = timezone.now()
    run.progress = 100
    run.error = ""
    run.lung_volume_ml = truth.lung_volume_ml
    run.infection_volume_ml = truth.infection_volume_ml
    run.ggo_volume_ml = truth.ggo_volume_ml
    run.consolidation_volume_ml = truth.consolidation_volume_ml
    run.poi = truth.poi
    run.ihu = truth.ihu
    run.ct_severity_score = 4
    run.corona_score_ml = 123.0 if heat_map else None
    run.save()
    run.lungs_file = save_label_map(run, "lungs", phantom.lungs)
    run.infection_file = save_label_map(run, "infection", phantom.infection)
    run.heatmap_file = save_label_map(run, "heatmap", _heat(phantom)) if heat_map else ""
    area = volume.pixel_area_mm2
    run.slice_metrics = [
        {
            "index": z,
            "sop_instance_uid": None,
            "z_mm": volume.origin[2] + z * volume.spacing[0],
            "lung_area_mm2": float((phantom.lungs[z] > 0).sum() * area),
            "infection_area_mm2": float((phantom.infection[z] > 0).sum() * area),
            "ggo_area_mm2": float((phantom.infection[z] == 1).sum() * area),
            "consolidation_area_mm2": float((phantom.infection[z] == 2).sum() * area),
            "abnormal_probability": float(min(1.0, (phantom.infection[z] > 0).sum() / 50)),
        }
        for z in range(phantom.lungs.shape[0])
    ]
    run.save()
    RegionMeasurement.objects.filter(run=run).delete()
    Opacity.objects.filter(run=run).delete()
    for number, region in enumerate(Region.values):
        RegionMeasurement.objects.create(
            run=run,
            region=region,
            lung_volume_ml=truth.lung_volume_ml,
            infection_volume_ml=truth.infection_volume_ml,
            ggo_volume_ml=truth.ggo_volume_ml,
            consolidation_volume_ml=truth.consolidation_volume_ml,
            poi=truth.poi,
            ihu=truth.ihu,
            severity_score=number % 3,
        )
    kinds = {LesionKind.CONSOLIDATION: OpacityKind.CONSOLIDATION, LesionKind.GGO: OpacityKind.GGO}
    zones = {Side.RIGHT: Region.RIGHT_MIDDLE, Side.LEFT: Region.LEFT_UPPER}
    for number, spec in enumerate(phantom.spec.lesions, start=1):
        voxels = np.argwhere(phantom.lesions == number)
        centroid = lesion_centroid(phantom, number)
        Opacity.objects.create(
            run=run,
            index=number,
            kind=kinds[spec.kind],
            volume_ml=truth.lesion_volumes_ml[number - 1],
            longest_diameter_mm=2 * spec.radius_mm,
            longest_axial_diameter_mm=2 * spec.radius_mm,
            mean_hu=spec.hu,
            centroid_voxel=list(centroid),
            centroid_mm=[0.0, 0.0, 0.0],
            slice_first=int(voxels[:, 0].min()),
            slice_last=int(voxels[:, 0].max()),
            zone=zones[spec.lung],
        )
    return run
