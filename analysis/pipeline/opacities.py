"""Opacities: the connected components (3-D, 26-connectivity) of the infection, each measured.

Components below MIN_OPACITY_ML (0.05 mL, about a 4.6 mm sphere) are not listed: below that size a
blob is as likely to be noise or a vessel cross-section as a lesion, and no reader would report it.
They still count in the regional volumes. Diameters are in mm: the longest 3-D diameter is the largest
distance between two voxel centres of the component (taken over its convex hull's vertices), the
longest axial diameter the same within one slice, on the slice where it is longest.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import pdist

from analysis.pipeline.measure import zone_map
from analysis.pipeline.result import ZONES, OpacityResult
from analysis.pipeline.volume import CTVolume

MIN_OPACITY_ML = 0.05
MAJORITY = 0.8  # a kind (GGO or consolidation) names the opacity when it holds more than this share
_CONNECT_26 = np.ones((3, 3, 3), dtype=bool)


def find_opacities(
    volume: CTVolume, lungs: np.ndarray, infection: np.ndarray, *, min_volume_ml: float = MIN_OPACITY_ML
) -> list[OpacityResult]:
    """Measure every infection component of at least `min_volume_ml`, largest first."""
    if lungs.shape != volume.shape or infection.shape != volume.shape:
        raise ValueError(f"label maps must match the volume's shape {volume.shape}")
    labelled, n = ndimage.label(infection > 0, structure=_CONNECT_26)
    if n == 0:
        return []
    voxel_ml = volume.voxel_volume_ml
    sizes = np.bincount(labelled.ravel())
    zones = zone_map(lungs)
    spacing = np.array(volume.spacing)
    found = []
    for index, box in enumerate(ndimage.find_objects(labelled), start=1):
        if box is None or sizes[index] * voxel_ml < min_volume_ml:
            continue
        component = labelled[box] == index
        offset = np.array([s.start for s in box])
        voxels = np.argwhere(component) + offset  # (z, y, x)
        kinds = infection[box][component]
        ggo_share = np.count_nonzero(kinds == 1) / len(kinds)
        if ggo_share > MAJORITY:
            kind = "ggo"
        elif 1 - ggo_share > MAJORITY:
            kind = "consolidation"
        else:
            kind = "mixed"
        centroid = voxels.mean(axis=0)
        # Zone: where most of the component's voxels lie (by construction inside a lung).
        zone_codes = np.bincount(zones[box][component], minlength=len(ZONES) + 1)
        zone_codes[0] = 0
        zone = ZONES[int(np.argmax(zone_codes)) - 1] if zone_codes.any() else _nearest_zone(zones, centroid)
        found.append(
            OpacityResult(
                index=0,
                volume_ml=float(len(voxels) * voxel_ml),
                longest_diameter_mm=_longest_diameter(voxels * spacing),
                longest_axial_diameter_mm=_longest_axial_diameter(component, spacing[1:]),
                centroid_voxel=(float(centroid[0]), float(centroid[1]), float(centroid[2])),
                centroid_mm=_centroid_mm(volume, centroid),
                mean_hu=float(volume.hu[box][component].mean()),
                kind=kind,
                slice_first=int(voxels[:, 0].min()),
                slice_last=int(voxels[:, 0].max()),
                zone=zone,
            )
        )
    found.sort(key=lambda o: o.volume_ml, reverse=True)
    return [_renumber(o, i) for i, o in enumerate(found, start=1)]


def _renumber(opacity: OpacityResult, index: int) -> OpacityResult:
    return replace(opacity, index=index)


def _longest_diameter(points_mm: np.ndarray) -> float:
    """Largest distance between two points: only convex hull vertices can be its ends."""
    if len(points_mm) < 2:
        return 0.0
    try:
        points_mm = points_mm[ConvexHull(points_mm).vertices]
    except QhullError:  # flat (one slice) or degenerate: fall back to all points, a few only
        if len(points_mm) > 4000:
            points_mm = points_mm[np.linspace(0, len(points_mm) - 1, 4000).astype(int)]
    return float(pdist(points_mm).max())


def _longest_axial_diameter(component: np.ndarray, pixel_mm: np.ndarray) -> float:
    best = 0.0
    for plane in component:
        points = np.argwhere(plane)
        if len(points) < 2:
            continue
        points_mm = points * pixel_mm
        with contextlib.suppress(QhullError):  # a line of pixels: keep them all
            points_mm = points_mm[ConvexHull(points_mm).vertices]
        best = max(best, float(pdist(points_mm).max()))
    return best


def _centroid_mm(volume: CTVolume, centroid: np.ndarray) -> tuple[float, float, float]:
    """LPS (x, y, z) mm of a (z, y, x) voxel position on the canonical grid."""
    sz, sy, sx = volume.spacing
    ox, oy, oz = volume.origin
    return (float(ox + centroid[2] * sx), float(oy + centroid[1] * sy), float(oz + centroid[0] * sz))


def _nearest_zone(zones: np.ndarray, centroid: np.ndarray) -> str:
    coords = np.argwhere(zones > 0)
    nearest = coords[np.argmin(((coords - centroid) ** 2).sum(axis=1))]
    return ZONES[int(zones[tuple(nearest)]) - 1]
