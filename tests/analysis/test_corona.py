"""Heat-map read-outs: Grad-CAM maps of the shipped slice classifier, positive ratio, corona score."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.nets.segmenters import load_segmenters
from analysis.phantoms import Severity, make_phantom, random_spec
from analysis.pipeline.corona import corona_score, positive_ratio, relative_score


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
