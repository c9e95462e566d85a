"""Opacities: 26-connected infection components with their size, diameters, position, density and kind."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.pipeline.opacities import MIN_OPACITY_ML, find_opacities
from analysis.pipeline.volume import CTVolume

SPACING = (2.0, 0.8, 0.8)


def _scan():
    hu = np.full((40, 120, 160), -850, dtype=np.int16)
    lungs = np.zeros(hu.shape, dtype=np.uint8)
    lungs[:, 10:110, 5:75] = 1
    lungs[:, 10:110, 85:155] = 2
    return CTVolume(hu=hu, spacing=SPACING, origin=(-64.0, -48.0, -400.0)), lungs


def _ball(shape, centre_mm, radius_mm, spacing=SPACING):
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    cz, cy, cx = centre_mm
    return ((z * spacing[0] - cz) ** 2 + (y * spacing[1] - cy) ** 2 + (x * spacing[2] - cx) ** 2) <= radius_mm**2


def test_a_sphere_is_measured_in_millimetres():
    volume, lungs = _scan()
    infection = np.zeros_like(lungs)
    ball = _ball(volume.shape, (40.0, 48.0, 32.0), 12.0)  # right lung, slices 14..26
    infection[ball] = 1
    volume.hu[ball] = -520
    (opacity,) = find_opacities(volume, lungs, infection)
    assert opacity.index == 1
    assert opacity.volume_ml == pytest.approx(4 / 3 * np.pi * 12.0**3 / 1000, rel=0.05)
    assert opacity.longest_diameter_mm == pytest.approx(24.0, abs=2.0)
    assert opacity.longest_axial_diameter_mm == pytest.approx(24.0, abs=2.0)
    assert opacity.centroid_voxel == pytest.approx((20.0, 60.0, 40.0), abs=0.05)
    assert opacity.centroid_mm == pytest.approx((-64.0 + 32.0, -48.0 + 48.0, -400.0 + 40.0), abs=0.1)
    assert opacity.mean_hu == pytest.approx(-520)
    assert opacity.kind == "ggo"
    assert (opacity.slice_first, opacity.slice_last) == (14, 26)
    assert opacity.zone == "right_middle"


def test_an_elongated_opacity_has_a_longer_3d_than_axial_diameter():
    volume, lungs = _scan()
    infection = np.zeros_like(lungs)
    infection[5:35, 50:56, 100:106] = 2  # 60 mm along z, 4.8 x 4.8 mm in plane, left upper...lower
    (opacity,) = find_opacities(volume, lungs, infection)
    assert opacity.longest_diameter_mm == pytest.approx(np.sqrt(58.0**2 + 2 * 4.0**2), abs=0.01)
    assert opacity.longest_axial_diameter_mm == pytest.approx(np.sqrt(2 * 4.0**2), abs=0.01)
    assert opacity.kind == "consolidation"
    assert opacity.zone == "left_middle"


def test_components_touching_at_a_corner_are_one_opacity_and_kind_needs_a_majority():
    volume, lungs = _scan()
    infection = np.zeros_like(lungs)
    infection[10:15, 20:30, 20:30] = 1
    infection[15:20, 30:40, 30:40] = 2  # shares only a corner with the first block: 26-connected
    (opacity,) = find_opacities(volume, lungs, infection)
    assert opacity.kind == "mixed"
    assert opacity.volume_ml == pytest.approx(1000 * volume.voxel_volume_ml)


def test_small_components_are_dropped_and_the_rest_sorted_by_volume():
    volume, lungs = _scan()
    infection = np.zeros_like(lungs)
    infection[2:4, 20:24, 20:24] = 1  # 32 voxels = 0.041 mL < 0.05 mL
    infection[10:14, 60:70, 100:110] = 1  # 400 voxels
    infection[20:30, 60:70, 20:30] = 1  # 1000 voxels
    opacities = find_opacities(volume, lungs, infection)
    assert 32 * volume.voxel_volume_ml < MIN_OPACITY_ML
    assert [o.index for o in opacities] == [1, 2]
    assert [round(o.volume_ml / volume.voxel_volume_ml) for o in opacities] == [1000, 400]
    assert [o.zone for o in opacities] == ["right_middle", "left_lower"]  # thirds of 40 slices: 0-13, 14-26, 27-39
    assert find_opacities(volume, lungs, np.zeros_like(lungs)) == []
