"""Synthetic chest CT phantoms (analysis.phantoms): exact truth, partial volume, anatomy, courses over time."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage

from analysis.phantoms import (
    LesionKind,
    LesionSpec,
    PhantomSpec,
    Severity,
    Side,
    make_phantom,
    patient_course,
    random_spec,
)

SMALL = {"matrix": 128, "pixel_spacing_mm": 2.8}  # same anatomy as 256 x 1.4 mm, four times fewer pixels

SPEC = PhantomSpec(
    seed=11,
    lesions=(
        LesionSpec(LesionKind.GGO, radius_mm=22, hu=-550, lung=Side.RIGHT, height_frac=0.3, angle_deg=80),
        LesionSpec(LesionKind.CONSOLIDATION, radius_mm=16, hu=-20, lung=Side.LEFT, height_frac=0.35, angle_deg=20),
        LesionSpec(LesionKind.GGO, radius_mm=14, hu=-600, lung=Side.LEFT, height_frac=0.6, depth_frac=0.0),
    ),
)


@pytest.fixture(scope="module")
def fine_phantom():
    return make_phantom(SPEC, slice_thickness_mm=5.0, keep_fine=True, **SMALL)


def test_truth_is_the_label_count_on_the_fine_grid(fine_phantom):
    fine, truth = fine_phantom.fine, fine_phantom.truth
    voxel_ml = np.prod(fine.spacing) / 1000
    assert fine.spacing[0] == pytest.approx(1.0)
    lung = np.count_nonzero(fine.lungs)
    infected = fine.infection > 0
    assert truth.lung_volume_ml == pytest.approx(lung * voxel_ml)
    assert truth.right_lung_ml == pytest.approx(np.count_nonzero(fine.lungs == 1) * voxel_ml)
    assert truth.ggo_volume_ml == pytest.approx(np.count_nonzero(fine.infection == 1) * voxel_ml)
    assert truth.consolidation_volume_ml == pytest.approx(np.count_nonzero(fine.infection == 2) * voxel_ml)
    assert truth.poi == pytest.approx(np.count_nonzero(infected) / lung)
    assert truth.ihu == pytest.approx(float(fine.hu[infected].mean()), abs=0.01)
    assert truth.lesion_volumes_ml == pytest.approx([np.count_nonzero(fine.lesions == i) * voxel_ml for i in (1, 2, 3)])
    assert sum(truth.lesion_volumes_ml) == pytest.approx(truth.infection_volume_ml)
    assert truth.right_infection_ml + truth.left_infection_ml == pytest.approx(truth.infection_volume_ml)
    # Plausible sizes: adult lungs of a few litres; three small lesions, about 1 % of the lungs.
    assert 3000 < truth.lung_volume_ml < 6500
    assert 0.003 < truth.poi < 0.03
    assert truth.right_lung_ml > truth.left_lung_ml  # the heart takes room on the left


def test_thick_slices_average_the_thin_slices_they_cover():
    spec = PhantomSpec(seed=2, lesions=SPEC.lesions, noise_hu=0.0)
    phantom = make_phantom(spec, slice_thickness_mm=5.0, keep_fine=True, **SMALL)
    fine = phantom.fine
    for k in (12, 20, 30):
        expected = np.clip(np.rint(fine.hu[5 * k : 5 * k + 5].mean(axis=0)), -1024, 3071)
        np.testing.assert_array_equal(phantom.volume.hu[k], expected)
        covered = np.count_nonzero(fine.lungs[5 * k : 5 * k + 5] > 0, axis=0)
        np.testing.assert_array_equal(phantom.lungs[k] > 0, covered >= 2.5)
    # Partial volume is real: some lung-edge voxels are neither lung nor soft tissue.
    edge = phantom.volume.hu[(phantom.lungs == 0) & (phantom.volume.hu > -700) & (phantom.volume.hu < -200)]
    assert edge.size > 100


def test_thick_and_thin_scans_of_one_patient_share_the_truth(fine_phantom):
    thin = make_phantom(SPEC, slice_thickness_mm=1.0, **SMALL)
    thick = make_phantom(SPEC, slice_thickness_mm=10.0, **SMALL)
    assert thin.volume.shape[0] == 270
    assert thick.volume.shape[0] == 27
    for phantom in (thin, thick):
        assert phantom.truth.lung_volume_ml == pytest.approx(fine_phantom.truth.lung_volume_ml, rel=0.01)
        assert phantom.truth.poi == pytest.approx(fine_phantom.truth.poi, rel=0.05)
        # The output label maps measure close to the truth (half-coverage rule).
        label_ml = np.count_nonzero(phantom.lungs) * phantom.volume.voxel_volume_ml
        assert label_ml == pytest.approx(phantom.truth.lung_volume_ml, rel=0.03)


def test_changing_matrix_and_spacing_together_keeps_the_anatomy(fine_phantom):
    large = make_phantom(SPEC, slice_thickness_mm=5.0, matrix=256, pixel_spacing_mm=1.4)
    assert large.volume.shape == (54, 256, 256)
    assert large.truth.lung_volume_ml == pytest.approx(fine_phantom.truth.lung_volume_ml, rel=0.01)
    assert large.truth.infection_volume_ml == pytest.approx(fine_phantom.truth.infection_volume_ml, rel=0.03)
    assert large.truth.ihu == pytest.approx(fine_phantom.truth.ihu, abs=10)
    # Same place in millimetres: the lungs' centroids agree to a pixel of the coarse grid.
    small_centre = np.array(ndimage.center_of_mass(fine_phantom.lungs == 1)) * fine_phantom.volume.spacing
    large_centre = np.array(ndimage.center_of_mass(large.lungs == 1)) * large.volume.spacing
    offset = np.array(large.volume.origin[::-1]) - np.array(fine_phantom.volume.origin[::-1])
    assert large_centre + offset == pytest.approx(small_centre, abs=2.8)


def test_lesions_lie_inside_the_lungs(fine_phantom):
    for grid in (fine_phantom.fine, fine_phantom):
        assert not np.any((grid.infection > 0) & (grid.lungs == 0))
        assert np.array_equal(grid.lesions > 0, grid.infection > 0)
    assert all(volume > 1.0 for volume in fine_phantom.truth.lesion_volumes_ml)


def test_subpleural_lesions_touch_the_lung_wall_and_central_ones_do_not(fine_phantom):
    fine = fine_phantom.fine
    outside = ndimage.binary_dilation(fine.lungs == 0)  # lung voxels next to the wall (or the hilum)
    for index, touches in ((1, True), (2, True), (3, False)):
        lesion = fine.lesions == index
        assert bool(np.any(lesion & outside)) is touches, f"lesion {index}"


def test_lesion_hu_ranges_hold_and_lesions_are_textured(fine_phantom):
    hu, infection = fine_phantom.volume.hu, fine_phantom.infection
    ggo, consolidation = hu[infection == 1], hu[infection == 2]
    assert -750 <= ggo.mean() <= -300
    assert -100 <= consolidation.mean() <= 50
    # Not flat: the texture spreads each lesion well beyond the pixel noise (12 HU).
    core = ndimage.binary_erosion(infection == 1, iterations=1)
    assert hu[core].std() > 25
    # iHU is the volume-weighted mean of the lesions' HU (their texture averages out to a few tens of HU).
    volumes = np.array(fine_phantom.truth.lesion_volumes_ml)
    expected = float(volumes @ np.array([lesion.hu for lesion in SPEC.lesions]) / volumes.sum())
    assert fine_phantom.truth.ihu == pytest.approx(expected, abs=40)


def test_the_lungs_look_like_lungs_to_a_threshold(fine_phantom):
    hu, lungs = fine_phantom.volume.hu, fine_phantom.lungs
    parenchyma = hu[(lungs > 0) & (fine_phantom.infection == 0)]
    assert -880 < parenchyma.mean() < -780
    assert hu[0, :3, :3].mean() == pytest.approx(-1000, abs=15)  # air around the body
    # Air-like voxels: the part connected to the image border is outside air, and holds no lung.
    air = hu < -400
    components, _ = ndimage.label(air)
    border = np.unique(np.concatenate([components[:, 0].ravel(), components[:, -1].ravel(),
                                       components[:, :, 0].ravel(), components[:, :, -1].ravel()]))  # fmt: skip
    outside = np.isin(components, border[border > 0])
    assert not np.any(outside & (lungs > 0))
    assert np.count_nonzero(air & ~outside & (lungs > 0)) > 0.9 * np.count_nonzero(lungs)
    # The right lung is on the patient's right: low x indices.
    right_x = np.nonzero(lungs == 1)[2].mean()
    left_x = np.nonzero(lungs == 2)[2].mean()
    assert right_x < 64 < left_x
    # Bone is there: ribs and spine.
    assert np.count_nonzero(hu > 400) > 1000


def test_the_same_spec_gives_the_same_scan():
    a = make_phantom(SPEC, slice_thickness_mm=10.0, **SMALL)
    b = make_phantom(SPEC, slice_thickness_mm=10.0, **SMALL)
    np.testing.assert_array_equal(a.volume.hu, b.volume.hu)
    assert a.truth == b.truth


def test_a_normal_patient_has_no_infection():
    phantom = make_phantom(random_spec(5, Severity.NORMAL), slice_thickness_mm=10.0, **SMALL)
    assert phantom.spec.lesions == ()
    assert phantom.truth.infection_volume_ml == 0
    assert phantom.truth.poi == 0
    assert phantom.truth.ihu is None
    assert not phantom.infection.any()


def test_severity_orders_the_extent_of_disease():
    poi = {
        severity: make_phantom(random_spec(8, severity), slice_thickness_mm=10.0, **SMALL).truth.poi
        for severity in (Severity.MILD, Severity.MODERATE, Severity.SEVERE)
    }
    assert 0 < poi[Severity.MILD] < poi[Severity.MODERATE] < poi[Severity.SEVERE]


def test_a_patient_course_grows_then_resolves():
    specs = patient_course(seed=4, n_scans=5)
    assert len(specs) == 5
    volumes = [make_phantom(s, slice_thickness_mm=10.0, **SMALL).truth.infection_volume_ml for s in specs]
    peak = int(np.argmax(volumes))
    assert 0 < peak < 4
    assert all(a < b for a, b in itertools.pairwise(volumes[: peak + 1]))
    assert all(a > b for a, b in itertools.pairwise(volumes[peak:]))
    assert volumes[-1] < 0.5 * volumes[peak]
    assert {s.seed for s in specs} == {specs[0].seed}  # one patient: same anatomy throughout


def test_bad_specs_say_what_is_wrong():
    with pytest.raises(ValueError, match=r"ggo lesions must have a mean HU in -750\.\.-300, got -100"):
        LesionSpec(LesionKind.GGO, radius_mm=10, hu=-100)
    with pytest.raises(ValueError, match="consolidation lesions must have a mean HU"):
        LesionSpec(LesionKind.CONSOLIDATION, radius_mm=10, hu=-500)
    with pytest.raises(ValueError, match=r"field of view \(128 x 2 mm = 256 mm\) must exceed the body width"):
        make_phantom(SPEC, matrix=128, pixel_spacing_mm=2.0)
