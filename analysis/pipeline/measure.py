"""Measurements from the label maps: volumes, POI, iHU and CT severity score per region, areas per slice.

Regions are both lungs, each lung, and six zones: equal thirds of EACH lung's craniocaudal extent
(its own first to last slice; upper = high z). Volumes use the true voxel volume (sz*sy*sx), so thick
and thin reconstructions of the same patient agree. The CT severity score of a zone follows the usual
0-5 scale on the share of the zone that is infected: 0 none, 1 < 5 %, 2 5-25 %, 3 26-50 %, 4 51-75 %,
5 > 75 %; a lung scores the sum of its three zones and both lungs the sum of all six (0-30).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from analysis.pipeline.result import REGIONS, ZONES, RegionResult, SliceResult
from analysis.pipeline.volume import CTVolume

SIDES = {1: "right", 2: "left"}
THIRDS = ("lower", "middle", "upper")  # by ascending z


def zone_map(lungs: np.ndarray) -> np.ndarray:
    """uint8 map of the zone of every lung voxel: 1 + index into ZONES, 0 outside the lungs."""
    zones = np.zeros(lungs.shape, dtype=np.uint8)
    for label, side in SIDES.items():
        present = np.nonzero((lungs == label).any(axis=(1, 2)))[0]
        if present.size == 0:
            continue
        first, last = int(present[0]), int(present[-1])
        extent = last - first + 1
        for z in range(first, last + 1):
            third = THIRDS[min(2, (z - first) * 3 // extent)]
            zones[z][lungs[z] == label] = ZONES.index(f"{side}_{third}") + 1
    return zones


def severity_score(poi: float, infected: bool) -> int:
    """0-5 CT severity score of one zone from its infected share (0 only when nothing is infected)."""
    if not infected:
        return 0
    percent = 100.0 * poi
    if percent < 5:
        return 1
    if percent <= 25:
        return 2
    if percent <= 50:
        return 3
    if percent <= 75:
        return 4
    return 5


def measure_regions(volume: CTVolume, lungs: np.ndarray, infection: np.ndarray) -> list[RegionResult]:
    """One RegionResult per entry of result.REGIONS, in that order."""
    _check_shapes(volume, lungs, infection)
    zones = zone_map(lungs)
    inside = zones > 0
    zone_of = zones[inside].astype(np.int64)
    kind = infection[inside].astype(np.int64)  # 0 none, 1 GGO, 2 consolidation
    hu = volume.hu[inside].astype(np.float64)
    n = len(ZONES) + 1
    counts = np.bincount(zone_of * 3 + kind, minlength=3 * n).reshape(n, 3)
    hu_sums = np.bincount(zone_of, weights=np.where(kind > 0, hu, 0.0), minlength=n)
    voxel_ml = volume.voxel_volume_ml

    per_zone: dict[str, RegionResult] = {}
    for index, zone in enumerate(ZONES, start=1):
        per_zone[zone] = _region(zone, counts[index], hu_sums[index], voxel_ml, None)
        per_zone[zone] = _with_score(per_zone[zone])
    results: dict[str, RegionResult] = dict(per_zone)
    for side in SIDES.values():
        members = [i for i, zone in enumerate(ZONES, start=1) if zone.startswith(side)]
        score = sum(per_zone[ZONES[i - 1]].severity_score or 0 for i in members)
        results[side] = _region(side, counts[members].sum(axis=0), hu_sums[members].sum(), voxel_ml, score)
    both_score = sum(r.severity_score or 0 for r in per_zone.values())
    results["both"] = _region("both", counts[1:].sum(axis=0), hu_sums[1:].sum(), voxel_ml, both_score)
    return [results[name] for name in REGIONS]


def measure_slices(volume: CTVolume, lungs: np.ndarray, infection: np.ndarray) -> list[SliceResult]:
    """Lung and infection areas (mm^2) on every slice, for curves along z."""
    _check_shapes(volume, lungs, infection)
    area = volume.pixel_area_mm2
    in_lung = lungs > 0
    lung_px = np.count_nonzero(in_lung, axis=(1, 2))
    ggo_px = np.count_nonzero((infection == 1) & in_lung, axis=(1, 2))
    cons_px = np.count_nonzero((infection == 2) & in_lung, axis=(1, 2))
    uids = volume.slice_uids
    return [
        SliceResult(
            index=z,
            sop_instance_uid=uids[z] if uids else None,
            z_mm=float(volume.z_mm(z)),
            lung_area_mm2=float(lung_px[z] * area),
            infection_area_mm2=float((ggo_px[z] + cons_px[z]) * area),
            ggo_area_mm2=float(ggo_px[z] * area),
            consolidation_area_mm2=float(cons_px[z] * area),
        )
        for z in range(volume.shape[0])
    ]


def _region(name: str, counts: np.ndarray, hu_sum: float, voxel_ml: float, score: int | None) -> RegionResult:
    none, ggo, consolidation = (int(c) for c in counts)
    lung = none + ggo + consolidation
    infected = ggo + consolidation
    return RegionResult(
        region=name,
        lung_volume_ml=lung * voxel_ml,
        infection_volume_ml=infected * voxel_ml,
        ggo_volume_ml=ggo * voxel_ml,
        consolidation_volume_ml=consolidation * voxel_ml,
        poi=infected / lung if lung else 0.0,
        ihu=float(hu_sum / infected) if infected else None,
        severity_score=score,
    )


def _with_score(region: RegionResult) -> RegionResult:
    return replace(region, severity_score=severity_score(region.poi, region.infection_volume_ml > 0))


def _check_shapes(volume: CTVolume, lungs: np.ndarray, infection: np.ndarray) -> None:
    if lungs.shape != volume.shape or infection.shape != volume.shape:
        raise ValueError(f"label maps {lungs.shape} and {infection.shape} must match the volume's shape {volume.shape}")
