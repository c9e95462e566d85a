"""Heat-map read-outs: Grad-CAM maps of the shipped slice classifier, positive ratio, corona score."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.nets.segmenters import load_segmenters
from analysis.phantoms import Severity, make_phantom, random_spec
from analysis.pipeline.corona import corona_score, positive_ratio, relative_score
from analysis.pipeline.heatmaps import average_slabs, heat_weight, read_heat_maps, slab_index
from analysis.pipeline.volume import CTVolume


def test_corona_score_is_heat_times_voxel_volume_whatever_the_slice_thickness():
    # The same 40 x 40 x 40 mm block of full heat, sampled at 2.5 mm and at 10 mm slices: 64 mL both times.
    thin = np.zeros((32, 40, 40), dtype=np.float32)
    thin[4:20, 10:30, 10:30] = 1.0
    thick = np.zeros((8, 40, 40), dtype=np.float32)
    thick[1:5, 10:30, 10:30] = 1.0
    assert corona_score(thin, (2.5, 2.0, 2.0)) == pytest.approx(64.0)
    assert corona_score(thick, (10.0, 2.0, 2.0)) == pytest.approx(64.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        corona_score(thin * 2, (2.5, 2.0, 2.0))


def test_positive_ratio_counts_only_slices_with_lung_and_relative_score_needs_a_first_score():
    probabilities = np.array([0.9, 0.9, 0.2, 0.7, 0.1])
    has_lung = np.array([False, True, True, True, True])
    assert positive_ratio(probabilities, has_lung) == pytest.approx(2 / 4)
    assert positive_ratio(probabilities, np.zeros(5, dtype=bool)) == 0.0
    assert relative_score(30.0, 20.0) == pytest.approx(1.5)
    assert relative_score(30.0, None) is None
    assert relative_score(30.0, 0.0) is None


def test_grad_cam_heat_maps_of_the_shipped_classifier_lie_in_the_lungs_of_the_slices_asked_for():
    classifier = load_segmenters()["classifier"]
    phantom = make_phantom(
        random_spec(9101, Severity.SEVERE), slice_thickness_mm=10.0, pixel_spacing_mm=1.4, matrix=256
    )
    lungs = phantom.lungs
    with_lung = np.flatnonzero(lungs.reshape(len(lungs), -1).any(axis=1))
    asked = with_lung[::3]
    heat = classifier.heat_maps(phantom.volume, lungs, asked)

    assert heat.shape == phantom.volume.shape
    assert heat.dtype == np.float32
    assert heat.min() >= 0.0
    assert heat.max() <= 1.0
    assert not heat[lungs == 0].any()
    hot = np.flatnonzero(heat.reshape(len(heat), -1).any(axis=1))
    assert set(hot) <= set(asked)
    assert len(hot) > 0
    assert corona_score(heat, phantom.volume.spacing) > 0


def test_repeated_heat_maps_give_the_same_maps_without_piling_up_hooks_on_the_network():
    # A worker computes heat maps for scan after scan with one loaded classifier.
    classifier = load_segmenters()["classifier"]
    phantom = make_phantom(
        random_spec(9100, Severity.MODERATE), slice_thickness_mm=10.0, pixel_spacing_mm=2.0, matrix=192
    )
    first = classifier.heat_maps(phantom.volume, phantom.lungs)
    second = classifier.heat_maps(phantom.volume, phantom.lungs)
    np.testing.assert_array_equal(first, second)
    assert len(classifier.net.layer4._forward_hooks) == 1


def test_thin_slices_are_grouped_into_slabs_of_the_reference_thickness_and_a_short_last_slab_is_kept():
    assert slab_index(10, 2.5).tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert slab_index(5, 10.0).tolist() == [0, 1, 2, 3, 4]
    assert slab_index(4, 12.0).tolist() == [0, 1, 2, 3]
    assert slab_index(6, 3.0).tolist() == [0, 0, 0, 1, 1, 1]  # 9 mm: the nearest whole number of slices
    with pytest.raises(ValueError, match="positive"):
        slab_index(4, 0.0)


def test_a_slab_is_the_mean_of_its_slices_and_its_lungs_are_their_union():
    hu = np.zeros((5, 4, 4), dtype=np.int16)
    hu[:, 0, 0] = [-1000, -800, -600, -400, 100]
    lungs = np.zeros((5, 4, 4), dtype=np.uint8)
    lungs[1, 1, 1] = 1
    lungs[2, 2, 2] = 2
    volume = CTVolume(hu=hu, spacing=(2.5, 1.0, 1.0))
    slabs, slab_lungs = average_slabs(volume, lungs, slab_index(5, 2.5))
    assert slabs.shape == (2, 4, 4)
    assert slabs.spacing == (10.0, 1.0, 1.0)
    assert slabs.hu[:, 0, 0].tolist() == [-700, 100]
    assert slab_lungs[0, 1, 1]
    assert slab_lungs[0, 2, 2]
    assert not slab_lungs[1].any()


def test_heat_counts_in_proportion_to_p_abnormal_across_the_ramp_with_no_jump_at_the_threshold():
    weights = heat_weight(np.array([0.0, 0.4, 0.49, 0.51, 0.6, 0.8, 1.0]))
    np.testing.assert_allclose(weights, [0.0, 0.0, 0.225, 0.275, 0.5, 1.0, 1.0], atol=1e-6)


def test_heat_of_a_thin_scan_is_computed_per_slab_and_spread_over_the_slab_s_slices():
    classifier = load_segmenters()["classifier"]
    phantom = make_phantom(random_spec(9101, Severity.SEVERE), slice_thickness_mm=5.0, pixel_spacing_mm=2.0, matrix=192)
    lungs = phantom.lungs
    probabilities, corona, heat = read_heat_maps(phantom.volume, lungs, classifier)

    np.testing.assert_allclose(probabilities, classifier(phantom.volume, lungs), atol=1e-6)
    assert corona.heat_slab_mm == 10.0
    assert corona.corona_score_ml == pytest.approx(corona_score(heat, phantom.volume.spacing))
    assert corona.corona_score_ml > 0
    assert not heat[lungs == 0].any()
    # The two 5 mm slices of a slab share its map wherever both hold lung.
    n = len(lungs) // 2 * 2
    both = (lungs[0:n:2] > 0) & (lungs[1:n:2] > 0)
    np.testing.assert_array_equal(heat[0:n:2][both], heat[1:n:2][both])
    has_lung = lungs.reshape(len(lungs), -1).any(axis=1)
    assert corona.positive_slices == np.count_nonzero((probabilities > corona.slice_threshold) & has_lung)
