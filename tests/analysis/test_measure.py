"""Measurements from label maps: volumes with the true voxel size, POI, iHU, zones, CT severity score, slice areas."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.pipeline.measure import measure_regions, measure_slices, severity_score, zone_map
from analysis.pipeline.result import REGIONS, ZONES
from analysis.pipeline.volume import CTVolume


def _scan(spacing=(2.0, 1.0, 1.0), nz=30):
    """Two box lungs: right (label 1) at low x over slices 0..29, left (label 2) over slices 6..29."""
    hu = np.full((nz, 40, 60), -850, dtype=np.int16)
    lungs = np.zeros(hu.shape, dtype=np.uint8)
    lungs[:, 10:30, 5:25] = 1
    lungs[6:, 10:30, 35:55] = 2
    return CTVolume(hu=hu, spacing=spacing), lungs


def test_volumes_use_the_voxel_size_and_poi_and_ihu_follow_the_infection():
    volume, lungs = _scan()
    infection = np.zeros_like(lungs)
    infection[0:5, 10:20, 5:15] = 1  # 500 voxels of GGO in the right lower zone
    volume.hu[0:5, 10:20, 5:15] = -500
    infection[20:22, 10:20, 35:45] = 2  # 200 voxels of consolidation in the left upper zone
    volume.hu[20:22, 10:20, 35:45] = 20

    regions = {r.region: r for r in measure_regions(volume, lungs, infection)}
    assert [r for r in REGIONS] == list(regions)
    voxel_ml = 2.0 / 1000
    assert regions["right"].lung_volume_ml == pytest.approx(30 * 400 * voxel_ml)
    assert regions["left"].lung_volume_ml == pytest.approx(24 * 400 * voxel_ml)
    assert regions["both"].lung_volume_ml == pytest.approx(54 * 400 * voxel_ml)
    assert regions["both"].ggo_volume_ml == pytest.approx(500 * voxel_ml)
    assert regions["both"].consolidation_volume_ml == pytest.approx(200 * voxel_ml)
    assert regions["both"].poi == pytest.approx(700 / (54 * 400))
    assert regions["both"].ihu == pytest.approx((500 * -500 + 200 * 20) / 700)
    assert regions["right"].ihu == pytest.approx(-500)
    assert regions["left"].ihu == pytest.approx(20)
    assert regions["right_upper"].ihu is None
    assert regions["right_lower"].poi == pytest.approx(500 / (10 * 400))
    # Left lung spans slices 6..29: its upper third is slices 22..29, so slices 20-21 are its middle.
    assert regions["left_middle"].consolidation_volume_ml == pytest.approx(200 * voxel_ml)
    assert regions["left_upper"].infection_volume_ml == 0


def test_thick_and_thin_grids_of_the_same_lungs_give_the_same_volume():
    thin, thin_lungs = _scan(spacing=(1.0, 0.7, 0.7), nz=60)
    thin_lungs[:10][thin_lungs[:10] == 2] = 0  # left lung over slices 10..59: whole 5 mm slabs
    thick = CTVolume(hu=thin.hu[::5], spacing=(5.0, 0.7, 0.7))
    thick_lungs = thin_lungs[::5]
    thin_ml = measure_regions(thin, thin_lungs, np.zeros_like(thin_lungs))[0].lung_volume_ml
    thick_ml = measure_regions(thick, thick_lungs, np.zeros_like(thick_lungs))[0].lung_volume_ml
    assert thin_ml == pytest.approx(thick_ml, rel=0.01)
    assert thin_ml == pytest.approx((60 * 400 + 50 * 400) * 0.49 / 1000, rel=1e-6)


def test_zones_are_thirds_of_each_lungs_own_extent_upper_at_high_z():
    _, lungs = _scan()
    zones = zone_map(lungs)
    right_upper = ZONES.index("right_upper") + 1
    left_lower = ZONES.index("left_lower") + 1
    assert set(np.unique(zones[20:, 10:30, 5:25])) == {right_upper}
    assert set(np.unique(zones[6:14, 10:30, 35:55])) == {left_lower}
    assert zones[0, 0, 0] == 0
    per_zone = [np.count_nonzero(zones == i) for i in range(1, 7)]
    assert per_zone == [4000, 4000, 4000, 3200, 3200, 3200]  # right: 10 slices each; left: 8 each


@pytest.mark.parametrize(
    ("share", "infected", "score"),
    [
        (0.0, False, 0),
        (0.001, True, 1),
        (0.049, True, 1),
        (0.05, True, 2),
        (0.25, True, 2),
        (0.26, True, 3),
        (0.5, True, 3),
        (0.51, True, 4),
        (0.75, True, 4),
        (0.76, True, 5),
        (1.0, True, 5),
    ],
)
def test_severity_score_follows_the_0_to_5_scale(share, infected, score):
    assert severity_score(share, infected) == score


def test_lung_and_total_severity_scores_are_sums_of_zone_scores():
    volume, lungs = _scan()
    infection = np.zeros_like(lungs)
    infection[20:30, 10:30, 5:25] = 1  # right upper zone fully infected: 5
    infection[0:10, 10:16, 5:25] = 2  # right lower zone 30 %: 3
    infection[22:30, 10:12, 35:55] = 1  # left upper zone 10 %: 2
    regions = {r.region: r for r in measure_regions(volume, lungs, infection)}
    assert regions["right_upper"].severity_score == 5
    assert regions["right_lower"].severity_score == 3
    assert regions["right_middle"].severity_score == 0
    assert regions["left_upper"].severity_score == 2
    assert regions["right"].severity_score == 8
    assert regions["left"].severity_score == 2
    assert regions["both"].severity_score == 10


def test_slice_areas_are_in_square_millimetres_and_carry_the_slice_uid():
    volume, lungs = _scan(spacing=(2.0, 0.5, 0.8))
    volume = CTVolume(hu=volume.hu, spacing=volume.spacing, slice_uids=tuple(f"1.2.3.{k}" for k in range(30)))
    infection = np.zeros_like(lungs)
    infection[3, 10:20, 5:15] = 2
    slices = measure_slices(volume, lungs, infection)
    assert len(slices) == 30
    assert slices[3].sop_instance_uid == "1.2.3.3"
    assert slices[3].lung_area_mm2 == pytest.approx(400 * 0.4)
    assert slices[10].lung_area_mm2 == pytest.approx(800 * 0.4)
    assert slices[3].consolidation_area_mm2 == pytest.approx(100 * 0.4)
    assert slices[3].infection_area_mm2 == pytest.approx(100 * 0.4)
    assert slices[4].infection_area_mm2 == 0
    assert slices[5].z_mm - slices[4].z_mm == pytest.approx(2.0)


def test_label_maps_of_another_shape_are_refused():
    volume, lungs = _scan()
    with pytest.raises(ValueError, match="must match the volume"):
        measure_regions(volume, lungs[:-1], np.zeros_like(lungs[:-1]))
