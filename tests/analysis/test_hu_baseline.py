"""The HU-band baseline's hilar rule (analysis/pipeline/infection.py): dense voxels near the mediastinum
are hilar vessels and bronchi, measured in the plane, also where the lower lobes reach behind the hilum."""

from __future__ import annotations

import numpy as np

from analysis.pipeline.infection import CONSOLIDATION, GGO, HUBandBaseline, _filled_hull
from analysis.pipeline.lungs import LEFT, RIGHT
from analysis.pipeline.volume import CTVolume


def _thorax() -> tuple[CTVolume, np.ndarray]:
    """Two aerated lungs (1 mm pixels, 2 mm slices) with a mediastinum between them in front and the lower
    lobes reaching behind the hilum towards the spine (rows 90-140)."""
    hu = np.full((6, 160, 260), 40, dtype=np.int16)
    lungs = np.zeros(hu.shape, dtype=np.uint8)
    lungs[:, 20:141, 20:111] = RIGHT
    lungs[:, 90:141, 111:126] = RIGHT
    lungs[:, 20:141, 150:241] = LEFT
    lungs[:, 90:141, 135:150] = LEFT
    hu[lungs > 0] = -850
    return CTVolume(hu=hu, spacing=(2.0, 1.0, 1.0)), lungs


def _disc(shape: tuple[int, int], y: int, x: int, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - y) ** 2 + (xx - x) ** 2 <= radius**2


def test_a_vessel_behind_the_hilum_is_not_consolidation_and_a_lateral_consolidation_is():
    volume, lungs = _thorax()
    # A 12 mm dense cross-section 21 mm from the mediastinum (row 89, x 110) but 35 mm along its row from
    # the lung's medial-most pixel (x 125): the row rule used before missed it.
    vessel = _disc(lungs.shape[1:], 95, 90, 6)
    lateral = _disc(lungs.shape[1:], 80, 40, 6)
    ground_glass = _disc(lungs.shape[1:], 70, 195, 8)  # faint, near the left hilum: the rule is for dense voxels
    for z in range(1, 5):
        volume.hu[z][vessel] = 40
        volume.hu[z][lateral] = 0
        volume.hu[z][ground_glass] = -500
    labels = HUBandBaseline()(volume, lungs)
    assert not labels[:, vessel].any()
    assert (labels[1:5][:, lateral] == CONSOLIDATION).mean() > 0.8
    assert (labels[1:5][:, ground_glass] == GGO).mean() > 0.8


def test_filled_hull_is_the_convex_hull_of_the_mask():
    mask = np.zeros((9, 9), dtype=bool)
    mask[1, 1] = mask[1, 7] = mask[7, 4] = True
    hull = _filled_hull(mask)
    assert hull[1].nonzero()[0].tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert hull[4].nonzero()[0].tolist() == [3, 4, 5]
    assert hull[7].nonzero()[0].tolist() == [4]
    assert not hull[0].any()
    assert not hull[8].any()
    single = np.zeros((5, 5), dtype=bool)
    single[2, 2] = True
    assert (_filled_hull(single) == single).all()
